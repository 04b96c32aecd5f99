"""推广统计: the distributors at the top of a period by credited sales, by commission earned and by
team growth, each counted as domain.figures counts it (the weekly report, 收益, 团队, the month's
contest): sales are paid amounts less refunds by the day the order was paid, cancelled orders left
out; commission is the earning entries (commission, reversal, reward, adjustment), an order's on
the day it was paid and the others on the day they were posted (domain.figures.ENTRY_COUNTED_AT);
growth is the active direct invitees who registered in the period. Only active distributors are
ranked, as the 月度推广之星 ranks them; ties go to the earlier registered.

A whole month's sales are read from the sums the order batches keep per distributor and month
(`distributor_totals`, on its sales index); any other period takes one grouped statement per
ranking, on an index range of the period: orders by `ix_orders_paid`,
entries by `ix_ledger_entries_counted` (both hold every column the sum reads), new members by the
distributors' registered_at index; the top of the grouped rows is joined to who they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.figures import COUNTED, ENTRY_COUNTED_AT, SALE_FEN
from domain.formats import CHINA, day_after, day_from, month_of
from domain.ledger import EARNING_KINDS
from domain.records import read_days
from storage.models import DistributorStatus
from storage.tables import DISTRIBUTORS, DISTRIBUTOR_TOTALS as TOTALS, ENTRIES, ORDERS

TOP = 20
PERIODS = {"month": "本月", "last": "上月", "range": "自选日期"}


@dataclass(frozen=True)
class Period:
    key: str  # month, last or range
    start: datetime
    end: datetime
    since: date  # the first and last China-time days, for the form and the heading
    until: date

    @property
    def label(self) -> str:
        return f"{PERIODS[self.key]}（{self.since} 至 {self.until}）"


def period_of(query: Mapping[str, str], now: datetime) -> tuple[Period, list[str]]:
    """The period a query chooses: this month (the default, until today), last month, or the days
    `since`–`until` (both included); what cannot be read falls back to this month."""
    this = month_of(now)
    key, problems = query.get("period", "month"), []
    if key == "last":
        last = this.previous
        return Period(key, last.start, last.end, last.start.date(), last.end.date() - timedelta(days=1)), problems
    if key == "range":
        since, until = read_days(query, problems)
        if since and until:
            return Period(key, day_from(since), day_after(until), since, until), problems
        problems.append("请同时填写开始和结束日期；下面是本月的排名。")
    return Period("month", this.start, this.end, this.start.date(), now.astimezone(CHINA).date()), problems


@dataclass(frozen=True)
class Ranked:
    place: int
    code: str
    name: str
    value: int  # fen, or members


# Who is not ranked: few (suspended or gone), so left out before the grouped rows are sorted, and
# only the top is joined to who they are.
_UNRANKED = select(DISTRIBUTORS.c.id).where(DISTRIBUTORS.c.status != DistributorStatus.ACTIVE)


def _top(session: Session, key: Any, value: Any, where: list[Any], limit: int) -> list[Ranked]:
    """The first `limit` of `value` summed per `key` (a distributor's id) over the rows `where`
    chooses, highest first, with who they are."""
    top = (select(key.label("distributor_id"), value.label("value")).where(*where, key.not_in(_UNRANKED))
           .group_by(key).having(value > 0).order_by(value.desc(), key).limit(limit).subquery())
    return _named(session, top)


def _named(session: Session, top: Any) -> list[Ranked]:
    """The places of `top` (distributor_id, value; at most a page of rows), with who they are."""
    d = DISTRIBUTORS.c
    rows = session.execute(select(d.code, d.name, top.c.value).join(DISTRIBUTORS, d.id == top.c.distributor_id)
                           .order_by(top.c.value.desc(), d.id))
    return [Ranked(i, code, name, int(value)) for i, (code, name, value) in enumerate(rows, start=1)]


def top_sales(session: Session, period: Period, limit: int = TOP) -> list[Ranked]:
    if period.key != "range":  # a whole month: its sums are kept (domain.distributor_totals), read on their index
        t = TOTALS.c
        return _named(session, select(t.distributor_id, t.sales_fen.label("value"))
                      .where(t.month == month_of(period.start).key, t.sales_fen > 0, t.distributor_id.not_in(_UNRANKED))
                      .order_by(t.sales_fen.desc(), t.distributor_id).limit(limit).subquery())
    o = ORDERS.c
    return _top(session, o.distributor_id, func.sum(SALE_FEN),
                [o.paid_at >= period.start, o.paid_at < period.end, COUNTED], limit)


def top_earnings(session: Session, period: Period, limit: int = TOP) -> list[Ranked]:
    e = ENTRIES.c
    return _top(session, e.distributor_id, func.sum(e.amount_fen),
                [ENTRY_COUNTED_AT >= period.start, ENTRY_COUNTED_AT < period.end, e.kind.in_(EARNING_KINDS)], limit)


def top_growth(session: Session, period: Period, limit: int = TOP) -> list[Ranked]:
    m = DISTRIBUTORS.alias("member").c
    return _top(session, m.inviter_id, func.count(), [m.registered_at >= period.start, m.registered_at < period.end,
                                                      m.inviter_id.is_not(None), m.status == DistributorStatus.ACTIVE],
                limit)
