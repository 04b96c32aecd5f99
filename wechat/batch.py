"""A batch of WeChat updates inside its unit of work (storage.group_commit): `process_batch`.

The updates that arrive together share one transaction and each runs in its own SAVEPOINT; their
dedupe keys and replies are stored in the same transaction, so a retried delivery is answered
from the stored reply. In plain mode each signed query is checked against the one body it is good
for (wechat.replays) under the same lock as the dedupe keys; a refused delivery runs nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from wechat import replays
from kit.chat import ChatRouter, Ctx, HandlerResult, Incoming, Later, live_state
from kit.metrics import Metrics
from kit.live_settings import LiveSettings
from wechat.replays import Replayed, SignedQuery
from domain.clock import Clock
from domain.config import Config
from domain.messages import from_json, to_json
from domain.quota import Grant, GrantKind, granted_by, open_grants, opened_at
from storage.db import dialect_insert, is_postgres
from storage.group_commit import Failed, each_in_savepoint
from storage.models import ConversationState, Distributor, Follower
from storage.tables import FOLLOWERS, PROCESSED

# A message's grant (48 hours) still unused is renewed to the minute: a write per message would cost
# more than the whole reply, and an older value only errs towards the template fallback. Any other
# change of grant (a click's minute, a spent grant renewed) is written at once.
INTERACTION_RESOLUTION = timedelta(minutes=1)

# The batch's statements, built once: constructing them costs more than running them.
_STORED = select(PROCESSED.c.key, PROCESSED.c.reply).where(PROCESSED.c.key.in_(bindparam("keys", expanding=True)))
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


@dataclass(frozen=True)
class Handling:
    """What a batch's updates are handled with."""

    app: Mapping[Any, Any]  # the app's resources, for ctx.app
    settings: LiveSettings  # ctx.config: its config as the batch starts, one state for the whole batch
    router: ChatRouter
    metrics: Metrics
    clock: Clock


def process_batch(session: Session, deliveries: list[Delivery], handling: Handling) -> list[Outcome | Failed]:
    """One outcome per delivery (Failed(Replayed()) for a signed query used with another body)."""
    now, config = handling.clock.now(), handling.settings.config
    conn = session.connection()  # Core statements straight to the connection: the ORM would only add cost
    keys = [d.msg.dedupe_key for d in deliveries]
    queries = [d.query for d in deliveries]
    if is_postgres(session):
        conn.execute(_LOCK_KEYS, {"keys": keys + [q.key for q in queries if q is not None]})
    stored = dict(conn.execute(_STORED, {"keys": keys}).all())
    good = replays.remember(conn, queries)
    accepted = [d for d, ok in zip(deliveries, good, strict=True) if ok]
    batch = [d.msg for d in accepted if not d.joining]
    senders = _Senders.load(session, batch, stored, now)
    _preload(session, batch, senders, handling.router, now)
    results = iter(each_in_savepoint(session, accepted, lambda s, d: _one(s, d, senders, handling, config, now),
                                     lambda d, error: _one(session, d, senders, handling, config, now, refused=error)))
    outcomes = [next(results) if ok else Failed(Replayed()) for ok in good]
    # The dedupe keys with their replies, for the updates that went through (one statement).
    done = [{"key": d.msg.dedupe_key, "openid": d.msg.openid, "reply": senders.replies[d.msg.dedupe_key],
             "created_at": now}
            for d, o in zip(deliveries, outcomes, strict=True) if isinstance(o, Outcome) and not o.retry]
    if done:
        conn.execute(_STORE, done)
    open_grants(session, _opened(batch, senders, now), now)
    return outcomes


@dataclass
class _Senders:
    """The batch's followers as of its start, kept up to date as its updates run."""

    stored: dict[str, Any]  # replies stored for earlier deliveries, by dedupe key
    grants: dict[str, Grant | None] = field(default_factory=dict)
    distributors: dict[str, Distributor] = field(default_factory=dict)
    states: dict[str, ConversationState] = field(default_factory=dict)
    replies: dict[str, Any] = field(default_factory=dict)  # what this batch's updates answered, stored at its end
    preloaded: dict[Any, dict[int, Any]] = field(default_factory=dict)  # commands' loads for the batch

    @classmethod
    def load(cls, session: Session, batch: list[Incoming], stored: dict[str, Any], now: datetime) -> _Senders:
        """The senders of the batch's updates, as a follower's message makes them (once)."""
        senders = cls(stored)
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
                session.connection().execute(dialect_insert(session, FOLLOWERS).on_conflict_do_nothing(), rows)
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


def _preload(session: Session, batch: list[Incoming], senders: _Senders, router: ChatRouter, now: datetime) -> None:
    """Commands' loads (Feature.command(preload=...)) made once for everyone asking them.

    Only for senders with one update in the batch: an earlier update of the same sender may
    change what a later one routes on or reads; theirs load on demand (Ctx.load)."""
    counts = Counter(m.openid for m in batch)
    wanted: dict[Any, list[int]] = defaultdict(list)
    for msg in batch:
        d = senders.distributors.get(msg.openid)
        if d is None or counts[msg.openid] > 1 or msg.dedupe_key in senders.stored:
            continue
        route = router.resolve(msg, live_state(senders.states.get(msg.openid), now))
        preload = router.preloads.get(route.handler)
        if preload is not None:
            wanted[preload].append(d.id)
    senders.preloaded = {preload: preload(session, ids, now) for preload, ids in wanted.items()}


def _one(session: Session, delivery: Delivery, senders: _Senders, handling: Handling, config: Config,
         now: datetime, refused: Exception | None = None) -> Outcome:  # refused: its handler's, rolled back
    if delivery.joining:  # its query checked; the reply is the update's in work
        return Outcome(None, retry=True)
    msg, key = delivery.msg, delivery.msg.dedupe_key
    if key in senders.stored:
        stored = senders.stored[key]
        return Outcome(from_json(stored) if stored else None, retry=True)
    distributor, state = senders.of(session, msg.openid)
    ctx = Ctx(session=session, app=handling.app, config=config, now=now, openid=msg.openid,
              distributor=distributor, state=state, preloaded=senders.preloaded)
    result = handling.router.route(msg, ctx) if refused is None else handling.router.refused(msg, ctx, refused)
    if ctx.distributor is not None:
        senders.distributors[msg.openid] = ctx.distributor
    if ctx.state is None:
        senders.states.pop(msg.openid, None)
    else:
        senders.states[msg.openid] = ctx.state
    metrics = handling.metrics
    metrics.child(metrics.updates, msg.event or msg.kind).inc()
    reply = result.first if isinstance(result, Later) else result
    senders.replies[key] = to_json(reply) if reply is not None else None
    return Outcome(result)


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
