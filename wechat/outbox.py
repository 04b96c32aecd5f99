"""The outbox: every message that is not a passive reply, sent by a worker with retries.

Rows are written in the same transaction as the change that caused them, under a unique key.
The durable queue (storage.durable_queue) claims, leases, retries and marks them; this module
is the outbox's deliver step. The claim also chooses each row's channel within WeChat's
customer-service quota (domain.quota): a customer-service message, a template message, or kept
for the user's next message.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.clock import Clock
from domain.config import Config
from kit.metrics import Metrics
from domain.messages import from_json
from domain.outbox_rows import due_of, template_data
from domain.quota import Choice, Route, correct_grant, fallback, route_claim
from wechat.client import MASS_TOO_SOON, NOT_FOLLOWING, OUTSIDE_WINDOW, QUOTA_SPENT, WeChatAPI, WeChatError
from storage.durable_queue import Backoff, DurableQueue, Outcome
from storage.models import OutboxBody, OutboxMessage
from storage.queue_worker import QueueWorker
from storage.reader import Reader
from storage.writer import Writer

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.5
MASS_RETRY_SECONDS = 61  # WeChat wants a minute between two tries of one mass send
MAX_IN_FLIGHT = 32  # sends awaiting WeChat's answer at once
BUSY_FOLLOWER_SECONDS = 0.2  # a row whose follower another unit holds is claimed again after this
MASS = Choice(Route.CUSTOM)  # what a mass row's choice is (WeChat's mass rules apply, not the quota)
KEPT = "kept for the user's next message: no customer-service quota"


class _Claimed(NamedTuple):
    row: OutboxMessage
    choice: Choice
    payload: dict[str, Any]  # the row's message: its own payload over its shared body's


class Outbox(QueueWorker[_Claimed]):
    def __init__(self, config: Config, reader: Reader, writer: Writer, wechat: WeChatAPI, metrics: Metrics,
                 clock: Clock | None = None):
        queue = DurableQueue(OutboxMessage, lease_seconds=config.outbox.lease_seconds,
                             backoff=Backoff(1, cap=600, tries=config.outbox.max_attempts),
                             columns={"channel": None, "errcode": None, "msg_id": None})
        super().__init__(queue, writer, reader, now=(clock or Clock()).now, name="outbox worker",
                         batch=config.outbox.batch_size, in_flight=MAX_IN_FLIGHT, idle_seconds=IDLE_POLL_SECONDS, rate=config.outbox.rate_per_second)
        self.config = config
        self._wechat = wechat
        self._metrics = metrics

    def claim(self, session: Session, now: datetime, limit: int) -> list[_Claimed]:
        """Claim due rows, each with its channel chosen within its user's quota (spent in the same
        unit): answers to a user's own request first, then in the order queued. A row whose
        follower another unit holds (PostgreSQL) is given back for a moment."""
        rows = self.queue.claim(session, now, limit)
        templates = bool(self.config.wechat.template_id)
        choices, busy = route_claim(session, [due_of(r) for r in rows if "mass" not in r.payload], now, templates)
        if busy:
            self.queue.release(session, [r.id for r in rows if r.openid in busy and r.id not in choices],
                               at=now + timedelta(seconds=BUSY_FOLLOWER_SECONDS))
        shared = {r.body_id for r in rows if r.body_id is not None}
        bodies = dict(session.execute(select(OutboxBody.id, OutboxBody.payload)
                                      .where(OutboxBody.id.in_(shared))).all()) if shared else {}
        return [_Claimed(r, choices.get(r.id, MASS), {**bodies.get(r.body_id, {}), **r.payload})
                for r in rows if r.id in choices or "mass" in r.payload]

    def row_of(self, item: _Claimed) -> OutboxMessage:
        return item.row

    async def deliver(self, c: _Claimed) -> Outcome:
        row, payload, choice = c.row, c.payload, c.choice
        reply = from_json(payload)
        try:
            if "mass" in payload:
                msg_id = await self._wechat.send_mass(payload["mass"], reply, payload["clientmsgid"])
                return self._sent(row, "mass", msg_id=msg_id)
            if choice.route == Route.CUSTOM:
                choice = await self._custom(row, reply, choice.recorded)
                if choice.route == Route.CUSTOM:
                    return self._sent(row, "custom")
            if choice.route == Route.TEMPLATE:
                # Outside the quota the template message is the only way to reach them.
                data = payload.get("template") or template_data(reply)
                await self._wechat.send_template(row.openid, self.config.wechat.template_id, data,
                                                 url=payload.get("url", ""))
                return self._sent(row, "template")
        except WeChatError as e:
            return self._failed(row, e)
        self._metrics.child(self._metrics.outbox_outcomes, choice.route.value).inc()
        if choice.route == Route.KEEP:
            # Not an attempt: the row waits for the user's next message (domain.quota.open_grants).
            return Outcome.kept(KEPT, errcode=choice.errcode)
        return self._failed(row, WeChatError(choice.errcode or OUTSIDE_WINDOW, "no customer-service quota"),
                            final=True)

    async def _custom(self, row: OutboxMessage, reply: Any, recorded: bool) -> Choice:
        """Send a customer-service message; when WeChat refuses it for the quota (our record was
        wrong: another process, a grant we never saw), correct the record, if we keep one for
        this user (an openid that never wrote has none: a unit for nothing), and fall back."""
        asked = self.now()
        try:
            await self._wechat.send_reply(row.openid, reply)
            return Choice(Route.CUSTOM)
        except WeChatError as e:
            if e.errcode not in (OUTSIDE_WINDOW, QUOTA_SPENT):
                raise
            code = e.errcode
            self._metrics.child(self._metrics.outbox_outcomes, str(code)).inc()
            if recorded:
                await self.writer.run(lambda session: correct_grant(session, row.openid, code, asked))
            return fallback(due_of(row), code, bool(self.config.wechat.template_id))

    def _sent(self, row: OutboxMessage, channel: str, msg_id: int | None = None) -> Outcome:
        m = self._metrics
        m.child(m.outbox_sent, channel).inc()
        m.child(m.outbox_outcomes, channel).inc()
        if row.body_id is not None:
            m.child(m.campaign_sends, channel, "sent").inc()
        return Outcome.sent(channel=channel, msg_id=msg_id)

    def _failed(self, row: OutboxMessage, error: WeChatError, *, final: bool = False) -> Outcome:
        final = final or not error.retryable or error.errcode in (OUTSIDE_WINDOW, NOT_FOLLOWING)
        outcome = self.queue.failed(row, str(error), final=final, errcode=error.errcode,
                                    delay=MASS_RETRY_SECONDS if error.errcode == MASS_TOO_SOON else None)
        m = self._metrics
        m.child(m.outbox_failed, str(error.errcode)).inc()
        if row.body_id is not None:
            m.child(m.campaign_sends, "mass" if row.payload.get("mass") else "custom",
                    "failed" if outcome.final else "retry").inc()
        log.warning("outbox send failed", extra={"outbox_id": row.id, "errcode": error.errcode,
                                                 "final": outcome.final})
        return outcome
