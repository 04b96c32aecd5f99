"""The programme's figures for the console's 概览: sales, commission and new distributors in a
period, what waits for an admin, daily series for the chart, distributors by rank, this month's
top ten (the 月度推广之星's running totals) and the funnel follow → register → first sale. Sales count as everywhere else
(domain.figures: paid amounts less refunds, cancelled orders left out); commission is the
commission entries less their reversals, by when they were posted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Date, cast, exists, func, literal_column, select
from sqlalchemy.orm import Session

from domain import contests
from domain.figures import COUNTED, SALE_FEN
from domain.formats import CHINA, day_start
from storage.models import DistributorStatus
from storage.models_ledger import EntryKind, WithdrawalStatus
from storage.tables import DISTRIBUTORS, ENTRIES, FOLLOWERS, ORDERS, WITHDRAWALS

COMMISSION_KINDS = (EntryKind.COMMISSION, EntryKind.REVERSAL)


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
    sold: int  # distributors credited with at least one order that was not cancelled

    @staticmethod
    def share(part: int, whole: int) -> str:
        return f"{part * 100 / whole:.1f}%" if whole else "—"


@dataclass(frozen=True)
class Pending:
    count: int
    fen: int


def period(session: Session, start: datetime) -> Period:
    """Figures from `start` until now."""
    o, e, d = ORDERS.c, ENTRIES.c, DISTRIBUTORS.c
    sales, orders = session.execute(select(func.coalesce(func.sum(SALE_FEN), 0), func.count())
                                    .where(o.paid_at >= start, COUNTED)).one()
    commission = session.scalar(select(func.coalesce(func.sum(e.amount_fen), 0))
                                .where(e.created_at >= start, e.kind.in_(COMMISSION_KINDS)))
    joined = session.scalar(select(func.count()).select_from(DISTRIBUTORS).where(d.registered_at >= start))
    return Period(int(sales), int(orders), int(commission or 0), int(joined or 0))


def pending_withdrawals(session: Session) -> Pending:
    w = WITHDRAWALS.c
    count, fen = session.execute(select(func.count(), func.coalesce(func.sum(w.amount_fen), 0))
                                 .where(w.status == WithdrawalStatus.PENDING)).one()
    return Pending(int(count), int(fen))


def _china_day(session: Session, col: Any) -> ColumnElement[Any]:
    """The China-time calendar day of a stored UTC time, in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("Asia/Shanghai", col), Date)
    return func.date(col, literal_column("'+8 hours'"))


def daily(session: Session, now: datetime, days: int) -> tuple[list[date], list[int], list[int]]:
    """The last `days` China-time days, oldest first, with sales and commission per day."""
    last = now.astimezone(CHINA).date()
    since = day_start(now) - timedelta(days=days - 1)
    o, e = ORDERS.c, ENTRIES.c
    sales_day, comm_day = _china_day(session, o.paid_at), _china_day(session, e.created_at)
    sales = dict(session.execute(select(sales_day, func.sum(SALE_FEN)).where(o.paid_at >= since, COUNTED)
                                 .group_by(sales_day)).all())
    commission = dict(session.execute(select(comm_day, func.sum(e.amount_fen))
                                      .where(e.created_at >= since, e.kind.in_(COMMISSION_KINDS))
                                      .group_by(comm_day)).all())
    span = [last - timedelta(days=i) for i in range(days - 1, -1, -1)]

    def of(found: dict[Any, Any], day: date) -> int:
        return int(found.get(day, found.get(day.isoformat(), 0)) or 0)
    return span, [of(sales, d) for d in span], [of(commission, d) for d in span]


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
    d, o = DISTRIBUTORS.c, ORDERS.c
    followers = session.scalar(select(func.count()).select_from(FOLLOWERS))
    registered = session.scalar(select(func.count()).select_from(DISTRIBUTORS))
    # One probe of ix_orders_distributor_paid per distributor (the first order found nearly always counts).
    sold = session.scalar(select(func.count()).select_from(DISTRIBUTORS).where(
        exists().where(o.distributor_id == d.id, COUNTED)))
    return Funnel(int(followers or 0), int(registered or 0), int(sold or 0))
