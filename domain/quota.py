"""WeChat's customer-service quota as our records hold it (CONTRACT §7, WeChat's rules since June
2023), and the outbox's choice of channel for each message due.

A follower's message (text, image, voice, video, location, link) grants 5 customer-service
messages within 48 hours; a follow, a QR scan or a menu click grants 3 within a minute; a new
grant replaces the last (they do not add up). VIEW, LOCATION reports, unfollows and WeChat's own
events (job finish, verification) grant nothing. The dispatcher records each follower's grant
(`followers.last_interaction_at`, `grant_kind`, `grant_used`, `open_grants`); the outbox, as it
claims rows, spends it (`route_claim`): a user's own answers first, then notices, then broadcasts.
What the quota leaves out goes as a template message when it is a service notice with one, or is
kept (`OutboxStatus.KEPT`) until the user next writes; a broadcast nobody can receive fails.
WeChat's own 45015/45047 stay the truth: our record can be wrong across processes
(`correct_grant`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from storage.db import is_postgres
from storage.models import OutboxStatus
from storage.tables import FOLLOWERS, OUTBOX

OUTSIDE = 45015  # no grant open
SPENT = 45047  # the grant's messages are used


class GrantKind(StrEnum):
    MESSAGE = "message"
    ACTION = "action"


LIMITS = {GrantKind.MESSAGE: (5, timedelta(hours=48)), GrantKind.ACTION: (3, timedelta(minutes=1))}
_MESSAGES = frozenset({"text", "image", "voice", "video", "shortvideo", "location", "link"})
_ACTIONS = frozenset({"subscribe", "subscribe_scan", "scan", "click", "scancode_push", "scancode_waitmsg"})
MAX_SKEW = timedelta(minutes=5)  # a CreateTime further off than this is not believed


def granted_by(kind: str, event: str) -> GrantKind | None:
    """The grant an update opens (Incoming.kind and .event), or None."""
    if kind != "event":
        return GrantKind.MESSAGE if kind in _MESSAGES else None
    return GrantKind.ACTION if event in _ACTIONS else None


def opened_at(create_time: int, now: datetime) -> datetime:
    """When WeChat opened the grant: the update's CreateTime when it is earlier than our clock (the
    grant ends no later in our record than in WeChat's), within reason; else now."""
    created = datetime.fromtimestamp(create_time, UTC)
    return created if timedelta(0) <= now - created <= MAX_SKEW else now


@dataclass(frozen=True)
class Grant:
    kind: GrantKind
    opened_at: datetime | None
    used: int = 0

    def refusal(self, now: datetime, more: int = 0) -> int | None:
        """WeChat's answer to one more customer-service message now (after `more` already planned):
        OUTSIDE, SPENT, or None when it may go."""
        limit, window = LIMITS[self.kind]
        if self.opened_at is None or now - self.opened_at >= window:
            return OUTSIDE
        return SPENT if self.used + more >= limit else None


class Rank(IntEnum):
    """Who goes first when the quota is short."""

    ANSWER = 0  # a late reply to the user's own request
    NOTICE = 1  # a service notice (commission, withdrawal, ticket, rank...)
    BROADCAST = 2  # a campaign's message


class Route(StrEnum):
    CUSTOM = "custom"  # a customer-service message, inside the quota
    TEMPLATE = "template"  # a template message (service notices)
    KEEP = "kept"  # waits for the user's next message
    DROP = "dropped"  # a broadcast nobody can receive now: failed


@dataclass(frozen=True)
class Due:
    """A claimed row as the choice sees it."""

    id: int
    openid: str
    rank: Rank
    template: bool  # has a template message of its own or derived (service notices)


@dataclass(frozen=True)
class Choice:
    route: Route
    errcode: int | None = None  # why not a customer-service message: OUTSIDE or SPENT
    recorded: bool = True  # whether we keep a record of the user's quota (a follower row) to correct


def fallback(due: Due, errcode: int, templates: bool) -> Choice:
    """Where a message goes when the quota lets no customer-service message through."""
    if due.template and templates:
        return Choice(Route.TEMPLATE, errcode)
    return Choice(Route.DROP if due.rank == Rank.BROADCAST else Route.KEEP, errcode)


def choose(due: Iterable[Due], grants: Mapping[str, Grant], now: datetime,
           templates: bool) -> tuple[dict[int, Choice], Counter[str]]:
    """Each row's route, and the customer-service messages planned per openid. A user's rows in
    rank order (answers first), then in the order they were queued. An openid we never heard from
    (no follower row: staff who never wrote) has no record: WeChat decides."""
    choices: dict[int, Choice] = {}
    spent: Counter[str] = Counter()
    for d in sorted(due, key=lambda d: (d.rank, d.id)):
        grant = grants.get(d.openid)
        refusal = grant.refusal(now, spent[d.openid]) if grant is not None else None
        if refusal is None:
            choices[d.id] = Choice(Route.CUSTOM, recorded=grant is not None)
            if grant is not None:
                spent[d.openid] += 1
        else:
            choices[d.id] = fallback(d, refusal, templates)
    return choices, spent


# ---- the records ---------------------------------------------------------------------------------
_f = FOLLOWERS.c
_GRANTS = select(_f.openid, _f.grant_kind, _f.last_interaction_at, _f.grant_used).where(
    _f.openid.in_(bindparam("openids", expanding=True))).order_by(_f.openid)
_KNOWN = select(_f.openid).where(_f.openid.in_(bindparam("openids", expanding=True)))
_SPEND = update(FOLLOWERS).where(_f.openid == bindparam("o")).values(grant_used=_f.grant_used + bindparam("n"))
_OPEN = update(FOLLOWERS).where(_f.openid == bindparam("o")).values(
    last_interaction_at=bindparam("at"), grant_kind=bindparam("kind"), grant_used=0)
_RELEASE = update(OUTBOX).where(OUTBOX.c.status == OutboxStatus.KEPT,
                                OUTBOX.c.openid.in_(bindparam("openids", expanding=True)))


def open_grants(session: Session, opened: Mapping[str, tuple[GrantKind, datetime]], now: datetime) -> None:
    """Record the grants a batch's updates opened (one statement), and send what was kept for
    those users (the writer wakes the outbox)."""
    if not opened:
        return
    conn = session.connection()
    conn.execute(_OPEN, [{"o": o, "kind": kind, "at": at} for o, (kind, at) in sorted(opened.items())])
    if conn.execute(_RELEASE.values(status=OutboxStatus.PENDING, next_attempt_at=now),
                    {"openids": list(opened)}).rowcount:
        session.info["outbox"] = True


def route_claim(session: Session, due: Sequence[Due], now: datetime,
                templates: bool) -> tuple[dict[int, Choice], set[str]]:
    """Choose the routes of a claim's rows and spend the quota they use, in the claim's unit.
    On PostgreSQL the followers' rows are locked, skipping those another unit holds (a batch of
    their updates, another worker): their openids come back busy, their rows to be claimed again."""
    openids = sorted({d.openid for d in due})
    if not openids:
        return {}, set()
    conn = session.connection()
    stmt = _GRANTS.with_for_update(skip_locked=True) if is_postgres(session) else _GRANTS
    grants = {o: Grant(GrantKind(kind), at, used) for o, kind, at, used in conn.execute(stmt, {"openids": openids})}
    busy: set[str] = set()
    if is_postgres(session) and len(grants) < len(openids):
        busy = set(conn.scalars(_KNOWN, {"openids": [o for o in openids if o not in grants]})) - set(grants)
    choices, spent = choose([d for d in due if d.openid not in busy], grants, now, templates)
    if spent:
        conn.execute(_SPEND, [{"o": o, "n": n} for o, n in sorted(spent.items())])
    return choices, busy


def correct_grant(session: Session, openid: str, errcode: int, asked_at: datetime) -> None:
    """WeChat refused a customer-service message our record allowed: it is right. A grant opened
    after the call (the user wrote meanwhile) is left alone."""
    most = max(n for n, _ in LIMITS.values())
    values = {"last_interaction_at": None} if errcode == OUTSIDE else {"grant_used": most}
    session.execute(update(FOLLOWERS).where(_f.openid == openid, _f.last_interaction_at < asked_at).values(**values))
