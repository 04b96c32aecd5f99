"""The outbox: every message that is not a passive reply, sent by a worker with retries.

Rows are written in the same transaction as the change that caused them, under a unique key.
A worker claims due rows (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's BEGIN IMMEDIATE makes
the claim atomic there), sends each, and marks it at once, so a crash can repeat one send at most.
The claim also chooses each row's channel within WeChat's customer-service quota (domain.quota):
a customer-service message, a template message, or kept for the user's next message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cachetools import LRUCache
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from domain.config import Config
from bot.metrics import Metrics
from bot.polling import drain_forever
from domain.messages import from_json
from domain.outbox import due_of, template_data
from domain.quota import Choice, Route, correct_grant, fallback, route_claim
from bot.wechat_api import MASS_TOO_SOON, NOT_FOLLOWING, OUTSIDE_WINDOW, QUOTA_SPENT, WeChatAPI, WeChatError
from storage.db import is_postgres
from storage.models import OutboxBody, OutboxMessage, OutboxStatus
from storage.group_commit import GroupCommit
from storage.tables import OUTBOX
from storage.reader import Reader
from storage.writer import Writer

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 600
MASS_RETRY_SECONDS = 61  # WeChat wants a minute between two tries of one mass send
THROTTLE_SLACK = 0.05  # seconds the send schedule may fall behind and catch up
MAX_IN_FLIGHT = 32  # sends awaiting WeChat's answer at once
BODY_CACHE = 256
BUSY_FOLLOWER_SECONDS = 0.2  # a row whose follower another unit holds is claimed again after this
MASS = Choice(Route.CUSTOM)  # what a mass row's choice is (WeChat's mass rules apply, not the quota)


class Outbox:
    def __init__(self, config: Config, reader: Reader, writer: Writer, wechat: WeChatAPI, metrics: Metrics):
        self.config = config
        self._reader = reader  # the look for due rows (no write lock on SQLite)
        self._writer = writer  # claims and marks
        self._wechat = wechat
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._interval = 1.0 / config.outbox.rate_per_second
        self._next_send = 0.0
        self._bodies: LRUCache[int, dict[str, Any]] = LRUCache(BODY_CACHE)  # shared bodies never change
        self._in_flight: set[asyncio.Future[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._marks: GroupCommit[dict[str, Any], None] = GroupCommit(writer, _write_marks)

    def wake(self) -> None:
        self._wake.set()

    async def _any_due(self) -> bool:
        """A look (no write lock on SQLite) before claiming."""
        now = datetime.now(UTC)
        return await self._reader.run(lambda session: session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.status == OutboxStatus.PENDING,
                                           OutboxMessage.next_attempt_at <= now).limit(1)) is not None)

    # ---- the worker -----------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._work()
        finally:
            await self._settle()  # stopping: sends in flight finish and keep their marks

    async def _work(self) -> None:
        await self.recover()
        last_recover = time.monotonic()

        async def step() -> int:
            nonlocal last_recover
            # The next claim is made while the last sends are still in flight: no gap between batches.
            sent = await self.drain_once(wait=False)
            if time.monotonic() - last_recover > self.config.outbox.lease_seconds / 2:
                await self.recover()
                last_recover = time.monotonic()
            return sent
        await drain_forever(step, self._wake, IDLE_POLL_SECONDS, "outbox worker")

    async def recover(self) -> int:
        """Give claims older than the lease back (their worker died between claim and mark)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.config.outbox.lease_seconds)

        def recover(session: Session) -> tuple[int, int]:
            given_back = session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.claimed_at < cutoff)
                .values(status=OutboxStatus.PENDING, claimed_at=None)).rowcount
            return given_back, session.scalar(select(func.count()).select_from(OutboxMessage)
                                              .where(OutboxMessage.status == OutboxStatus.PENDING)) or 0
        given_back, depth = await self._writer.run(recover)
        self._metrics.outbox_depth.set(depth)
        return given_back

    async def claim(self, limit: int) -> list[tuple[OutboxMessage, Choice]]:
        """Claim due rows, each with its channel chosen within its user's quota (spent in the same
        unit): answers to a user's own request first, then in the order queued."""
        now = datetime.now(UTC)
        templates = bool(self.config.wechat.template_id)

        def claim(session: Session) -> list[tuple[OutboxMessage, Choice]]:
            # In the due index's order (status, next_attempt_at): with 100,000 campaign rows pending,
            # ordering by id alone sorted them all on every claim.
            due = (select(OutboxMessage.id)
                   .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now)
                   .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
            if is_postgres(session):
                due = due.with_for_update(skip_locked=True)
            rows = list(session.scalars(
                update(OutboxMessage).where(OutboxMessage.id.in_(due.scalar_subquery()))
                .values(status=OutboxStatus.SENDING, claimed_at=now)
                .returning(OutboxMessage), execution_options={"synchronize_session": False}).all())
            choices, busy = route_claim(session, [due_of(r) for r in rows if "mass" not in r.payload], now, templates)
            if busy:
                session.execute(update(OutboxMessage).where(
                    OutboxMessage.id.in_([r.id for r in rows if r.openid in busy and r.id not in choices]))
                    .values(status=OutboxStatus.PENDING, claimed_at=None,
                            next_attempt_at=now + timedelta(seconds=BUSY_FOLLOWER_SECONDS)))
            return [(r, choices.get(r.id, MASS)) for r in rows if r.id in choices or "mass" in r.payload]
        return sorted(await self._writer.run(claim), key=lambda rc: rc[0].id)

    async def drain_once(self, *, wait: bool = True) -> int:
        """Claim due rows and send them: sends start at the configured rate, several in flight at
        once (a call takes milliseconds, the rate allows hundreds a second). With wait=False it
        returns once the last send has started."""
        if not await self._any_due():
            return 0
        claimed = await self.claim(self.config.outbox.batch_size)
        rows = [row for row, _ in claimed]
        payloads = await self._payloads(rows)
        started = 0
        try:
            for row, choice in claimed:
                await self._slots.acquire()
                await self._throttle()
                delivery = asyncio.ensure_future(self._deliver(row, payloads[row.id], choice))
                started += 1
                self._in_flight.add(delivery)
                delivery.add_done_callback(self._delivered)
        except asyncio.CancelledError:
            # Stopping (a restart is not a crash): sends in flight keep their marks, or they would go
            # out again once the lease ran out; claims not yet tried go back to the queue now.
            await self._settle()
            await self._release(rows[started:])
            raise
        if wait:
            await self._settle()
        return len(rows)

    def _delivered(self, f: asyncio.Future[None]) -> None:
        self._in_flight.discard(f)
        self._slots.release()
        if not f.cancelled() and f.exception() is not None:
            log.error("outbox delivery failed", exc_info=f.exception())

    async def _settle(self) -> None:
        """Wait for the sends in flight (they are tasks of their own: a cancelled caller leaves them be)."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _payloads(self, rows: list[OutboxMessage]) -> dict[int, dict[str, Any]]:
        """Each row's message: its own payload over its shared body's (a campaign's text)."""
        missing = {r.body_id for r in rows if r.body_id is not None and r.body_id not in self._bodies}
        if missing:
            for body_id, payload in await self._reader.run(lambda session: session.execute(
                    select(OutboxBody.id, OutboxBody.payload).where(OutboxBody.id.in_(missing))).all()):
                self._bodies[body_id] = payload
        return {r.id: {**self._bodies.get(r.body_id, {}), **r.payload} if r.body_id is not None else r.payload
                for r in rows}

    async def _release(self, rows: list[OutboxMessage]) -> None:
        if rows:
            ids = [r.id for r in rows]
            await self._writer.run(lambda session: session.execute(update(OutboxMessage).where(
                OutboxMessage.id.in_(ids), OutboxMessage.status == OutboxStatus.SENDING)
                .values(status=OutboxStatus.PENDING, claimed_at=None)))

    async def _throttle(self) -> None:
        """Space sends at the configured rate. A sleep wakes a little late, so the schedule may run
        behind by up to THROTTLE_SLACK and catch up: the rate over a second is the configured one."""
        now = time.monotonic()
        self._next_send = max(self._next_send, now - THROTTLE_SLACK)
        if self._next_send > now:
            await asyncio.sleep(self._next_send - now)
        self._next_send += self._interval

    async def _deliver(self, row: OutboxMessage, payload: dict[str, Any], choice: Choice) -> None:
        reply = from_json(payload)
        channel, error, msg_id = None, None, None
        try:
            if "mass" in payload:
                msg_id = await self._wechat.send_mass(payload["mass"], reply, payload["clientmsgid"])
                channel = "mass"
            elif choice.route == Route.CUSTOM:
                choice = await self._custom(row, reply, choice.recorded)
                channel = "custom" if choice.route == Route.CUSTOM else None
            if choice.route == Route.TEMPLATE:
                # Outside the quota the template message is the only way to reach them.
                data = payload.get("template") or template_data(reply)
                await self._wechat.send_template(row.openid, self.config.wechat.template_id, data,
                                                 url=payload.get("url", ""))
                channel = "template"
            elif choice.route in (Route.KEEP, Route.DROP):
                channel = choice.route.value
                if choice.route == Route.DROP:
                    error = WeChatError(choice.errcode or OUTSIDE_WINDOW, "no customer-service quota")
        except WeChatError as e:
            error = e
        await self._mark(row, channel, error, msg_id, kept=choice.errcode if channel == Route.KEEP else None)

    async def _custom(self, row: OutboxMessage, reply: Any, recorded: bool) -> Choice:
        """Send a customer-service message; when WeChat refuses it for the quota (our record was
        wrong: another process, a grant we never saw), correct the record, if we keep one for
        this user (an openid that never wrote has none: a unit for nothing), and fall back."""
        asked = datetime.now(UTC)
        try:
            await self._wechat.send_reply(row.openid, reply)
            return Choice(Route.CUSTOM)
        except WeChatError as e:
            if e.errcode not in (OUTSIDE_WINDOW, QUOTA_SPENT):
                raise
            code = e.errcode
            self._metrics.child(self._metrics.outbox_outcomes, str(code)).inc()
            if recorded:
                await self._writer.run(lambda session: correct_grant(session, row.openid, code, asked))
            return fallback(due_of(row), code, bool(self.config.wechat.template_id))

    async def _mark(self, row: OutboxMessage, channel: str | None, error: WeChatError | None,
                    msg_id: int | None = None, *, kept: int | None = None) -> None:
        now = datetime.now(UTC)
        mark: dict[str, Any] = {"rid": row.id, "m_attempts": row.attempts + 1, "m_sent_at": None,
                                "m_channel": None, "m_errcode": None, "m_error": None,
                                "m_next": row.next_attempt_at, "m_msg_id": msg_id}
        if channel in (Route.KEEP, Route.DROP):
            self._metrics.child(self._metrics.outbox_outcomes, channel).inc()
        if channel == Route.KEEP:
            # Not an attempt: the row waits for the user's next message (domain.quota.open_grants).
            mark.update(m_status=OutboxStatus.KEPT, m_attempts=row.attempts, m_errcode=kept,
                        m_error="kept for the user's next message: no customer-service quota")
        elif error is None:
            mark.update(m_status=OutboxStatus.SENT, m_sent_at=now, m_channel=channel)
            self._metrics.child(self._metrics.outbox_sent, channel or "").inc()
            self._metrics.child(self._metrics.outbox_outcomes, channel or "").inc()
            if row.body_id is not None:
                self._metrics.child(self._metrics.campaign_sends, channel or "", "sent").inc()
        else:
            final = (not error.retryable or error.errcode in (OUTSIDE_WINDOW, NOT_FOLLOWING) or channel == Route.DROP
                     or row.attempts + 1 >= self.config.outbox.max_attempts)
            backoff = MASS_RETRY_SECONDS if error.errcode == MASS_TOO_SOON else min(2 ** row.attempts,
                                                                                      MAX_BACKOFF_SECONDS)
            mark.update(m_status=OutboxStatus.FAILED if final else OutboxStatus.PENDING, m_errcode=error.errcode,
                        m_error=str(error)[:500], m_next=now + timedelta(seconds=backoff))
            self._metrics.child(self._metrics.outbox_failed, str(error.errcode)).inc()
            if row.body_id is not None:
                self._metrics.child(self._metrics.campaign_sends, "mass" if row.payload.get("mass") else "custom",
                                    "failed" if final else "retry").inc()
            log.warning("outbox send failed", extra={"outbox_id": row.id, "errcode": error.errcode,
                                                     "final": final})
        await self._marks(mark)


# A send's outcome, written at once; marks that land together share one statement and one commit.
_MARK = (update(OUTBOX).where(OUTBOX.c.id == bindparam("rid"))
         .values(status=bindparam("m_status"), attempts=bindparam("m_attempts"), claimed_at=None,
                 sent_at=bindparam("m_sent_at"), channel=bindparam("m_channel"), errcode=bindparam("m_errcode"),
                 last_error=bindparam("m_error"), next_attempt_at=bindparam("m_next"), msg_id=bindparam("m_msg_id")))


def _write_marks(session: Session, marks: list[dict[str, Any]]) -> list[None]:
    session.connection().execute(_MARK, marks)
    return [None] * len(marks)
