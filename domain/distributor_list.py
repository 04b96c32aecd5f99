"""The console's 分销员 list at 100,000 distributors: filters (search, rank, status, registered
between two China-time days, an open risk flag), a sort by any figure in either direction, and
pages whose cost follows the page, not the programme.

A figure lives in a table keyed by distributor (domain.distributor_totals for sales and
commission, balances for the balances) or is a grouped count (the team: active direct invitees,
on the (inviter, status) index). A distributor without a row, or with 0, counts 0. Sorting by a
figure reads three segments one after another, each on an index in the sort's order: those with
the figure above 0 (on the figure's index), those at 0 (by id, asking the figure's table whether
a row says otherwise), those below 0; ascending reverses the three. A page reads only as far into
a segment as it needs, so the first pages cost a page; only a page past a segment counts it.
Filters that select few distributors (a name, an open flag) sort just those instead: walking a
figure's index in search of them would read the whole index. The rows of a page are then read by
id, their figures in one query each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, select
from sqlalchemy.orm import Session

from domain.distributor_totals import ALL_TIME, Totals, totals_of
from domain.distributors import PER_PAGE, search_where
from domain.formats import month_of
from domain.figures import teams
from domain.ledger import balances
from domain.records import on_days
from storage.models import DistributorStatus
from storage.models_risk import FlagStatus
from storage.tables import BALANCES, DISTRIBUTOR_TOTALS, DISTRIBUTORS, RISK_FLAGS

# The sorts: the registration order (newest first by default), then each figure.
SORTS = ("registered", "team", "month_sales", "sales", "month_commission", "commission", "available", "pending")
EXPORT_PAGE = 2000
# Filters that select at most this many distributors sort them at once (reading them all costs
# less than walking a figure's index in search of them).
FEW = 2000

_D = DISTRIBUTORS.c
_INVITER = DISTRIBUTORS.alias("inviter")
_INVITEE = DISTRIBUTORS.alias("invitee")


@dataclass(frozen=True)
class Filters:
    """What the list shows: every field optional (empty: no condition), `since`/`until` China-time
    days, both included."""

    query: str = ""
    rank: str = ""
    status: str = ""
    since: date | None = None
    until: date | None = None
    flagged: bool = False
    sort: str = "registered"
    descending: bool = True

    def where(self, session: Session) -> list[ColumnElement[bool]]:
        out = search_where(session, self.query)
        if self.rank:
            out.append(_D.rank == self.rank)
        if self.status:
            out.append(_D.status == self.status)
        out += on_days(_D.registered_at, self.since, self.until)
        if self.flagged:
            out.append(_D.id.in_(select(RISK_FLAGS.c.distributor_id).where(RISK_FLAGS.c.status == FlagStatus.OPEN)))
        return out


@dataclass
class Listed:
    """One row of the list with its figures (fen)."""

    id: int
    code: str
    name: str
    phone: str
    rank: str
    status: str
    registered_at: datetime
    inviter_code: str | None
    inviter_name: str | None
    team: int = 0
    month: Totals = field(default_factory=Totals)
    all_time: Totals = field(default_factory=Totals)
    available_fen: int = 0
    pending_fen: int = 0


@dataclass(frozen=True)
class _Figure:
    """A sortable figure: its rows (`source`, with `id` and `value` columns), whether a
    distributor's figure is other than 0, and a distributor's figure."""

    source: Any  # a table or subquery holding the id and value columns
    id: Any
    value: Any
    where: tuple[ColumnElement[bool], ...]
    nonzero: Callable[[], ColumnElement[bool]]
    of: Callable[[], ColumnElement[Any]]  # a distributor's figure, 0 when none
    negative: bool = True  # whether the figure can be below 0 (a team cannot)


def _table_figure(table: Any, column: str, *where: ColumnElement[bool]) -> _Figure:
    c = table.c
    return _Figure(table, c.distributor_id, c[column], where,
                   lambda: exists().where(c.distributor_id == _D.id, *where, c[column] != 0),
                   lambda: func.coalesce(select(c[column]).where(c.distributor_id == _D.id, *where).scalar_subquery(), 0))


def _team_figure() -> _Figure:
    i = _INVITEE.c
    active = i.status == DistributorStatus.ACTIVE
    sizes = (select(i.inviter_id.label("id"), func.count().label("value"))
             .where(i.inviter_id.is_not(None), active).group_by(i.inviter_id).subquery())
    return _Figure(sizes, sizes.c.id, sizes.c.value, (),
                   lambda: exists().where(i.inviter_id == _D.id, active),
                   lambda: select(func.count()).where(i.inviter_id == _D.id, active).scalar_subquery(), negative=False)


def _figure(sort: str, month: int) -> _Figure:
    t = DISTRIBUTOR_TOTALS.c
    if sort == "team":
        return _team_figure()
    if sort in ("available", "pending"):
        return _table_figure(BALANCES, sort + "_fen")
    period = ALL_TIME if sort in ("sales", "commission") else month
    return _table_figure(DISTRIBUTOR_TOTALS, sort.removeprefix("month_") + "_fen", t.month == period)


def _segments(filters: Filters, where: list[ColumnElement[bool]], month: int, few: bool) -> list[Select[Any]]:
    """The list's order as segments of ids, each read on an index in that order; when the filters
    select `few`, one query that sorts just those by their figure, in the same order."""
    by_id = _D.id.desc() if filters.descending else _D.id.asc()
    if filters.sort not in SORTS[1:]:
        return [select(_D.id).where(*where).order_by(by_id)]
    f = _figure(filters.sort, month)
    if few:
        return [select(_D.id).where(*where).order_by(f.of().desc() if filters.descending else f.of().asc(), by_id)]
    order = (f.value.desc(), f.id.desc()) if filters.descending else (f.value.asc(), f.id.asc())

    def signed(above: bool) -> Select[Any]:
        # the distributors joined in only when a filter asks about them
        source = f.source.join(DISTRIBUTORS, _D.id == f.id) if where else f.source
        return (select(f.id).select_from(source).where(*f.where, f.value > 0 if above else f.value < 0, *where)
                .order_by(*order))
    zero = select(_D.id).where(*where, ~f.nonzero()).order_by(by_id)
    parts = [signed(True), zero, *([signed(False)] if f.negative else [])]
    return parts if filters.descending else parts[::-1]


def page_ids(session: Session, segments: Sequence[Select[Any]], offset: int, limit: int) -> list[int]:
    """`limit` ids from `offset` on, through the segments in turn."""
    ids: list[int] = []
    for seg in segments:
        got = list(session.scalars(seg.offset(offset).limit(limit - len(ids))))
        ids += got
        if len(ids) >= limit:
            break
        if got:
            offset = 0
        else:  # the whole segment lies before the offset
            offset -= session.scalar(select(func.count()).select_from(seg.order_by(None).subquery())) or 0
    return ids


def listed(session: Session, ids: Sequence[int], month: int) -> list[Listed]:
    """The rows of these distributors, in this order, with their figures."""
    if not ids:
        return []
    rows = session.execute(
        select(_D.id, _D.code, _D.name, _D.phone, _D.rank, _D.status, _D.registered_at, _INVITER.c.code,
               _INVITER.c.name).outerjoin(_INVITER, _INVITER.c.id == _D.inviter_id).where(_D.id.in_(ids))).all()
    found = {r[0]: Listed(*r) for r in rows}
    totals, sizes, money = totals_of(session, ids, [ALL_TIME, month]), teams(session, ids, []), balances(session, ids)
    out = []
    for did in ids:
        one = found[did]
        one.team = sizes.get(did, (0, []))[0]
        one.month, one.all_time = totals.get((did, month), Totals()), totals.get((did, ALL_TIME), Totals())
        one.available_fen, one.pending_fen = money[did]["available_fen"], money[did]["pending_fen"]
        out.append(one)
    return out


def _page(session: Session, filters: Filters, now: datetime, offset: int, limit: int,
          few: int = FEW) -> tuple[list[Listed], int]:
    """The rows from `offset` on and how many the filters select. The filters are read once for up
    to `few` + 1 distributors: when they select no more than `few`, those ids are the selection
    (a search by name scans the names once, not once to count and again for the page)."""
    where, month = filters.where(session), month_of(now).key
    some = list(session.scalars(select(_D.id).where(*where).limit(few + 1)))
    if len(some) <= few:
        where, total = [_D.id.in_(some)], len(some)
    else:
        total = session.scalar(select(func.count()).select_from(DISTRIBUTORS).where(*where)) or 0
    ids = page_ids(session, _segments(filters, where, month, total <= few), offset, limit) if offset < total else []
    return listed(session, ids, month), total


def list_page(session: Session, filters: Filters, now: datetime, number: int = 1, per_page: int = PER_PAGE,
              few: int = FEW) -> tuple[list[Listed], int]:
    """One page of the list (numbered from 1) and how many distributors the filters select;
    `few`: up to how many selected are sorted at once rather than read in segments."""
    return _page(session, filters, now, (number - 1) * per_page, per_page, few)


def export_page(session: Session, filters: Filters, now: datetime, offset: int) -> tuple[int, list[Listed]]:
    """The rows after the first `offset`, EXPORT_PAGE at most, and the offset after them."""
    rows, _ = _page(session, filters, now, offset, EXPORT_PAGE)
    return offset + len(rows), rows
