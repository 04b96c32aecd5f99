"""Processes updates with group commit: every update waiting when a batch starts shares one
transaction (dedupe keys, follower rows and the handlers' writes), so the database sees one
commit for many messages. A retried delivery is answered from the stored reply; a reply not ready
by the deadline goes out later through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, null, select, type_coerce, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat import Ctx, Dispatch, Handler, HandlerResult, Incoming, Route
from domain.config import Config
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.chat import Later
from domain.messages import Reply, Text, from_json, to_json
from bot.wechat_api import WeChatAPI
from storage.db import INLINE, dialect_insert
from storage.models import ConversationState, Distributor, DistributorRow, Follower, ProcessedMessage

log = logging.getLogger(__name__)

REPLY_DEADLINE_SECONDS = 4.0  # WeChat waits 5 s, then retries
MAX_BATCH = 200
# last_interaction_at (the 48-hour window) is kept to the minute: a write per message would cost
# more than the whole reply, and an older value only errs towards the template fallback.
INTERACTION_RESOLUTION = timedelta(minutes=1)
Followup = Callable[[], Awaitable[Reply | None]]
BUSY_TEXT = "系统繁忙，请稍后再试。"


@dataclass(eq=False)
class _Pending:
    msg: Incoming
    # One future per delivery waiting for the reply: a retry that arrives while the update is
    # in work waits alongside the first delivery.
    waiters: list[asyncio.Future[Any]] = field(default_factory=list)
    resolved: bool = False
    received: float = field(default_factory=time.perf_counter)


_GAVE_UP = object()  # what a waiter gets at the reply deadline


# The batch's statements, built once: constructing and keying them costs more than running them.
_DISTRIBUTOR_COLUMNS = tuple(Distributor.__table__.c)
# Who sent the batch and what was stored for it, in one statement. First a row per follower: the
# last interaction, whether a conversation is under way, and the distributor if registered (key
# NULL). Then a row per delivery of the batch processed before (a retry), with its stored reply.
# Senders without a follower row (their first message) take _DISTRIBUTORS and _STATES.
_SENDERS = union_all(
    select(Follower.openid, Follower.last_interaction_at, ConversationState.openid.is_not(None),
           type_coerce(null(), ProcessedMessage.key.type), type_coerce(null(), ProcessedMessage.reply.type),
           *_DISTRIBUTOR_COLUMNS)
    .select_from(Follower)
    .outerjoin(Distributor, Distributor.openid == Follower.openid)
    .outerjoin(ConversationState, ConversationState.openid == Follower.openid)
    .where(Follower.openid.in_(bindparam("openids", expanding=True))),
    select(ProcessedMessage.openid, null(), null(), ProcessedMessage.key, ProcessedMessage.reply,
           *(null() for _ in _DISTRIBUTOR_COLUMNS))
    .where(ProcessedMessage.key.in_(bindparam("keys", expanding=True))))
_DISTRIBUTORS = select(*_DISTRIBUTOR_COLUMNS).where(Distributor.openid.in_(bindparam("openids", expanding=True)))
_STATES = select(ConversationState).where(ConversationState.openid.in_(bindparam("openids", expanding=True)))
_TOUCH = update(Follower.__table__).where(Follower.__table__.c.openid == bindparam("o")).values(
    last_interaction_at=bindparam("at"))


class Dispatcher:
    def __init__(self, *, config: Config, sessionmaker: async_sessionmaker[AsyncSession], dispatch: Dispatch,
                 wechat: WeChatAPI, outbox: Outbox, metrics: Metrics,
                 deadline: float = REPLY_DEADLINE_SECONDS):
        self.config = config
        self.deadline = deadline
        self._sessionmaker = sessionmaker
        self._dispatch = dispatch
        self._wechat = wechat
        self._outbox = outbox
        self._metrics = metrics
        self._queue: list[_Pending] = []
        self._inflight: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._later_tasks: set[asyncio.Task[None]] = set()
        self._deadlines: deque[tuple[float, asyncio.Future[Any]]] = deque()  # (give up at, waiter)
        self._deadline_timer: asyncio.TimerHandle | None = None
        self.memo: dict[str, Any] = {}  # handlers' process-local caches (Ctx.memo)

    # ---- the webhook side -----------------------------------------------------------------
    async def submit(self, msg: Incoming) -> Reply | None:
        """The passive reply for an update, or None ("success") when it will come later."""
        key = msg.dedupe_key
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = _Pending(msg)
            self._queue.append(pending)
            self._wake.set()
        else:
            self._metrics.dedupe_hits.inc()
        waiter = asyncio.get_running_loop().create_future()
        pending.waiters.append(waiter)
        self._watch(waiter)
        reply = await waiter
        return None if reply is _GAVE_UP else reply

    def _watch(self, waiter: asyncio.Future[Any]) -> None:
        """Give the waiter up at the deadline. One timer for all: the deadline is the same for
        every delivery, so arrival order is deadline order (a timer each costs more)."""
        loop = asyncio.get_running_loop()
        due = self._deadlines
        while due and due[0][1].done():
            due.popleft()
        due.append((loop.time() + self.deadline, waiter))
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(due[0][0], self._give_up_due)

    def _give_up_due(self) -> None:
        loop = asyncio.get_running_loop()
        due, now = self._deadlines, loop.time()
        while due and (due[0][0] <= now or due[0][1].done()):
            waiter = due.popleft()[1]
            if not waiter.done():
                waiter.set_result(_GAVE_UP)
        self._deadline_timer = loop.call_at(due[0][0], self._give_up_due) if due else None

    # ---- the worker side ------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    await self._process(batch)
                except Exception:
                    # E.g. the database went away while a late reply was queued: this batch's
                    # waiters get the busy text, and the loop lives on for every later update.
                    log.exception("update batch failed")
                    for p in batch:
                        if not p.resolved:
                            self._resolve(p, Text(BUSY_TEXT))

    async def drain(self) -> None:
        """Wait for queued updates and their slow work (used at shutdown and by tests)."""
        while self._queue or self._inflight or self._later_tasks:
            await asyncio.sleep(0.01)

    async def _process(self, batch: list[_Pending], *, retry: bool = True) -> None:
        followups: list[tuple[_Pending, list[Followup]]] = []
        try:
            outcomes = await self._run_batch(batch, followups)
            self._outbox.wake_if_queued()
        except Exception as e:
            followups.clear()
            if len(batch) > 1:
                # One update spoiled the shared transaction: redo each on its own.
                for p in batch:
                    await self._process([p])
                return
            if retry and isinstance(e, IntegrityError):
                # Another process committed this update (WeChat's retry went there) or a row it
                # needs first: once more, and the stored reply answers it like any retry.
                await self._process(batch, retry=False)
                return
            log.exception("update failed", extra={"openid": batch[0].msg.openid})
            outcomes = [(batch[0], Text(BUSY_TEXT))]
        self._metrics.batch_size.observe(len(batch))
        late: list[tuple[_Pending, Reply]] = []
        for p, result in outcomes:
            if isinstance(result, Later):
                task = asyncio.create_task(self._finish_later(p, result))
                self._later_tasks.add(task)
                task.add_done_callback(self._later_tasks.discard)
            elif not self._resolve(p, result) and result is not None:
                late.append((p, result))
        if late:
            await self._send_late(late)
        for p, works in followups:
            task = asyncio.create_task(self._run_followups(p, works))
            self._later_tasks.add(task)
            task.add_done_callback(self._later_tasks.discard)

    async def _run_followups(self, p: _Pending, works: list[Followup]) -> None:
        for i, work in enumerate(works):
            try:
                reply = await work()
            except Exception:
                log.exception("follow-up failed", extra={"openid": p.msg.openid})
                continue
            if reply is not None:
                async with self._sessionmaker() as session, session.begin():
                    await self._outbox.enqueue(session, f"followup:{p.msg.dedupe_key}:{i}", p.msg.openid, reply)
                self._outbox.wake()

    def _resolve(self, p: _Pending, reply: Reply | None) -> bool:
        """Hand the reply to the waiting deliveries; False when none waits any more (it gave up at
        the deadline, or its connection went away)."""
        self._inflight.pop(p.msg.dedupe_key, None)
        p.resolved = True
        delivered = False
        for waiter in p.waiters:
            if not waiter.done():
                waiter.set_result(reply)
                delivered = True
        outcome = "passive" if delivered else "late"
        self._metrics.child(self._metrics.handler_latency, outcome).observe(time.perf_counter() - p.received)
        return delivered

    async def _finish_later(self, p: _Pending, later: Later) -> None:
        try:
            reply = await later.work()
        except Exception:
            log.exception("slow reply failed", extra={"openid": p.msg.openid})
            reply = Text(BUSY_TEXT)
        if not self._resolve(p, reply) and reply is not None:
            for attempt in range(3):  # the database may be briefly busy; the reply must not be lost
                try:
                    await self._send_late([(p, reply)])
                    return
                except Exception:
                    log.exception("could not queue a late reply", extra={"openid": p.msg.openid})
                    await asyncio.sleep(0.5 * 2 ** attempt)

    async def _send_late(self, late: list[tuple[_Pending, Reply]]) -> None:
        async with self._sessionmaker() as session, session.begin():
            for p, reply in late:
                await self._outbox.enqueue(session, f"late:{p.msg.dedupe_key}", p.msg.openid, reply)
            # The first delivery was answered "success"; a retry is answered alike, not with a
            # second copy of what the outbox sends.
            await session.execute(update(ProcessedMessage)
                                  .where(ProcessedMessage.key.in_([p.msg.dedupe_key for p, _ in late]))
                                  .values(reply=None))
        self._metrics.late_replies.inc(len(late))
        self._outbox.wake()

    def _plan(self, batch: list[_Pending], stored: dict[str, Any], distributors: dict[str, Distributor | DistributorRow],
              states: dict[str, ConversationState], now: datetime) -> dict[_Pending, Route]:
        """Resolve the routes up front, so prefetches can load for the whole batch at once.

        Only updates that are each one follower's only update in the batch are planned: an
        earlier update may change the state or the distributor a later one routes on."""
        counts = Counter(p.msg.openid for p in batch)
        plans = {}
        for p in batch:
            if counts[p.msg.openid] == 1 and p.msg.dedupe_key not in stored:
                s = states.get(p.msg.openid)
                plans[p] = self._dispatch.resolve(p.msg, s.state if s is not None and s.expires_at > now else None)
        return plans

    async def _prefetch(self, session: AsyncSession, plans: dict[_Pending, Route],
                        distributors: dict[str, Distributor | DistributorRow], now: datetime) -> dict[Handler, dict[int, Any]]:
        wanted: dict[Handler, list[int]] = defaultdict(list)
        for p, route in plans.items():
            d = distributors.get(p.msg.openid)
            if d is not None and route.handler in self._dispatch.prefetchers:
                wanted[route.handler].append(d.id)
        return {fn: await self._dispatch.prefetchers[fn](session, ids, now) for fn, ids in wanted.items()}

    async def _senders(self, session: AsyncSession, conn: Any, batch: list[_Pending], now: datetime) -> tuple[
            dict[str, Any], dict[str, datetime | None], dict[str, Distributor | DistributorRow],
            dict[str, ConversationState]]:
        """Replies stored for the batch's deliveries, and the last interaction, distributor and
        conversation state of everyone in it; a follower row for each first-time sender."""
        openids = list({p.msg.openid for p in batch})
        stored: dict[str, Any] = {}
        last_seen: dict[str, datetime | None] = {}
        distributors: dict[str, Distributor | DistributorRow] = {}
        talking: list[str] = []
        keys = [p.msg.dedupe_key for p in batch]
        for openid, last, has_state, key, reply, *distributor in await conn.execute(
                _SENDERS, {"openids": openids, "keys": keys}):
            if key is not None:
                stored[key] = reply
                continue
            last_seen[openid] = last
            if distributor[0] is not None:
                distributors[openid] = DistributorRow(*distributor)
            if has_state:
                talking.append(openid)
        newcomers = [o for o in openids if o not in last_seen]
        if newcomers:
            await conn.execute(dialect_insert(conn, Follower).on_conflict_do_nothing(),
                               [{"openid": o, "subscribed": True, "created_at": now} for o in newcomers])
            # A distributor may exist without a follower row (imported, or seeded by hand).
            for row in await conn.execute(_DISTRIBUTORS, {"openids": newcomers}):
                distributors[row.openid] = DistributorRow(*row)
            talking += newcomers
        states = {s.openid: s for s in await session.scalars(_STATES, {"openids": talking})} if talking else {}
        return stored, last_seen, distributors, states

    async def _run_batch(self, batch: list[_Pending],
                         followups: list[tuple[_Pending, list[Followup]]]) -> list[tuple[_Pending, HandlerResult]]:
        now = datetime.now(UTC)
        outcomes: list[tuple[_Pending, HandlerResult]] = []
        async with self._sessionmaker() as session, session.begin():
            # Core statements go straight to the connection: the ORM layer would only add cost.
            conn = await session.connection(execution_options=INLINE)
            stored, last_seen, distributors, states = await self._senders(session, conn, batch, now)
            plans = self._plan(batch, stored, distributors, states, now)
            prefetched = await self._prefetch(session, plans, distributors, now)
            processed: list[dict[str, Any]] = []
            seen: list[dict[str, Any]] = []
            for p in batch:
                msg = p.msg
                if msg.dedupe_key in stored:
                    self._metrics.dedupe_hits.inc()
                    reply_json = stored[msg.dedupe_key]
                    outcomes.append((p, from_json(reply_json) if reply_json else None))
                    continue
                last = last_seen.get(msg.openid)
                if msg.interactive and (last is None or now - last > INTERACTION_RESOLUTION):
                    last_seen[msg.openid] = now
                    seen.append({"o": msg.openid})
                distributor = distributors.get(msg.openid)
                route = plans.get(p)
                ctx = Ctx(session=session, config=self.config, wechat=self._wechat, outbox=self._outbox, now=now,
                          openid=msg.openid, distributor=distributor, state=states.get(msg.openid),
                          sessionmaker=self._sessionmaker, memo=self.memo)
                if route is not None and distributor is not None:
                    ctx.prefetched = prefetched.get(route.handler, {}).get(distributor.id)
                result = await self._dispatch.route(msg, ctx, route)
                distributors[msg.openid], states[msg.openid] = ctx.distributor, ctx.state
                self._metrics.child(self._metrics.updates, msg.event or msg.kind).inc()
                stored_reply = None if result is None or isinstance(result, Later) else to_json(result)
                processed.append({"key": msg.dedupe_key, "openid": msg.openid, "reply": stored_reply,
                                  "created_at": now})
                stored[msg.dedupe_key] = stored_reply
                outcomes.append((p, result))
                if ctx.followups:
                    followups.append((p, ctx.followups))
            if processed:
                await session.flush()  # the handlers' rows first (foreign keys)
                await conn.execute(insert(ProcessedMessage.__table__), processed)
            if seen:
                await conn.execute(_TOUCH, [{**o, "at": now} for o in seen])
        return outcomes
