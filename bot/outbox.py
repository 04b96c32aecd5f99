"""The outbox: every message that is not a passive reply, sent by a worker with retries.

Rows are written in the same transaction as the change that caused them, under a unique key.
A worker claims due rows (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's BEGIN IMMEDIATE makes
the claim atomic there), sends each, and marks it at once, so a crash can repeat one send at most.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from domain.config import Config
from bot.metrics import Metrics
from domain.messages import from_json
from domain.outbox import template_data
from bot.wechat_api import NOT_FOLLOWING, OUTSIDE_WINDOW, QUOTA_SPENT, WeChatAPI, WeChatError
from storage.db import READ_ONLY, is_postgres
from storage.models import OutboxMessage, OutboxStatus
from storage.writer import Writer

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 600


class Outbox:
    def __init__(self, config: Config, sessionmaker: async_sessionmaker[AsyncSession], writer: Writer,
                 wechat: WeChatAPI, metrics: Metrics):
        self.config = config
        self._sessionmaker = sessionmaker  # the read-only look for due rows
        self._writer = writer  # claims and marks
        self._wechat = wechat
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._interval = 1.0 / config.outbox.rate_per_second
        self._next_send = 0.0

    def wake(self) -> None:
        self._wake.set()

    async def _any_due(self) -> bool:
        """A read-only look (no write lock on SQLite) before claiming."""
        async with self._sessionmaker() as session:
            conn = await session.connection(execution_options=READ_ONLY)
            return (await conn.scalar(
                select(OutboxMessage.id).where(OutboxMessage.status == OutboxStatus.PENDING,
                                               OutboxMessage.next_attempt_at <= datetime.now(UTC)).limit(1))
                    is not None)

    # ---- the worker -----------------------------------------------------------------------
    async def run(self) -> None:
        await self.recover()
        last_recover = time.monotonic()
        while True:
            try:
                sent = await self.drain_once()
                if time.monotonic() - last_recover > self.config.outbox.lease_seconds / 2:
                    await self.recover()
                    last_recover = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the worker alive through a database hiccup
                log.exception("outbox worker error")
                sent = 0
            if not sent:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)
                except TimeoutError:
                    pass

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

    async def claim(self, limit: int) -> list[OutboxMessage]:
        now = datetime.now(UTC)

        def claim(session: Session) -> list[OutboxMessage]:
            due = (select(OutboxMessage.id)
                   .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now)
                   .order_by(OutboxMessage.id).limit(limit))
            if is_postgres(session):
                due = due.with_for_update(skip_locked=True)
            return list(session.scalars(
                update(OutboxMessage).where(OutboxMessage.id.in_(due.scalar_subquery()))
                .values(status=OutboxStatus.SENDING, claimed_at=now)
                .returning(OutboxMessage), execution_options={"synchronize_session": False}).all())
        return sorted(await self._writer.run(claim), key=lambda r: r.id)

    async def drain_once(self) -> int:
        if not await self._any_due():
            return 0
        rows = await self.claim(self.config.outbox.batch_size)
        for i, row in enumerate(rows):
            delivery = None
            try:
                await self._throttle()
                delivery = asyncio.ensure_future(self._deliver(row))
                await asyncio.shield(delivery)
            except asyncio.CancelledError:
                # Stopping (a restart is not a crash): a send in flight keeps its mark, or it would go
                # out again once the lease ran out; claims not yet tried go back to the queue now.
                if delivery is not None:
                    try:
                        await delivery
                    except Exception:
                        log.exception("outbox delivery failed while stopping", extra={"outbox_id": row.id})
                await self._release(rows[i + (delivery is not None):])
                raise
        return len(rows)

    async def _release(self, rows: list[OutboxMessage]) -> None:
        if rows:
            ids = [r.id for r in rows]
            await self._writer.run(lambda session: session.execute(update(OutboxMessage).where(
                OutboxMessage.id.in_(ids), OutboxMessage.status == OutboxStatus.SENDING)
                .values(status=OutboxStatus.PENDING, claimed_at=None)))

    async def _throttle(self) -> None:
        now = time.monotonic()
        if self._next_send > now:
            await asyncio.sleep(self._next_send - now)
        self._next_send = max(now, self._next_send) + self._interval

    async def _deliver(self, row: OutboxMessage) -> None:
        reply = from_json(row.payload)
        channel, error = None, None
        try:
            try:
                await self._wechat.send_reply(row.openid, reply)
                channel = "custom"
            except WeChatError as e:
                template_id = self.config.wechat.template_id
                if e.errcode not in (OUTSIDE_WINDOW, QUOTA_SPENT) or not template_id:
                    raise
                # Outside the 48-hour window: the template message is the only way to reach them.
                data = row.payload.get("template") or template_data(reply)
                await self._wechat.send_template(row.openid, template_id, data,
                                                 url=row.payload.get("url", ""))
                channel = "template"
        except WeChatError as e:
            error = e
        await self._mark(row, channel, error)

    async def _mark(self, row: OutboxMessage, channel: str | None, error: WeChatError | None) -> None:
        now = datetime.now(UTC)
        values: dict[str, Any] = {"attempts": row.attempts + 1, "claimed_at": None}
        if error is None:
            values.update(status=OutboxStatus.SENT, sent_at=now, channel=channel, errcode=None)
            self._metrics.outbox_sent.labels(channel).inc()
        else:
            final = (not error.retryable or error.errcode in (OUTSIDE_WINDOW, NOT_FOLLOWING)
                     or row.attempts + 1 >= self.config.outbox.max_attempts)
            backoff = min(2 ** row.attempts, MAX_BACKOFF_SECONDS)
            values.update(status=OutboxStatus.FAILED if final else OutboxStatus.PENDING,
                          errcode=error.errcode, last_error=str(error)[:500],
                          next_attempt_at=now + timedelta(seconds=backoff))
            self._metrics.outbox_failed.labels(str(error.errcode)).inc()
            log.warning("outbox send failed", extra={"outbox_id": row.id, "errcode": error.errcode,
                                                     "final": final})
        await self._writer.run(
            lambda session: session.execute(update(OutboxMessage).where(OutboxMessage.id == row.id).values(**values)))
