"""The sender of outgoing webhooks (CONTRACT §4.11): deliveries written with the changes they tell
(domain.webhooks.emit) are POSTed, signed `X-Distbot-Signature: sha256=<HMAC-SHA256 of the body>`
and with the Standard Webhooks headers (CONTRACT §7: `webhook-id`, `webhook-timestamp`,
`webhook-signature`, so a receiver can verify with the `standardwebhooks` library), until the
endpoint answers 2xx, with back-off. At least once: a crash between the answer and the
mark sends again, and receivers dedupe by the event's `id`.

It is its own worker with its own connection pool and a few requests in flight, so an endpoint
that is down or slow backs up only its own deliveries: chat and order ingestion never wait for
it. A distributor's events reach an endpoint in order: a delivery is claimed only when nothing
earlier of that distributor for that endpoint is still unsent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from bot.metrics import Metrics
from bot.polling import drain_forever
from domain.clock import Clock
from domain.config import Config
from domain.config_sections import WebhookConfig
from storage.db import is_postgres
from storage.models import OutboxStatus
from storage.models_webhooks import WebhookDelivery
from storage.writer import Writer

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0
LEASE_SECONDS = 120  # a claim older than this was left by a dead worker: it goes back to the queue
TIMEOUT_SECONDS = 5.0
IN_FLIGHT = 8
BATCH = 50
SIGNATURE_HEADER = "X-Distbot-Signature"


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
    return session.scalar(select(func.count()).select_from(WebhookDelivery)
                          .where(WebhookDelivery.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)))) or 0


class WebhookSender:
    retry_base = 5.0  # seconds before the first retry, doubled each time ...
    retry_cap = 3600.0  # ... up to an hour

    def __init__(self, config: Config, writer: Writer, metrics: Metrics, clock: Clock | None = None):
        self._endpoints: dict[str, WebhookConfig] = {w.url: w for w in config.webhooks}
        self._writer = writer
        self._metrics = metrics
        self._clock = clock or Clock()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await drain_forever(lambda: self.drain_once(http), self._wake, IDLE_POLL_SECONDS, "webhook sender")

    async def drain_once(self, http: aiohttp.ClientSession) -> int:
        rows = await self._writer.run(self._claim)
        if not rows:
            return 0
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def deliver(row: WebhookDelivery) -> dict[str, Any]:
            async with slots:
                return await self._deliver(http, row)
        marks = await asyncio.gather(*(deliver(r) for r in rows))
        await self._writer.run(lambda s: self._mark(s, marks))
        return len(rows)

    def _claim(self, session: Session) -> list[WebhookDelivery]:
        now = self._clock.now()
        w, earlier = WebhookDelivery, aliased(WebhookDelivery)
        session.execute(update(w).where(w.status == OutboxStatus.SENDING,
                                        w.claimed_at < now - timedelta(seconds=LEASE_SECONDS))
                        .values(status=OutboxStatus.PENDING, claimed_at=None))
        waiting = exists().where(and_(earlier.url == w.url, earlier.distributor_id == w.distributor_id,
                                      earlier.status != OutboxStatus.SENT, earlier.id < w.id))
        due = (select(w.id).where(w.status == OutboxStatus.PENDING, w.next_attempt_at <= now, ~waiting)
               .order_by(w.next_attempt_at, w.id).limit(BATCH))
        if is_postgres(session):
            due = due.with_for_update(skip_locked=True)
        # A distributor's next delivery waits for their earlier one: one of theirs is claimed at a time.
        return list(session.scalars(update(w).where(w.id.in_(due.scalar_subquery()))
                                    .values(status=OutboxStatus.SENDING, claimed_at=now).returning(w),
                                    execution_options={"synchronize_session": False}).all())

    async def _deliver(self, http: aiohttp.ClientSession, row: WebhookDelivery) -> dict[str, Any]:
        endpoint = self._endpoints.get(row.url)
        if endpoint is None:
            error = "the endpoint is no longer in [[webhooks]]"
        else:
            body = encode(row.body)
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(endpoint.secret, body),
                       "X-Distbot-Event": row.type, "X-Distbot-Delivery": row.body["id"],
                       **standard_headers(endpoint.hmac_key, row.body["id"], int(self._clock.epoch()), body)}
            try:
                async with http.post(row.url, data=body, headers=headers, allow_redirects=False) as resp:
                    await resp.read()
                    error = None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                error = f"{type(e).__name__}: {e}"[:500]
        self._metrics.child(self._metrics.webhook_deliveries, "ok" if error is None else "error").inc()
        if error is not None:
            log.warning("webhook delivery failed", extra={"url": row.url, "event_id": row.event_id, "error": error})
        return {"id": row.id, "attempts": row.attempts + 1, "error": error}

    def _mark(self, session: Session, marks: list[dict[str, Any]]) -> None:
        now, w = self._clock.now(), WebhookDelivery
        for m in marks:
            if m["error"] is None:
                values: dict[str, Any] = {"status": OutboxStatus.SENT, "sent_at": now, "attempts": m["attempts"],
                                          "last_error": None}
            else:
                delay = min(self.retry_base * 2 ** (m["attempts"] - 1), self.retry_cap)
                values = {"status": OutboxStatus.PENDING, "attempts": m["attempts"], "last_error": m["error"],
                          "next_attempt_at": now + timedelta(seconds=delay)}
            session.execute(update(w).where(w.id == m["id"], w.status == OutboxStatus.SENDING)
                            .values(claimed_at=None, **values))
