"""Distributors' figures as the contract counts them, for many distributors at once: one grouped
query each (session first), so that a report over 100,000 distributors pages through them in
batches. The weekly report, the 团队 report and rank promotion count the same way, here.

- credited sales: the paid amount of orders credited to the distributor (depth 0) and paid inside
  a window, less their refunds; a cancelled order counts nothing (CONTRACT §4.6 `sales`);
- personal sales (for ranks, §3): the same for completed orders, all time;
- earnings: the ledger entries that are not withdrawals: commission and its reversals on the day
  their order was paid (as sales are: an order's figures fall on one China-time day, whenever its
  events arrived), rewards and adjustments when they were posted (as 收益 counts);
- team: the active distributors invited directly; new members: those of them who registered
  inside a window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, func, or_, select
from sqlalchemy.orm import Session

from domain.formats import china_day
from domain.ledger import EARNING_KINDS
from storage.models import DistributorStatus
from storage.models_ledger import OrderStatus
from storage.tables import DISTRIBUTORS, ENTRIES, ORDERS

# [start, end) in time; an end of None leaves the window open.
Window = tuple[datetime, datetime | None]


@dataclass(frozen=True)
class Sales:
    fen: int = 0  # paid amounts less refunds
    orders: int = 0  # orders paid (refunded or not)


@dataclass(frozen=True)
class Member:
    """A direct invitee and their credited sales in each window."""

    id: int
    name: str
    sales: list[Sales]


SALE_FEN = ORDERS.c.amount_fen - ORDERS.c.refunded_fen
COUNTED = ORDERS.c.status != OrderStatus.CANCELLED


# The instant a figure counts a ledger entry at: an entry of an order (commission, reversal) when
# the order was paid, any other (reward, adjustment) when it was posted (set as it is appended).
ENTRY_COUNTED_AT = ENTRIES.c.counted_at
# An entry is posted when its event arrives, after the order was paid, so an entry counted in a
# window was posted after its start: a distributor's entries are a range of their posting-time
# index. The slack covers a shop whose clock runs ahead of ours (an occurred_at a little after we
# received it).
POSTED_SLACK = timedelta(days=1)


def posted_from(start: datetime) -> datetime:
    """The earliest posting time of an entry that may count from `start` on."""
    return start - POSTED_SLACK


def posted_since(start: datetime) -> ColumnElement[bool]:
    """Entries that may count from `start` on (with ENTRY_COUNTED_AT's own test)."""
    return ENTRIES.c.created_at >= posted_from(start)


def _inside(col: Any, window: Window) -> ColumnElement[bool]:
    start, end = window
    return col >= start if end is None else and_(col >= start, col < end)


def _any_window(col: Any, windows: Sequence[Window]) -> ColumnElement[bool]:
    return or_(*(_inside(col, w) for w in windows))


def _sum_in(col: Any, value: Any, window: Window) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((_inside(col, window), value), else_=0)), 0)


def _sales_columns(windows: Sequence[Window]) -> list[ColumnElement[Any]]:
    """Per window: the credited fen, then the number of orders."""
    return [c for w in windows for c in (_sum_in(ORDERS.c.paid_at, SALE_FEN, w), _sum_in(ORDERS.c.paid_at, 1, w))]


def _sales(values: Sequence[Any]) -> list[Sales]:
    return [Sales(int(values[i]), int(values[i + 1])) for i in range(0, len(values), 2)]


def credited_sales(session: Session, ids: Sequence[int], windows: Sequence[Window]) -> dict[int, list[Sales]]:
    """Each distributor's credited sales in each window; those without any are left out."""
    if not ids:
        return {}
    o = ORDERS.c
    stmt = (select(o.distributor_id, *_sales_columns(windows))
            .where(o.distributor_id.in_(ids), COUNTED, _any_window(o.paid_at, windows)).group_by(o.distributor_id))
    return {did: _sales(rest) for did, *rest in session.execute(stmt)}


def team_sales(session: Session, ids: Sequence[int], windows: Sequence[Window]) -> dict[int, list[Member]]:
    """For each distributor, their active direct invitees who sold in any window, with their sales."""
    if not ids:
        return {}
    o, d = ORDERS.c, DISTRIBUTORS.c
    stmt = (select(d.inviter_id, d.id, d.name, *_sales_columns(windows))
            .select_from(ORDERS.join(DISTRIBUTORS, d.id == o.distributor_id))
            .where(d.inviter_id.in_(ids), d.status == DistributorStatus.ACTIVE, COUNTED,
                   _any_window(o.paid_at, windows))
            .group_by(d.inviter_id, d.id, d.name))
    out: dict[int, list[Member]] = defaultdict(list)
    for inviter, member, name, *rest in session.execute(stmt):
        out[inviter].append(Member(member, name, _sales(rest)))
    return dict(out)


def personal_sales(session: Session, ids: Sequence[int]) -> dict[int, int]:
    """Completed personal sales, all time, less refunds (the rank requirement)."""
    if not ids:
        return {}
    o = ORDERS.c
    stmt = (select(o.distributor_id, func.sum(SALE_FEN))
            .where(o.distributor_id.in_(ids), o.completed_at.is_not(None), COUNTED).group_by(o.distributor_id))
    return {did: int(fen or 0) for did, fen in session.execute(stmt)}


_INVITEES = DISTRIBUTORS.alias("invitee")
_RANK_FIGURES = select(
    DISTRIBUTORS.c.id, DISTRIBUTORS.c.openid, DISTRIBUTORS.c.rank,
    select(func.coalesce(func.sum(SALE_FEN), 0)).where(
        ORDERS.c.distributor_id == DISTRIBUTORS.c.id, ORDERS.c.completed_at.is_not(None), COUNTED).scalar_subquery(),
    select(func.count()).select_from(_INVITEES).where(
        _INVITEES.c.inviter_id == DISTRIBUTORS.c.id, _INVITEES.c.status == DistributorStatus.ACTIVE).scalar_subquery(),
).where(DISTRIBUTORS.c.id.in_(bindparam("ids", expanding=True)), DISTRIBUTORS.c.status == DistributorStatus.ACTIVE,
        DISTRIBUTORS.c.rank != bindparam("top"))


def rank_figures(session: Session, ids: Sequence[int], top: str) -> list[tuple[int, str, str, int, int]]:
    """(id, openid, rank, personal sales, team size) of each of these active distributors below
    the `top` rank: what promotion needs, in one statement built once (it runs with every batch
    of order events that completes one)."""
    if not ids:
        return []
    return [(did, openid, rank, int(fen), int(size)) for did, openid, rank, fen, size
            in session.connection().execute(_RANK_FIGURES, {"ids": list(ids), "top": top})]


def earnings(session: Session, ids: Sequence[int], windows: Sequence[Window]) -> dict[int, list[int]]:
    """Net earnings (commission less reversals, rewards, adjustments) counted in each window
    (ENTRY_COUNTED_AT)."""
    if not ids:
        return {}
    e = ENTRIES.c
    stmt = (select(e.distributor_id, *(_sum_in(ENTRY_COUNTED_AT, e.amount_fen, w) for w in windows))
            .where(e.distributor_id.in_(ids), e.kind.in_(EARNING_KINDS), posted_since(min(s for s, _ in windows)),
                   _any_window(ENTRY_COUNTED_AT, windows))
            .group_by(e.distributor_id))
    return {did: [int(v) for v in rest] for did, *rest in session.execute(stmt)}


def teams(session: Session, ids: Sequence[int], windows: Sequence[Window]) -> dict[int, tuple[int, list[int]]]:
    """Each distributor's team size (active direct invitees) and how many of them registered in
    each window; distributors without a team are left out."""
    if not ids:
        return {}
    d = DISTRIBUTORS.c
    stmt = (select(d.inviter_id, func.count(), *(_sum_in(d.registered_at, 1, w) for w in windows))
            .where(d.inviter_id.in_(ids), d.status == DistributorStatus.ACTIVE).group_by(d.inviter_id))
    return {did: (int(size), [int(v) for v in rest]) for did, size, *rest in session.execute(stmt)}


def sales_by_time(session: Session, distributor_id: int, window: Window) -> list[tuple[datetime, int]]:
    """(paid at, credited fen) of each order credited to the distributor and paid in the window."""
    o = ORDERS.c
    stmt = select(o.paid_at, SALE_FEN).where(o.distributor_id == distributor_id, COUNTED, _inside(o.paid_at, window))
    return [(at, int(fen)) for at, fen in session.execute(stmt)]


def daily_totals(rows: Iterable[tuple[datetime, int]], last_day: date, days: int) -> list[tuple[date, int]]:
    """Amounts summed per China-time day for the `days` days ending with `last_day`, oldest first."""
    per_day: dict[date, int] = defaultdict(int)
    for at, fen in rows:
        per_day[china_day(at)] += fen
    return [(d, per_day.get(d, 0)) for d in (last_day - timedelta(days=i) for i in range(days - 1, -1, -1))]
