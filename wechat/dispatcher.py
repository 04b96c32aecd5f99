"""The webhook's way to a reply: `Dispatcher.submit(msg)`.

A delivery of an update not in work yet goes to the group commit (storage.group_commit), which
runs it with the others that arrived together through `wechat.batch.process_batch`; a delivery of
an update in work (WeChat's retry) waits with the first (`wechat.reply_waits`). After the commit the
reply goes to the waiting deliveries; a reply not ready by the deadline, or a handler's `Later`
work, goes out later through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from wechat.batch import Delivery, Handling, Outcome, process_batch
from kit.chat import ChatRouter, Incoming, Later
from kit.metrics import Metrics
from kit.live_settings import LiveSettings
from wechat.replays import Replayed, SignedQuery
from wechat.reply_waits import Pending, ReplyWaits
from domain.clock import Clock
from domain.messages import Reply, Text
from domain.outbox_rows import enqueue
from storage.durable_queue import Backoff
from storage.group_commit import GroupCommit
from storage.tables import PROCESSED
from storage.writer import Writer

log = logging.getLogger(__name__)

REPLY_DEADLINE_SECONDS = 4.0  # WeChat waits 5 s, then retries
BUSY_TEXT = "系统繁忙，请稍后再试。"
LATE_QUEUEING = Backoff(0.5, tries=3)  # queuing a late reply: three tries, 0.5 s and 1 s apart


class Dispatcher:
    def __init__(self, *, settings: LiveSettings, app: Mapping[Any, Any], router: ChatRouter, writer: Writer,
                 metrics: Metrics, deadline: float = REPLY_DEADLINE_SECONDS, clock: Clock | None = None):
        self._clock = clock or Clock()
        self._writer, self._metrics = writer, metrics
        handling = Handling(app=app, settings=settings, router=router, metrics=metrics, clock=self._clock)
        self._commit: GroupCommit[Delivery, Outcome] = GroupCommit(
            writer, lambda session, deliveries: process_batch(session, deliveries, handling),
            on_batch=metrics.batch_size.observe)
        self.waits = ReplyWaits(deadline)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, msg: Incoming, query: SignedQuery | None = None) -> Reply | None:
        """The passive reply for an update, or None ("success") when it will come later. Raises
        Replayed when `query` (plain mode) came before with another body."""
        pending = self.waits.get(msg.dedupe_key)
        if pending is None:  # the first delivery
            pending = self.waits.start(msg, query)
            self._commit.submit(Delivery(msg, query)).add_done_callback(lambda f: self._done(pending, f))
            return await self.waits.wait(pending)
        self._metrics.dedupe_hits.inc()
        if pending.late and query in (None, pending.query):
            return None  # answered "success" like the first: the outbox sends the reply
        if query is None or query == pending.query:
            return await self.waits.wait(pending)
        # WeChat's retry with a query of its own, which must be good for its body too.
        checked = self._commit.submit(Delivery(msg, query, joining=True))
        waiter = self.waits.wait(pending)
        try:
            await checked
        except Replayed:
            waiter.cancel()
            raise
        except Exception:  # the batch failed (logged there); the update's own reply still comes
            pass
        return await waiter

    async def drain(self) -> None:
        """Wait for queued updates and their slow work (used at shutdown and by tests)."""
        while self._commit.busy or self.waits or self._tasks:
            await asyncio.sleep(0.01)

    # ---- after the commit -------------------------------------------------------------------
    def _done(self, p: Pending, future: asyncio.Future[Outcome]) -> None:
        error = future.exception()
        if isinstance(error, Replayed):
            self.waits.refuse(p, error)
            return
        if error is not None:
            log.error("update failed", extra={"openid": p.msg.openid}, exc_info=error)
            self._reply(p, Text(BUSY_TEXT))
            return
        outcome = future.result()
        if outcome.retry:
            self._metrics.dedupe_hits.inc()
        result = outcome.result
        if isinstance(result, Later):
            if result.first is not None:
                self._reply(p, result.first)
            self._spawn(self._finish_later(p, result))
        else:
            self._reply(p, result)

    def _reply(self, p: Pending, reply: Reply | None) -> None:
        """Hand the reply to the waiting deliveries, or to the outbox when none waits any more
        (it gave up at the deadline, or its connection went away)."""
        delivered = self.waits.answer(p, reply)
        self._metrics.child(self._metrics.handler_latency, "passive" if delivered else "late").observe(
            time.perf_counter() - p.received)
        if not delivered and reply is not None:
            p.late = True  # in work until the outbox has it and the stored reply is forgotten
            self._spawn(self._send_late(p, reply, f"late:{p.msg.dedupe_key}", forget_stored=True))
        else:
            self.waits.forget(p)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_later(self, p: Pending, later: Later) -> None:
        try:
            reply = await later.work()
        except Exception:
            log.exception("slow work failed", extra={"openid": p.msg.openid})
            reply = None if later.first is not None else Text(BUSY_TEXT)
        if later.first is None:
            self._reply(p, reply)
        elif reply is not None:
            await self._send_late(p, reply, f"followup:{p.msg.dedupe_key}", forget_stored=False)

    async def _send_late(self, p: Pending, reply: Reply, key: str, *, forget_stored: bool) -> None:
        def queue(session: Session) -> None:
            enqueue(session, key, p.msg.openid, reply, now=self._clock.now(), answer=True)
            if forget_stored:
                # The first delivery was answered "success"; a retry is answered alike, not with a
                # second copy of what the outbox sends.
                session.execute(update(PROCESSED).where(PROCESSED.c.key == p.msg.dedupe_key).values(reply=None))
        try:  # the database may be briefly busy; the reply must not be lost
            for pause in (*LATE_QUEUEING.pauses(), 0):
                try:
                    await self._writer.run(queue)
                    self._metrics.late_replies.inc()
                    return
                except Exception:
                    log.exception("could not queue a late reply", extra={"openid": p.msg.openid})
                    await asyncio.sleep(pause)
        finally:
            if forget_stored:
                self.waits.forget(p)
