"""The programme's figures for the console's 概览: sales, commission and new distributors in a
period, what waits for an admin, daily series for the chart, distributors by rank, this month's
top ten (the 月度推广之星's running totals) and the funnel follow → register → first sale.

Sales, orders, commission and first sales are read from `daily_totals`, which the order-event
batch keeps as it writes (`add_to_days`): a month is at most 31 rows, whatever the orders number.
They count as everywhere else (domain.figures: paid amounts less refunds on the day the order was
paid, cancelled orders left out); commission is the commission entries less their reversals, also
on the day the order was paid; a first sale on the day that order was paid."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from domain import contests
from domain.contests import SaleChange
from domain.distributor_totals import COMMISSION_KINDS
from domain.formats import CHINA, china_day
from storage.db import adding_upsert
from storage.models import DistributorStatus
from storage.models_ledger import WithdrawalStatus
from storage.tables import DAILY_TOTALS, DISTRIBUTORS, FOLLOWERS, WITHDRAWALS

_FIGURES = ("sales_fen", "orders", "commission_fen", "first_sales")
_D = DISTRIBUTORS.c
_UNSOLD = (select(_D.id).where(_D.id.in_(bindparam("ids", expanding=True)), _D.first_sale_at.is_(None))
           .order_by(_D.id).with_for_update(key_share=True))
_MARK_FIRST_SALE = DISTRIBUTORS.update().where(_D.id == bindparam("did")).values(first_sale_at=bindparam("at"))


@dataclass(frozen=True)
class Period:
    sales_fen: int
    orders: int
    commission_fen: int
    new_distributors: int


@dataclass(frozen=True)
class Funnel:
    followers: int
    registered: int
    sold: int  # distributors credited with a paid order

    @staticmethod
    def share(part: int, whole: int) -> str:
        return f"{part * 100 / whole:.1f}%" if whole else "—"


@dataclass(frozen=True)
class Pending:
    count: int
    fen: int


def add_to_days(session: Session, sales: Sequence[SaleChange], entries: Iterable[Mapping[str, Any]]) -> None:
    """Add an order-event batch to the daily totals: its sales changes, its commission (net of
    reversals: the entries' counted_at) and its first sales on their orders' paid days. One statement, rows in day order
    (two transactions on PostgreSQL lock the rows in one order)."""
    days: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_FIGURES, 0))
    for ch in sales:
        row = days[china_day(ch.paid_at)]
        row["sales_fen"] += ch.fen
        row["orders"] += ch.orders
    for e in entries:
        if e["kind"] in COMMISSION_KINDS:
            days[china_day(e["counted_at"])]["commission_fen"] += e["amount_fen"]
    for at in _first_sales(session, sales):
        days[china_day(at)]["first_sales"] += 1
    rows = [{"day": day, **figures} for day, figures in sorted(days.items()) if any(figures.values())]
    if rows:
        session.connection().execute(adding_upsert(session, DAILY_TOTALS, "day", _FIGURES), rows)


def _first_sales(session: Session, sales: Sequence[SaleChange]) -> list[datetime]:
    """Mark the first sale of the batch's sellers who had none (when its order was paid); the
    times of those marked. Two statements built once, whatever the batch (on PostgreSQL the
    sellers' rows are locked in id order, FOR NO KEY UPDATE as an UPDATE locks them: a concurrent
    batch then sees them marked, and its rows that refer to them (FOR KEY SHARE) do not wait)."""
    first: dict[int, datetime] = {}
    for ch in sales:
        if ch.orders > 0 and (ch.distributor_id not in first or ch.paid_at < first[ch.distributor_id]):
            first[ch.distributor_id] = ch.paid_at
    if not first:
        return []
    conn = session.connection()
    unsold = conn.execute(_UNSOLD, {"ids": sorted(first)}).scalars().all()
    if unsold:
        conn.execute(_MARK_FIRST_SALE, [{"did": did, "at": first[did]} for did in unsold])
    return [first[did] for did in unsold]


def _totals(session: Session, since: date, until: date | None = None) -> dict[date, tuple[int, ...]]:
    t = DAILY_TOTALS.c
    stmt = select(t.day, *(t[f] for f in _FIGURES)).where(t.day >= since)
    if until is not None:
        stmt = stmt.where(t.day <= until)
    return {day: tuple(int(v) for v in rest) for day, *rest in session.execute(stmt)}


def period(session: Session, start: datetime) -> Period:
    """Figures from `start` (the beginning of a China-time day) until now."""
    rows = _totals(session, start.astimezone(CHINA).date()).values()
    d = DISTRIBUTORS.c
    joined = session.scalar(select(func.count()).select_from(DISTRIBUTORS).where(d.registered_at >= start))
    return Period(sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows), int(joined or 0))


def pending_withdrawals(session: Session) -> Pending:
    w = WITHDRAWALS.c
    count, fen = session.execute(select(func.count(), func.coalesce(func.sum(w.amount_fen), 0))
                                 .where(w.status == WithdrawalStatus.PENDING)).one()
    return Pending(int(count), int(fen))


def daily(session: Session, now: datetime, days: int) -> tuple[list[date], list[int], list[int]]:
    """The last `days` China-time days, oldest first, with sales and commission per day."""
    last = now.astimezone(CHINA).date()
    span = [last - timedelta(days=i) for i in range(days - 1, -1, -1)]
    found = _totals(session, span[0], last)
    zero = (0,) * len(_FIGURES)
    return span, [found.get(d, zero)[0] for d in span], [found.get(d, zero)[2] for d in span]


def by_rank(session: Session) -> dict[str, int]:
    """How many distributors (those who have not left) hold each rank key."""
    d = DISTRIBUTORS.c
    return {rank: int(n) for rank, n in session.execute(
        select(d.rank, func.count()).where(d.status != DistributorStatus.EXITED).group_by(d.rank)).all()}


def month_top(session: Session, now: datetime, limit: int = 10) -> list[contests.Place]:
    """This month's top by credited sales: the 月度推广之星's running totals; none before the
    contests job has made it."""
    star = contests.star(session, now)
    return contests.live_standings(session, star, limit) if star is not None else []


def funnel(session: Session) -> Funnel:
    """Followers, distributors, and distributors who have made a first sale (an order credited to
    them was paid, whatever became of it later)."""
    followers = session.scalar(select(func.count()).select_from(FOLLOWERS))
    registered = session.scalar(select(func.count()).select_from(DISTRIBUTORS))
    sold = session.scalar(select(func.coalesce(func.sum(DAILY_TOTALS.c.first_sales), 0)))
    return Funnel(int(followers or 0), int(registered or 0), int(sold or 0))
