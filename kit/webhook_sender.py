"""The sender of outgoing webhooks (CONTRACT §4.11): deliveries written with the changes they tell
(domain.webhook_events.emit) are POSTed, signed `X-Distbot-Signature: sha256=<HMAC-SHA256 of the body>`
and with the Standard Webhooks headers (CONTRACT §7: `webhook-id`, `webhook-timestamp`,
`webhook-signature`, so a receiver can verify with the `standardwebhooks` library), until the
endpoint answers 2xx, with back-off (the durable queue: storage.durable_queue; this module is
its deliver step). At least once: a crash between the answer and the mark sends again, and
receivers dedupe by the event's `id`.

It is its own worker with its own connection pool and a few requests in flight, so an endpoint
that is down or slow backs up only its own deliveries: chat and order ingestion never wait for
it. A distributor's events reach an endpoint in order: a delivery is claimed only when nothing
earlier of that distributor for that endpoint is still unsent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from datetime import datetime
from typing import Any

import aiohttp
from sqlalchemy import and_, exists
from sqlalchemy.orm import Session, aliased

from kit.metrics import Metrics
from domain.clock import Clock
from domain.config import Config
from domain.config_sections import WebhookConfig
from storage.durable_queue import Backoff, DurableQueue, Outcome, count
from storage.models import OutboxStatus
from storage.models_webhooks import WebhookDelivery
from storage.queue_worker import QueueWorker
from storage.reader import Reader
from storage.tables import WEBHOOK_DELIVERIES
from storage.writer import Writer

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0
LEASE_SECONDS = 120  # a claim older than this was left by a dead worker: it goes back to the queue
TIMEOUT_SECONDS = 5.0
IN_FLIGHT = 8
BATCH = 50
SIGNATURE_HEADER = "X-Distbot-Signature"
# 5 s before the first retry, doubled each time up to an hour; an endpoint is never given up on.
RETRIES = Backoff(5.0, cap=3600.0)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_headers(key: bytes, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks: the id (the event's, the same on every retry), the seconds of this send,
    and v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    mac = hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def backlog(session: Session) -> int:
    """Deliveries not yet sent (the /metrics gauge)."""
    return count(session, WEBHOOK_DELIVERIES, OutboxStatus.PENDING, OutboxStatus.SENDING)


class WebhookSender(QueueWorker[WebhookDelivery]):
    def __init__(self, config: Config, reader: Reader, writer: Writer, metrics: Metrics,
                 clock: Clock | None = None):
        self._clock = clock or Clock()
        super().__init__(DurableQueue(WebhookDelivery, lease_seconds=LEASE_SECONDS, backoff=RETRIES), writer,
                         reader, now=self._clock.now, name="webhook sender", batch=BATCH, in_flight=IN_FLIGHT,
                         idle_seconds=IDLE_POLL_SECONDS)
        self._endpoints: dict[str, WebhookConfig] = {w.url: w for w in config.webhooks}
        self._metrics = metrics
        self._http: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as self._http:
            await super().run()

    def claim(self, session: Session, now: datetime, limit: int) -> list[WebhookDelivery]:
        """A distributor's next delivery waits for their earlier one: one of theirs is claimed at a time."""
        w, earlier = WebhookDelivery, aliased(WebhookDelivery)
        waiting = exists().where(and_(earlier.url == w.url, earlier.distributor_id == w.distributor_id,
                                      earlier.status != OutboxStatus.SENT, earlier.id < w.id))
        return self.queue.claim(session, now, limit, ~waiting)

    async def deliver(self, row: WebhookDelivery) -> Outcome:
        endpoint = self._endpoints.get(row.url)
        if endpoint is None:
            error = "the endpoint is no longer in [[webhooks]]"
        else:
            error = await self._post(row, endpoint)
        self._metrics.child(self._metrics.webhook_deliveries, "ok" if error is None else "error").inc()
        if error is None:
            return Outcome.sent()
        log.warning("webhook delivery failed", extra={"url": row.url, "event_id": row.event_id, "error": error})
        return self.queue.failed(row, error)

    async def _post(self, row: WebhookDelivery, endpoint: WebhookConfig) -> str | None:
        """POST the event, signed; None when the endpoint took it (2xx), else what went wrong."""
        assert self._http is not None
        body = encode(row.body)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(endpoint.secret, body),
                   "X-Distbot-Event": row.type, "X-Distbot-Delivery": row.body["id"],
                   **standard_headers(endpoint.hmac_key, row.body["id"], int(self._clock.epoch()), body)}
        try:
            async with self._http.post(row.url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return f"{type(e).__name__}: {e}"
