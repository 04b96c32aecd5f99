"""Contests (CONTRACT §4.6): creating them, their running totals, live standings and 排行.

A sales or sku_sales contest keeps one score row per distributor (contest_scores), moved by each
order event's change to the distributor's credited sales inside the contest's window: + the paid
amount, − a refund, − what was left of a cancelled order. Created after orders came in, a contest
is backfilled from them in the unit that creates it. Live standings read the scores by index; a
new_members contest counts its members with one grouped query. Settlement does not trust the
running totals: it recounts from the orders themselves (domain.contest_results).

Places: by value, highest first; a tie goes to whoever reached the value first (then the lower
distributor id); a value of 0 never places; only active distributors of the audience place. An
exited distributor's scores leave the running contests (`withdraw`) and never come back, so a
place counted from the score index alone (排行's own place) is right for an audience of "all".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, case, delete, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain.campaigns import audience_where
from domain.config import Config
from domain.figures import COUNTED, SALE_FEN
from domain.formats import CHINA, month_start
from domain.refusals import Refusal
from storage.db import dialect_insert, is_postgres
from storage.models import DistributorStatus
from storage.models_engage import ContestStatus
from storage.tables import CONTEST_SCORES, CONTESTS, DISTRIBUTORS, ORDERS

SALES_METRICS = ("sales", "sku_sales")
METRICS = (*SALES_METRICS, "new_members")
TOP = 100  # places shown by the API and kept at settlement
STAR_PREFIX = "star:"
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)  # a window's bounds


@dataclass(frozen=True)
class SaleChange:
    """A change to a distributor's credited sales: `fen` > 0 when an order is paid, < 0 on a
    refund or a cancellation; `paid_at` places it in a contest's window (and a day of the
    console's figures). `orders` counts the order: 1 when paid, -1 when cancelled."""

    distributor_id: int
    paid_at: datetime
    sku: str | None
    fen: int
    orders: int = 0


_OPEN_SALES_CONTESTS = select(CONTESTS.c.id, CONTESTS.c.metric, CONTESTS.c.skus, CONTESTS.c.starts_at,
                              CONTESTS.c.ends_at).where(CONTESTS.c.status != ContestStatus.SETTLED,
                                                        CONTESTS.c.metric.in_(SALES_METRICS))
_GONE = select(DISTRIBUTORS.c.id).where(DISTRIBUTORS.c.id.in_(bindparam("ids", expanding=True)),
                                        DISTRIBUTORS.c.status != DistributorStatus.ACTIVE)


def _refused(field: str, problem: str, message: str, chinese: str) -> Refusal:
    """Why a new contest is refused: for /api in English, naming the field; in Chinese for the console."""
    return Refusal("invalid_contest", message, sentence=chinese, details=[{"field": field, "problem": problem}])


def check_window(starts_at: datetime, ends_at: datetime, metric: str, skus: Sequence[str],
                 prizes_fen: Sequence[int]) -> tuple[datetime, datetime]:
    """A new contest's window in UTC (the API's and the console's alike), or a Refusal
    (invalid_contest, naming the field) for a window or fields that do not fit."""
    out_of_range = _refused("starts_at", "out of range", "starts_at and ends_at must lie between 2000 and 2100.",
                            "开始时间和结束时间须在 2000 年到 2100 年之间。")
    try:
        starts_at, ends_at = starts_at.astimezone(UTC), ends_at.astimezone(UTC)
    except OverflowError:
        raise out_of_range from None
    if not (EARLIEST <= starts_at and ends_at < LATEST):
        raise out_of_range
    if ends_at <= starts_at:
        raise _refused("ends_at", "not after starts_at", "ends_at must be after starts_at.",
                       "结束时间必须晚于开始时间。")
    if metric == "sku_sales" and not skus:
        raise _refused("skus", "empty for sku_sales", "A sku_sales contest needs at least one SKU in skus.",
                       "“指定商品销售额”比赛至少要填一个商品编号。")
    if metric == "new_members" and prizes_fen:
        raise _refused("prizes_fen", "prizes on a new_members contest",
                       "A new_members contest carries no prizes: paying for recruitment is the mark of pyramid "
                       "selling, so it is a leaderboard of honour only. Send prizes_fen as [].",
                       "“新增成员”比赛不能设奖金：按拉人头发奖励是传销的特征，这类比赛只是荣誉榜。"
                       "请清空奖金后再创建。")
    return starts_at, ends_at


@functools.cache
def _add_scores(dialect: str) -> Any:
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(CONTEST_SCORES)
    s = CONTEST_SCORES.c
    return stmt.on_conflict_do_update(
        index_elements=["contest_id", "distributor_id"],
        set_={"value": s.value + stmt.excluded.value,
              "reached_at": case((stmt.excluded.value > 0, stmt.excluded.reached_at), else_=s.reached_at)})


def counts(contest: Any, change: SaleChange) -> bool:
    """Whether a change counts in a sales or sku_sales contest (its window, its SKUs)."""
    if not (contest.starts_at <= change.paid_at < contest.ends_at):
        return False
    return contest.metric == "sales" or (change.sku is not None and change.sku in (contest.skus or ()))


def record_sales(session: Session, changes: Sequence[SaleChange]) -> None:
    """Move the running totals of every unsettled sales contest the changes count in: one read of
    the open contests and one statement for all the batch's changes."""
    if not changes:
        return
    contests = session.connection().execute(_OPEN_SALES_CONTESTS).all()
    if not contests:
        return
    # An exited distributor has left the contests (withdraw) and is not put back by a late event.
    gone = set(session.connection().execute(_GONE, {"ids": list({ch.distributor_id for ch in changes})}).scalars())
    totals: dict[tuple[int, int], list[Any]] = {}
    for c in contests:
        for ch in changes:
            if ch.distributor_id not in gone and counts(c, ch):
                t = totals.setdefault((c.id, ch.distributor_id), [0, ch.paid_at, False])
                t[0] += ch.fen
                if ch.fen > 0 and (not t[2] or ch.paid_at > t[1]):
                    t[1], t[2] = ch.paid_at, True
    if totals:
        # In key order: two transactions on PostgreSQL lock the rows in one order, no deadlock.
        rows = [{"contest_id": cid, "distributor_id": did, "value": fen, "reached_at": at}
                for (cid, did), (fen, at, _) in sorted(totals.items()) if fen]
        if rows:
            session.connection().execute(_add_scores(session.get_bind().dialect.name), rows)


def withdraw(session: Session, distributor_id: int) -> None:
    """An exiting distributor leaves every contest not yet settled (their running scores go)."""
    session.execute(delete(CONTEST_SCORES).where(
        CONTEST_SCORES.c.distributor_id == distributor_id,
        CONTEST_SCORES.c.contest_id.in_(select(CONTESTS.c.id).where(CONTESTS.c.status != ContestStatus.SETTLED))))


# ---- creating ------------------------------------------------------------------------------------
def create(session: Session, *, title: str, metric: str, skus: Sequence[str], starts_at: datetime,
           ends_at: datetime, prizes_fen: Sequence[int], audience: Any, now: datetime,
           source: str | None = None) -> int | None:
    """A new contest, running when its window has begun, backfilled from the orders already paid
    in its window. With `source` it is made once: None when that source exists already."""
    assert metric in METRICS and ends_at > starts_at
    assert not (metric == "new_members" and prizes_fen), "recruitment is never paid for"
    stmt = dialect_insert(session, CONTESTS).values(
        title=title, metric=metric, skus=list(skus), starts_at=starts_at, ends_at=ends_at,
        prizes_fen=list(prizes_fen), audience=audience, source=source, created_at=now,
        status=ContestStatus.RUNNING if starts_at <= now else ContestStatus.SCHEDULED)
    if source is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["source"])
    cid = session.execute(stmt.returning(CONTESTS.c.id)).scalar()
    if cid is not None and metric in SALES_METRICS:
        _backfill(session, cid, metric, skus, starts_at, ends_at)
    return cid


def _backfill(session: Session, cid: int, metric: str, skus: Sequence[str], starts_at: datetime,
              ends_at: datetime) -> None:
    """A sales contest's running scores counted from the orders already paid in its window."""
    totals = sales_totals(metric, skus, starts_at, ends_at).subquery()
    active = DISTRIBUTORS.c.status == DistributorStatus.ACTIVE
    rows = (select(literal(cid), totals.c.distributor_id, totals.c.value, totals.c.reached_at)
            .join(DISTRIBUTORS, DISTRIBUTORS.c.id == totals.c.distributor_id).where(active))
    session.execute(CONTEST_SCORES.insert().from_select(
        ["contest_id", "distributor_id", "value", "reached_at"], rows))


def locked(session: Session, contest_id: int) -> Any:
    """A contest's row, locked on PostgreSQL (an edit, an early end and the job's settlement take
    turns); Refusal not_found when there is none."""
    stmt = select(CONTESTS).where(CONTESTS.c.id == contest_id)
    row = session.execute(stmt.with_for_update() if is_postgres(session) else stmt).first()
    if row is None:
        raise Refusal("not_found", f"No contest {contest_id}.", sentence="没有这场比赛。")
    return row


def edit(session: Session, contest_id: int, changes: dict[str, Any], now: datetime) -> list[str]:
    """Change a contest's title, window or prizes before it starts (`changes`: any of title,
    starts_at, ends_at, prizes_fen); the names of the fields that changed. Refusal
    contest_started once it has started (or is settled), invalid_contest for a window or prizes
    that do not fit (check_window). A new window recounts its scores from the orders."""
    c = locked(session, contest_id)
    if c.status != ContestStatus.SCHEDULED or c.starts_at <= now:
        raise Refusal("contest_started", f"Contest {contest_id} has started; only a contest that has not "
                      "started can be edited.", details={"status": c.status})
    new = {"title": c.title, "starts_at": c.starts_at, "ends_at": c.ends_at, "prizes_fen": list(c.prizes_fen or ()),
           **{k: v for k, v in changes.items() if v is not None}}
    new["starts_at"], new["ends_at"] = check_window(new["starts_at"], new["ends_at"], c.metric, c.skus or (),
                                                    new["prizes_fen"])
    changed = [k for k, v in new.items() if v != getattr(c, k)]
    if not changed:
        return []
    session.execute(update(CONTESTS).where(CONTESTS.c.id == contest_id).values(
        **new, status=ContestStatus.RUNNING if new["starts_at"] <= now else ContestStatus.SCHEDULED))
    if c.metric in SALES_METRICS and {"starts_at", "ends_at"} & set(changed):
        session.execute(delete(CONTEST_SCORES).where(CONTEST_SCORES.c.contest_id == contest_id))
        _backfill(session, contest_id, c.metric, c.skus or (), new["starts_at"], new["ends_at"])
    return changed


def sales_totals(metric: str, skus: Sequence[str], starts_at: datetime, ends_at: datetime) -> Select[Any]:
    """(distributor_id, value, reached_at) counted from the orders: credited sales paid in the
    window, less refunds, cancelled orders left out; reached when the last order that still
    counts was paid. Distributors whose value is not above 0 are left out."""
    o = ORDERS.c
    where = [COUNTED, o.paid_at >= starts_at, o.paid_at < ends_at]
    if metric == "sku_sales":
        where.append(o.sku.in_(list(skus)))
    value = func.sum(SALE_FEN)
    # Grouped by `distributor_id + 0`, not the column: SQLite would otherwise walk the
    # (distributor_id, paid_at) index and fetch each order's row from it, a random read each,
    # several times slower than one scan of the table and a sort (bench/contests.py).
    seller = o.distributor_id + 0
    return (select(seller.label("distributor_id"), value.label("value"),
                   func.max(case((SALE_FEN > 0, o.paid_at))).label("reached_at"))
            .where(*where).group_by(seller).having(value > 0))


def member_totals(starts_at: datetime, ends_at: datetime) -> Select[Any]:
    """(distributor_id, value, reached_at) for new_members: the active distributors each one
    invited who registered inside the window; reached when the last of them registered."""
    m = DISTRIBUTORS.alias("member")
    return (select(m.c.inviter_id.label("distributor_id"), func.count().label("value"),
                   func.max(m.c.registered_at).label("reached_at"))
            .where(m.c.inviter_id.is_not(None), m.c.status == DistributorStatus.ACTIVE,
                   m.c.registered_at >= starts_at, m.c.registered_at < ends_at)
            .group_by(m.c.inviter_id))


# ---- standings -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Place:
    place: int
    distributor_id: int
    code: str
    name: str
    openid: str
    value: int


def placed(scores: Any, audience: Any, limit: int, *where: Any) -> Select[Any]:
    """The top `limit` of a (distributor_id, value, reached_at) source in place order, with who
    they are: active distributors of the audience, values above 0."""
    d = DISTRIBUTORS.c
    return (select(scores.c.distributor_id, d.code, d.name, d.openid, scores.c.value)
            .join(DISTRIBUTORS, d.id == scores.c.distributor_id)
            .where(*where, scores.c.value > 0, *audience_where(audience))
            .order_by(scores.c.value.desc(), scores.c.reached_at, scores.c.distributor_id).limit(limit))


def places(session: Session, stmt: Select[Any], params: dict[str, Any] | None = None) -> list[Place]:
    return [Place(i, did, code, name, openid, int(value))
            for i, (did, code, name, openid, value) in enumerate(session.connection().execute(stmt, params),
                                                                 start=1)]


@functools.cache
def _scores_top(limit: int) -> Select[Any]:
    """The top of a sales contest with the audience "all" (排行's case), built once."""
    return placed(CONTEST_SCORES, "all", limit, CONTEST_SCORES.c.contest_id == bindparam("cid"))


def live_standings(session: Session, contest: Any, limit: int = TOP) -> list[Place]:
    """The standings now: the running scores by index (sales metrics), or the members counted."""
    if contest.metric in SALES_METRICS:
        if contest.audience == "all":
            return places(session, _scores_top(limit), {"cid": contest.id})
        return places(session, placed(CONTEST_SCORES, contest.audience, limit,
                                      CONTEST_SCORES.c.contest_id == contest.id))
    return places(session, placed(member_totals(contest.starts_at, contest.ends_at).subquery(),
                                  contest.audience, limit))


# 排行 runs these on every ask: statements built once (building one costs more than running it).
_S = CONTEST_SCORES.c
_MINE = select(_S.value, _S.reached_at).where(_S.contest_id == bindparam("cid"), _S.distributor_id == bindparam("did"))


def _count(*where: Any) -> Any:
    return select(func.count()).select_from(CONTEST_SCORES).where(_S.contest_id == bindparam("cid"), *where) \
        .scalar_subquery()


_ABOVE = select(_count(_S.value > bindparam("v")) + _count(_S.value == bindparam("v"), _S.reached_at < bindparam("r")))
_TIED = select(_S.distributor_id).where(_S.contest_id == bindparam("cid"), _S.value == bindparam("v"),
                                        _S.reached_at == bindparam("r"))


def own_place(session: Session, contest_id: int, distributor_id: int) -> tuple[int, int] | None:
    """(place, value) of a distributor in a sales contest with the audience "all", from the score
    index alone: one more than the rows ranking above theirs. None when they have not placed."""
    conn = session.connection()
    mine = conn.execute(_MINE, {"cid": contest_id, "did": distributor_id}).first()
    if mine is None or mine.value <= 0:
        return None
    at = {"cid": contest_id, "v": mine.value, "r": mine.reached_at}
    above = conn.execute(_ABOVE, at).scalar() or 0
    # Ties to the very instant are rare: the few tied rows are read by the index, not counted
    # through the primary key (which would walk every lower distributor id).
    above += sum(1 for did in conn.execute(_TIED, at).scalars() if did < distributor_id)
    return int(above) + 1, int(mine.value)


# ---- the built-in 月度推广之星 and the job's work ------------------------------------------------------
def star_source(now: datetime) -> str:
    return f"{STAR_PREFIX}{now.astimezone(CHINA):%Y-%m}"


def star_window(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month of `now` in China time: [its first midnight, the next month's)."""
    start = month_start(now)
    return start, (start + timedelta(days=32)).replace(day=1)


def ensure_star(session: Session, config: Config, now: datetime) -> None:
    """This month's 月度推广之星 (metric sales, audience all), made once (by its source)."""
    start, end = star_window(now)
    create(session, title=f"月度推广之星（{start.year}年{start.month}月）", metric="sales", skus=(),
           starts_at=start, ends_at=end, prizes_fen=config.contests.monthly_star_prizes_fen, audience="all",
           now=now, source=star_source(now))


_BY_SOURCE = select(CONTESTS).where(CONTESTS.c.source == bindparam("source"))


def star(session: Session, now: datetime) -> Any | None:
    """This month's 月度推广之星 row, None before the job has made it."""
    return session.connection().execute(_BY_SOURCE, {"source": star_source(now)}).first()


@dataclass(frozen=True)
class Due:
    star_missing: bool
    to_open: bool
    to_settle: list[int]


def due(session: Session, now: datetime) -> Due:
    """What the contests job has to do (a read: nearly always nothing)."""
    c = CONTESTS.c
    return Due(star_missing=star(session, now) is None,
               to_open=bool(session.scalar(select(exists().where(
                   c.status == ContestStatus.SCHEDULED, c.starts_at <= now)))),
               to_settle=list(session.scalars(select(c.id).where(c.status != ContestStatus.SETTLED, c.ends_at <= now)
                                              .order_by(c.ends_at, c.id))))


def open_due(session: Session, now: datetime) -> None:
    session.execute(update(CONTESTS).where(CONTESTS.c.status == ContestStatus.SCHEDULED, CONTESTS.c.starts_at <= now)
                    .values(status=ContestStatus.RUNNING))
