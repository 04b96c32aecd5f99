"""Processes updates through group commit (storage.group_commit): the updates that arrive together
share one transaction and each runs in its own SAVEPOINT; their dedupe keys and replies are
stored in the same transaction, so a retried delivery is answered from the stored reply. A reply
not ready by the deadline goes out later through the outbox.

In plain mode each signed query is checked against the one body it is good for (bot.replays), with
the same lock, read and write as the dedupe keys; a refused delivery runs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from bot.chat import ChatRouter, Ctx, HandlerResult, Incoming, Later, live_state
from bot.metrics import Metrics
from bot.replays import Replayed, SignedQuery, check
from domain.clock import Clock
from domain.config import Config
from domain.messages import Reply, Text, from_json, to_json
from domain.outbox import enqueue
from domain.quota import Grant, GrantKind, granted_by, open_grants, opened_at
from storage.db import dialect_insert, is_postgres
from storage.durable_queue import Backoff
from storage.group_commit import Failed, GroupCommit, each_in_savepoint
from storage.models import ConversationState, Distributor, Follower
from storage.tables import FOLLOWERS, PROCESSED, SIGNED_QUERIES
from storage.writer import Writer

log = logging.getLogger(__name__)

REPLY_DEADLINE_SECONDS = 4.0  # WeChat waits 5 s, then retries
# A message's grant (48 hours) still unused is renewed to the minute: a write per message would cost
# more than the whole reply, and an older value only errs towards the template fallback. Any other
# change of grant (a click's minute, a spent grant renewed) is written at once.
INTERACTION_RESOLUTION = timedelta(minutes=1)
BUSY_TEXT = "系统繁忙，请稍后再试。"
LATE_QUEUEING = Backoff(0.5, tries=3)  # queuing a late reply: three tries, 0.5 s and 1 s apart

# The batch's statements, built once: constructing them costs more than running them.
_STORED = select(PROCESSED.c.key, PROCESSED.c.reply).where(PROCESSED.c.key.in_(bindparam("keys", expanding=True)))
_QUERIES = (select(SIGNED_QUERIES.c.key, SIGNED_QUERIES.c.body_digest)
            .where(SIGNED_QUERIES.c.key.in_(bindparam("keys", expanding=True))))
# On PostgreSQL another process may receive a retry of the same delivery: whoever locks its key
# first processes it, the other waits and then finds the stored reply. (On SQLite the batch's
# BEGIN IMMEDIATE already serialises every writer.) In key order, so two batches cannot deadlock.
_LOCK_KEYS = text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(:keys) AS k ORDER BY k"
                  ).bindparams(bindparam("keys", type_=ARRAY(String)))
# Who sent the batch, in one query: each follower's customer-service grant, distributor row (None
# where there is none) and whether a conversation is under way (loaded apart: rarely).
_SENDERS = (select(Follower.openid, Follower.grant_kind, Follower.last_interaction_at, Follower.grant_used,
                   Distributor, ConversationState.openid.is_not(None))
            .outerjoin(Distributor, Distributor.openid == Follower.openid)
            .outerjoin(ConversationState, ConversationState.openid == Follower.openid)
            .where(Follower.openid.in_(bindparam("openids", expanding=True))))
_STATES = select(ConversationState).where(ConversationState.openid.in_(bindparam("openids", expanding=True)))
_SENDER = (select(Distributor, ConversationState).select_from(Follower)
           .outerjoin(Distributor, Distributor.openid == Follower.openid)
           .outerjoin(ConversationState, ConversationState.openid == Follower.openid)
           .where(Follower.openid == bindparam("openid")))
_STORE = PROCESSED.insert()
_STORE_QUERIES = SIGNED_QUERIES.insert()


@dataclass(frozen=True)
class Delivery:
    """What the group commit runs: an update with the signed query it came with (plain mode);
    `joining`: another delivery of an update already in work, whose query is only checked."""

    msg: Incoming
    query: SignedQuery | None = None
    joining: bool = False


@dataclass(frozen=True)
class Outcome:
    """What an update came to: the handler's result, or the reply stored for an earlier delivery."""

    result: HandlerResult
    retry: bool = False


@dataclass(eq=False)
class _Pending:
    msg: Incoming
    query: SignedQuery | None = None
    # One future per delivery waiting for the reply: a retry that arrives while the update is in
    # work waits alongside the first delivery.
    waiters: list[asyncio.Future[Any]] = field(default_factory=list)
    received: float = field(default_factory=time.perf_counter)
    # Its reply is on its way to the outbox (no delivery waited for it): a retry is answered
    # "success" until the stored reply is forgotten, never with a second copy.
    late: bool = False


_GAVE_UP = object()  # what a waiter gets at the reply deadline
_REPLAYED = object()  # what the waiters get when the update's signed query was refused


@dataclass
class _Senders:
    """The batch's followers as of its start, kept up to date as its updates run."""

    stored: dict[str, Any]
    grants: dict[str, Grant | None]
    distributors: dict[str, Distributor]
    states: dict[str, ConversationState]
    queries: dict[str, str] = field(default_factory=dict)  # signed queries seen: key -> body digest
    good: list[bool] = field(default_factory=list)  # per delivery: its signed query holds (bot.replays)
    new_queries: list[dict[str, Any]] = field(default_factory=list)  # rows of the queries first seen
    replies: dict[str, Any] = field(default_factory=dict)  # what this batch's updates answered, stored at its end
    preloaded: dict[Any, dict[int, Any]] = field(default_factory=dict)  # commands' loads for the batch

    @classmethod
    def load(cls, session: Session, deliveries: list[Delivery], now: datetime) -> _Senders:
        """The stored replies and signed queries of the batch's deliveries (locked on PostgreSQL),
        and the senders of those whose query holds, as a follower's message makes them (once)."""
        conn = session.connection()  # Core statements straight to the connection: the ORM would only add cost
        keys = [d.msg.dedupe_key for d in deliveries]
        queries = [d.query.key for d in deliveries if d.query is not None]
        if is_postgres(session):
            conn.execute(_LOCK_KEYS, {"keys": keys + queries})
        senders = cls(dict(conn.execute(_STORED, {"keys": keys}).all()), {}, {}, {})
        if queries:
            senders.queries = dict(conn.execute(_QUERIES, {"keys": queries}).all())
        senders.good, senders.new_queries = check([d.query for d in deliveries], senders.queries)
        batch = [d.msg for d, ok in zip(deliveries, senders.good, strict=True) if ok and not d.joining]
        openids = list({m.openid for m in batch})
        talking = []
        for openid, kind, at, used, distributor, has_state in session.execute(_SENDERS, {"openids": openids}):
            senders.grants[openid] = Grant(GrantKind(kind), at, used)
            if distributor is not None:
                senders.distributors[openid] = distributor
            if has_state:
                talking.append(openid)
        if talking:
            senders.states = {s.openid: s for s in session.scalars(_STATES, {"openids": talking})}
        newcomers = [o for o in openids if o not in senders.grants]
        if newcomers:
            # A distributor may exist without a follower row (imported, or seeded by hand). Only a
            # follower's own doing makes one: not WeChat's job reports or verification notices.
            followers = {m.openid for m in batch if m.makes_follower}
            if rows := [{"openid": o, "subscribed": True, "created_at": now} for o in newcomers if o in followers]:
                conn.execute(dialect_insert(session, FOLLOWERS).on_conflict_do_nothing(), rows)
            for openid in newcomers:
                senders.grants[openid] = None
                senders._load(session, openid)
        return senders

    def _load(self, session: Session, openid: str) -> None:
        d, s = session.execute(_SENDER, {"openid": openid}).one_or_none() or (None, None)
        self.distributors.pop(openid, None)
        self.states.pop(openid, None)
        if d is not None:
            self.distributors[openid] = d
        if s is not None:
            self.states[openid] = s

    def of(self, session: Session, openid: str) -> tuple[Distributor | None, ConversationState | None]:
        """The sender's distributor row and conversation, as loaded for the batch; loaded again
        when an update that failed made the session forget them (each_in_savepoint)."""
        d, s = self.distributors.get(openid), self.states.get(openid)
        if (d is not None and d not in session) or (s is not None and s not in session):
            self._load(session, openid)
            d, s = self.distributors.get(openid), self.states.get(openid)
        return d, s


class Dispatcher:
    def __init__(self, *, config: Config, app: Mapping[Any, Any], router: ChatRouter, writer: Writer,
                 metrics: Metrics, deadline: float = REPLY_DEADLINE_SECONDS, clock: Clock | None = None):
        self.config, self.deadline, self._clock = config, deadline, clock or Clock()
        self._app, self._router, self._writer, self._metrics = app, router, writer, metrics
        self._commit: GroupCommit[Delivery, Outcome] = GroupCommit(
            writer, self._process, on_batch=metrics.batch_size.observe)
        self._inflight: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: deque[tuple[float, asyncio.Future[Any]]] = deque()  # (give up at, waiter)
        self._deadline_timer: asyncio.TimerHandle | None = None

    # ---- the webhook side -----------------------------------------------------------------
    async def submit(self, msg: Incoming, query: SignedQuery | None = None) -> Reply | None:
        """The passive reply for an update, or None ("success") when it will come later. Raises
        Replayed when `query` (plain mode) came before with another body."""
        key = msg.dedupe_key
        pending = self._inflight.get(key)
        checked = None
        if pending is not None and pending.late and query in (None, pending.query):
            self._metrics.dedupe_hits.inc()
            return None
        if pending is None:
            pending = self._inflight[key] = _Pending(msg, query)
            self._commit.submit(Delivery(msg, query)).add_done_callback(lambda f, p=pending: self._done(p, f))
        else:
            self._metrics.dedupe_hits.inc()
            if query is not None and query != pending.query:  # its own query must be good for its body too
                checked = self._commit.submit(Delivery(msg, query, joining=True))
        waiter = asyncio.get_running_loop().create_future()
        pending.waiters.append(waiter)
        self._watch(waiter)
        if checked is not None:
            try:
                await checked
            except Replayed:
                waiter.cancel()
                raise
            except Exception:  # the batch failed (logged there); the update's own reply still comes
                pass
        reply = await waiter
        if reply is _REPLAYED:
            raise Replayed()
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

    async def drain(self) -> None:
        """Wait for queued updates and their slow work (used at shutdown and by tests)."""
        while self._commit.busy or self._inflight or self._tasks:
            await asyncio.sleep(0.01)

    # ---- after the commit -------------------------------------------------------------------
    def _done(self, p: _Pending, future: asyncio.Future[Outcome]) -> None:
        if isinstance(future.exception(), Replayed):
            self._inflight.pop(p.msg.dedupe_key, None)
            for waiter in p.waiters:
                if not waiter.done():
                    waiter.set_result(_REPLAYED)
            return
        if future.exception() is not None:
            log.error("update failed", extra={"openid": p.msg.openid}, exc_info=future.exception())
            self._reply(p, Text(BUSY_TEXT))
            return
        outcome = future.result()
        result = outcome.result
        if outcome.retry:
            self._metrics.dedupe_hits.inc()
        if isinstance(result, Later):
            if result.first is not None:
                self._reply(p, result.first)
            self._spawn(self._finish_later(p, result))
        else:
            self._reply(p, result)

    def _reply(self, p: _Pending, reply: Reply | None) -> None:
        """Hand the reply to the waiting deliveries, or to the outbox when none waits any more
        (it gave up at the deadline, or its connection went away)."""
        delivered = False
        for waiter in p.waiters:
            if not waiter.done():
                waiter.set_result(reply)
                delivered = True
        self._metrics.child(self._metrics.handler_latency, "passive" if delivered else "late").observe(
            time.perf_counter() - p.received)
        if not delivered and reply is not None:
            p.late = True  # in flight until the outbox has it and the stored reply is forgotten
            self._spawn(self._send_late(p, reply, f"late:{p.msg.dedupe_key}", forget_stored=True))
        else:
            self._inflight.pop(p.msg.dedupe_key, None)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_later(self, p: _Pending, later: Later) -> None:
        try:
            reply = await later.work()
        except Exception:
            log.exception("slow work failed", extra={"openid": p.msg.openid})
            reply = None if later.first is not None else Text(BUSY_TEXT)
        if later.first is None:
            self._reply(p, reply)
        elif reply is not None:
            await self._send_late(p, reply, f"followup:{p.msg.dedupe_key}", forget_stored=False)

    async def _send_late(self, p: _Pending, reply: Reply, key: str, *, forget_stored: bool) -> None:
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
                self._inflight.pop(p.msg.dedupe_key, None)

    # ---- inside the unit of work --------------------------------------------------------------
    def _process(self, session: Session, deliveries: list[Delivery]) -> list[Outcome | Failed]:
        now = self._clock.now()
        senders = _Senders.load(session, deliveries, now)
        good = senders.good
        accepted = [d for d, ok in zip(deliveries, good, strict=True) if ok]
        batch = [d.msg for d in accepted if not d.joining]
        self._preload(session, batch, senders, now)
        results = iter(each_in_savepoint(session, accepted, lambda s, d: self._one(s, d, senders, now),
                                         lambda d, error: self._one(session, d, senders, now, refused=error)))
        outcomes = [next(results) if ok else Failed(Replayed()) for ok in good]
        # The dedupe keys with their replies, for the updates that went through, and the signed
        # queries first seen (a statement each).
        done = [{"key": d.msg.dedupe_key, "openid": d.msg.openid, "reply": senders.replies[d.msg.dedupe_key],
                 "created_at": now}
                for d, o in zip(deliveries, outcomes, strict=True) if isinstance(o, Outcome) and not o.retry]
        if done:
            session.connection().execute(_STORE, done)
        if senders.new_queries:
            session.connection().execute(_STORE_QUERIES, senders.new_queries)
        open_grants(session, self._opened(batch, senders, now), now)
        return outcomes

    @staticmethod
    def _opened(batch: list[Incoming], senders: _Senders, now: datetime) -> dict[str, tuple[GrantKind, datetime]]:
        """The customer-service grants the batch's updates open (WeChat's quota, domain.quota), the
        last of each sender's; none where an unused message grant would only move by seconds."""
        opened: dict[str, tuple[GrantKind, datetime]] = {}
        for msg in batch:
            kind = granted_by(msg.kind, msg.event)
            if kind is None or msg.dedupe_key in senders.stored:  # a retried delivery opens nothing new
                continue
            at, last = opened_at(msg.create_time, now), senders.grants.get(msg.openid)
            if last is not None and last.kind == kind and last.opened_at is not None and (
                    at <= last.opened_at or (kind == GrantKind.MESSAGE and not last.used
                                             and at - last.opened_at <= INTERACTION_RESOLUTION)):
                continue
            senders.grants[msg.openid] = Grant(kind, at)
            opened[msg.openid] = (kind, at)
        return opened

    def _preload(self, session: Session, batch: list[Incoming], senders: _Senders, now: datetime) -> None:
        """Commands' loads (Feature.command(preload=...)) made once for everyone asking them.

        Only for senders with one update in the batch: an earlier update of the same sender may
        change what a later one routes on or reads; theirs load on demand (Ctx.load)."""
        counts = Counter(m.openid for m in batch)
        wanted: dict[Any, list[int]] = defaultdict(list)
        for msg in batch:
            d = senders.distributors.get(msg.openid)
            if d is None or counts[msg.openid] > 1 or msg.dedupe_key in senders.stored:
                continue
            route = self._router.resolve(msg, live_state(senders.states.get(msg.openid), now))
            preload = self._router.preloads.get(route.handler)
            if preload is not None:
                wanted[preload].append(d.id)
        senders.preloaded = {preload: preload(session, ids, now) for preload, ids in wanted.items()}

    def _one(self, session: Session, delivery: Delivery, senders: _Senders, now: datetime,
             refused: Exception | None = None) -> Outcome:  # refused: its handler's, rolled back
        if delivery.joining:  # its query checked; the reply is the update's in work
            return Outcome(None, retry=True)
        msg, key = delivery.msg, delivery.msg.dedupe_key
        if key in senders.stored:
            stored = senders.stored[key]
            return Outcome(from_json(stored) if stored else None, retry=True)
        distributor, state = senders.of(session, msg.openid)
        ctx = Ctx(session=session, app=self._app, config=self.config, now=now, openid=msg.openid,
                  distributor=distributor, state=state, preloaded=senders.preloaded)
        result = self._router.route(msg, ctx) if refused is None else self._router.refused(msg, ctx, refused)
        if ctx.distributor is not None:
            senders.distributors[msg.openid] = ctx.distributor
        if ctx.state is None:
            senders.states.pop(msg.openid, None)
        else:
            senders.states[msg.openid] = ctx.state
        self._metrics.child(self._metrics.updates, msg.event or msg.kind).inc()
        reply = result.first if isinstance(result, Later) else result
        senders.replies[key] = to_json(reply) if reply is not None else None
        return Outcome(result)
