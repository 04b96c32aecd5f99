"""推广统计: the distributors at the top of a period by credited sales, by commission earned and by
team growth, each counted as domain.figures counts it (the weekly report, 收益, 团队, the month's
contest): sales are paid amounts less refunds by the day the order was paid, cancelled orders left
out; commission is the earning entries (commission, reversal, reward, adjustment) by the day they
were posted; growth is the active direct invitees who registered in the period. Only active
distributors are ranked, as the 月度推广之星 ranks them; ties go to the earlier registered.

One grouped statement per ranking, on an index range of the period: orders by `ix_orders_paid`,
entries by `ix_ledger_entries_posted` (both hold every column the sum reads), new members by the
distributors' registered_at index; the top of the grouped rows is joined to who they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from domain.figures import COUNTED, SALE_FEN
from domain.formats import CHINA, month_start
from domain.ledger import EARNING_KINDS
from domain.records import read_days
from storage.models import DistributorStatus
from storage.tables import DISTRIBUTORS, ENTRIES, ORDERS

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
    this = month_start(now)
    key, problems = query.get("period", "month"), []
    if key == "last":
        start = (this - timedelta(days=1)).replace(day=1)
        return Period(key, start, this, start.date(), this.date() - timedelta(days=1)), problems
    if key == "range":
        since, until = read_days(query, problems)
        if since and until:
            return (Period(key, datetime.combine(since, time(), CHINA),
                           datetime.combine(until + timedelta(days=1), time(), CHINA), since, until), problems)
        problems.append("请同时填写开始和结束日期；下面是本月的排名。")
    end = (this + timedelta(days=32)).replace(day=1)
    return Period("month", this, end, this.date(), now.astimezone(CHINA).date()), problems


@dataclass(frozen=True)
class Ranked:
    place: int
    code: str
    name: str
    value: int  # fen, or members


def _top(session: Session, grouped: Select[Any], limit: int) -> list[Ranked]:
    """The first `limit` of (distributor_id, value) rows, highest value first, with who they are."""
    g, d = grouped.subquery(), DISTRIBUTORS.c
    rows = session.execute(select(d.code, d.name, g.c.value).join(DISTRIBUTORS, d.id == g.c.distributor_id)
                           .where(d.status == DistributorStatus.ACTIVE, g.c.value > 0)
                           .order_by(g.c.value.desc(), d.id).limit(limit))
    return [Ranked(i, code, name, int(value)) for i, (code, name, value) in enumerate(rows, start=1)]


def top_sales(session: Session, period: Period, limit: int = TOP) -> list[Ranked]:
    o = ORDERS.c
    return _top(session, select(o.distributor_id, func.sum(SALE_FEN).label("value"))
                .where(o.paid_at >= period.start, o.paid_at < period.end, COUNTED).group_by(o.distributor_id), limit)


def top_earnings(session: Session, period: Period, limit: int = TOP) -> list[Ranked]:
    e = ENTRIES.c
    return _top(session, select(e.distributor_id, func.sum(e.amount_fen).label("value"))
                .where(e.created_at >= period.start, e.created_at < period.end, e.kind.in_(EARNING_KINDS))
                .group_by(e.distributor_id), limit)


def top_growth(session: Session, period: Period, limit: int = TOP) -> list[Ranked]:
    m = DISTRIBUTORS.alias("member").c
    return _top(session, select(m.inviter_id.label("distributor_id"), func.count().label("value"))
                .where(m.registered_at >= period.start, m.registered_at < period.end, m.inviter_id.is_not(None),
                       m.status == DistributorStatus.ACTIVE).group_by(m.inviter_id), limit)
