"""A distributor's own records in chat, ten to a page: their team's members (团队), the orders that
earned them commission at any depth (团队订单) and their ledger entries (明细).

A page is read in two steps: the keys of its ten rows, one LIMIT/OFFSET range of an index that
holds every column the order and the filter need (so the rows skipped over are never fetched),
then those ten rows. Nothing loads a whole team or ledger, so a page costs about the same at
10,000 members or 100,000 entries (bench/chat_depth.py):

- members: `ix_distributors_inviter_members` (inviter, status, registered_at, id), newest first;
  the second level by the direct member they came through (newest first), then the same way
  (its inviters a list of ids that probes the index, see `_below`);
- team orders: `ix_commissions_receiver_created` (receiver, created_at, order_no);
- entries: `ix_ledger_entries_distributor_created` (distributor, created_at, id).

The sizes of a team and its new members are counts of that index; its sales this month the
running totals (`distributor_totals`, counted as domain.figures counts credited sales). The
statements are built once, at import: making the aliases of a join costs more than running it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Integer, Select, and_, any_, bindparam, case, exists, func, literal, select
from sqlalchemy import union_all
from sqlalchemy.orm import Session

from domain.formats import month_of
from domain.records import share_state
from storage.db import is_postgres
from storage.models import BoundBy, DistributorStatus
from storage.tables import COMMISSIONS, DISTRIBUTOR_TOTALS, DISTRIBUTORS, ENTRIES, ORDERS

PAGE_SIZE = 10
MAX_PAGE = 1_000_000
_PAGE = re.compile(r"第?(\d{1,7})页?", re.ASCII)
_D, _O, _C, _E = DISTRIBUTORS, ORDERS.c, COMMISSIONS.c, ENTRIES.c
BOUND_NAMES = {BoundBy.SCAN: "扫码", BoundBy.CODE: "推广码", BoundBy.LINK: "链接"}
# The parameters of the statements below, all built once: `me` (the distributor's id), a page's
# `offset` and `limit`, the `keys` of its rows.
_ME, _OFFSET, _LIMIT = bindparam("me"), bindparam("offset", type_=Integer), bindparam("limit", type_=Integer)
_KEYS = bindparam("keys", expanding=True)


T = TypeVar("T")


# ---- pages ---------------------------------------------------------------------------------------
def page_number(args: str) -> int | None:
    """The page a command's argument asks for: nothing → 1, `2`, `２` or `第2页` → 2; None for
    anything else."""
    if not args.strip():
        return 1
    m = _PAGE.fullmatch(unicodedata.normalize("NFKC", args).replace(" ", ""))
    return int(m.group(1)) if m and 0 < int(m.group(1)) <= MAX_PAGE else None


@dataclass(frozen=True)
class Paging:
    """Page `number` of `total` rows."""

    number: int
    total: int

    @property
    def pages(self) -> int:
        return max((self.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)

    @property
    def offset(self) -> int:
        return (self.number - 1) * PAGE_SIZE

    @property
    def past_end(self) -> bool:
        return self.number > self.pages


def pager_line(word: str, number: int, more: bool, pages: int | None = None) -> str:
    """The line under page `number` (of `pages`, when known): how to get the next one, if any."""
    where = f"第 {number}/{pages} 页" if pages else f"第 {number} 页"
    if more:
        return f"{where}，回复“{word} {number + 1}”查看下一页。"
    return f"{where}，已是最后一页。" if number > 1 else ""


def past_end_line(word: str, paging: Paging, what: str) -> str:
    return f"没有第 {paging.number} 页：{what}只有 {paging.pages} 页，回复“{word} {paging.pages}”查看最后一页。"


@dataclass(frozen=True)
class ChatList:
    """A list a chat command pages through (明细, 团队订单): its command word, what it lists, what
    is said when it is empty, and its heading."""

    word: str
    what: str
    empty: str
    heading: str


def page_reply(shown: ChatList, args: str, read: Callable[[int], tuple[list[T], bool]], count: Callable[[], int],
               line: Callable[[int, T], str]) -> str:
    """The page of `shown` that `args` asks for: `read(number)` gives its rows and whether more
    follow, `count()` the rows in all (asked only past the end), `line(place, row)` one row."""
    number = page_number(args)
    if number is None:
        return f"页码请用数字，例如：{shown.word} 2"
    rows, more = read(number)
    if not rows and number > 1:
        return past_end_line(shown.word, Paging(number, count()), shown.what)
    if not rows:
        return shown.empty
    offset = (number - 1) * PAGE_SIZE
    lines = [shown.heading, *(line(offset + i + 1, row) for i, row in enumerate(rows))]
    if footer := pager_line(shown.word, number, more):
        lines.append(footer)
    return "\n".join(lines)


# ---- 团队 ------------------------------------------------------------------------------------------
MAX_DEPTH = 3  # levels a team page can name (LEVEL_NAMES); the law keeps teams to two (three levels in all)


@dataclass(frozen=True)
class Member:
    level: int  # 1: direct, 2: through a direct member
    name: str
    registered_at: datetime
    bound_by: str | None
    sold: bool
    bought: bool


def _below(inviter: Any, level: int, postgres: bool) -> ColumnElement[bool]:
    """`inviter` (a distributor's inviter_id) is `level` - 1 steps below the distributor `:me`
    (the steps between may have any status, as commission walks them). Each step above is a
    subquery whose ids probe the (inviter, status, ...) index: on PostgreSQL as `= ANY(ARRAY(...))`,
    an index scan for the whole list that the planner cannot turn into a hash join over every
    distributor (as it does a join or an IN at 100,000 distributors); SQLite probes an IN list in order."""
    if level == 1:
        return inviter == _ME
    above = _D.alias(f"m{level - 1}")
    ids = select(above.c.id).where(_below(above.c.inviter_id, level - 1, postgres))
    return inviter == any_(func.array(ids.scalar_subquery())) if postgres else inviter.in_(ids)


@dataclass(frozen=True)
class _Level:
    """The active members `level` steps below the distributor `:me`."""

    table: Any
    where: ColumnElement[bool]

    @classmethod
    def of(cls, level: int, postgres: bool) -> _Level:
        m = _D.alias("m")
        return cls(m, and_(_below(m.c.inviter_id, level, postgres), m.c.status == DistributorStatus.ACTIVE))

    @property
    def member(self) -> Any:
        return self.table.c

    def select(self, *columns: Any) -> Select[Any]:
        return select(*columns).select_from(self.table).where(self.where)


_T = DISTRIBUTOR_TOTALS.c
_MONTH = bindparam("month")


def _level_figures(n: int, lv: _Level, sales: bool) -> Select[Any]:
    """Level n's size, new members since `:since` and (with `sales`) credited sales in `:month`:
    their running totals, one key lookup each, in the same pass over the level's index range."""
    new = func.coalesce(func.sum(case((lv.member.registered_at >= bindparam("since"), 1), else_=0)), 0)
    if not sales:
        return lv.select(literal(n), func.count(), new, literal(0))
    return (select(literal(n), func.count(), new, func.coalesce(func.sum(_T.sales_fen), 0))
            .select_from(lv.table.outerjoin(DISTRIBUTOR_TOTALS, and_(_T.distributor_id == lv.member.id,
                                                                     _T.month == _MONTH)))
            .where(lv.where))


# Built once per database kind (an alias's columns cost more to make than the query to run); run
# with parameters. Level 0 is the distributor: their own sales this month.
_OWN = select(literal(0), literal(1), literal(0), func.coalesce(func.sum(_T.sales_fen), 0)).where(
    _T.distributor_id == _ME, _T.month == _MONTH)
_LEVELS = {(pg, level): _Level.of(level, pg) for pg in (False, True) for level in range(1, MAX_DEPTH + 1)}
_FIGURES = {(pg, depth, sales): union_all(_OWN, *(_level_figures(n, _LEVELS[pg, n], sales)
                                                  for n in range(1, depth + 1)))
            for pg in (False, True) for depth in range(1, MAX_DEPTH + 1) for sales in (True, False)}
# A level's members newest first: by the member above them they came through (newest first: ids
# grow), then by when they joined; the index's order, so no sort.
_MEMBER_IDS = {key: lv.select(lv.member.id).order_by(lv.member.inviter_id.desc(), lv.member.registered_at.desc(),
                                                     lv.member.id.desc()).limit(_LIMIT).offset(_OFFSET)
               for key, lv in _LEVELS.items()}
_MEMBERS = select(_D.c.id, _D.c.name, _D.c.registered_at, _D.c.bound_by, _D.c.first_sale_at.is_not(None),
                  exists().where(_O.buyer_openid == _D.c.openid)).where(_D.c.id.in_(_KEYS))


@dataclass(frozen=True)
class TeamFigures:
    levels: list[tuple[int, int]]  # (active members, of them new) at each level, direct members first
    team_sales_fen: int  # the members' credited sales this month
    own_sales_fen: int  # the distributor's


def team_figures(session: Session, me_id: int, depth: int, now: datetime, since: datetime, *,
                 sales: bool = True) -> TeamFigures:
    """The team's sizes at levels 1..depth (≤ MAX_DEPTH), its members registered since `since`,
    and credited sales in `now`'s China-time month (as domain.figures counts them; 0 without
    `sales`, which saves a key lookup per member), one statement."""
    rows = {n: (int(size), int(new), int(fen)) for n, size, new, fen in session.connection().execute(
        _FIGURES[is_postgres(session), depth, sales], {"me": me_id, "since": since, "month": month_of(now).key})}
    return TeamFigures([rows[n][:2] for n in range(1, depth + 1)], sum(rows[n][2] for n in range(1, depth + 1)),
                       rows[0][2])


def member_page(session: Session, me_id: int, sizes: list[int], paging: Paging) -> list[Member]:
    """The members on this page: direct members first, then each next level, newest first."""
    ids: list[tuple[int, int]] = []
    start, end = paging.offset, paging.offset + PAGE_SIZE
    before = 0
    for level, size in enumerate(sizes, start=1):
        lo, hi = max(start - before, 0), min(end - before, size)
        if lo < hi:
            ids += [(level, i) for i in session.connection().execute(
                _MEMBER_IDS[is_postgres(session), level], {"me": me_id, "offset": lo, "limit": hi - lo}).scalars()]
        before += size
    if not ids:
        return []
    rows = {r[0]: r for r in session.connection().execute(_MEMBERS, {"keys": [i for _, i in ids]})}
    return [Member(level, *(rows[i][1:4]), bool(rows[i][4]), bool(rows[i][5])) for level, i in ids]


# ---- 团队订单 --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeamOrder:
    order_no: str
    paid_at: datetime
    amount_fen: int
    refunded_fen: int
    status: str
    depth: int  # 0: credited to the distributor; 1, 2: to a member above whom they earn
    seller: str  # the credited distributor's name
    buyer: str | None  # the buyer's name when the buyer is a distributor
    commission_fen: int  # what is left of their commission
    reversed_fen: int
    state: str  # pending, available or reversed (domain.records.share_state)


_ORDER_KEYS = (select(_C.order_no).where(_C.distributor_id == _ME)
               .order_by(_C.created_at.desc(), _C.order_no.desc()).offset(_OFFSET).limit(_LIMIT))
_SELLER, _BUYER = _D.alias("seller"), _D.alias("buyer")
_ORDERS = (select(_O.order_no, _O.paid_at, _O.amount_fen, _O.refunded_fen, _O.status, _C.depth, _SELLER.c.name,
                  _BUYER.c.name, _C.amount_fen, _C.reversed_fen, _C.state)
           .select_from(COMMISSIONS.join(ORDERS, _O.order_no == _C.order_no)
                        .join(_SELLER, _SELLER.c.id == _O.distributor_id)
                        .outerjoin(_BUYER, _BUYER.c.openid == _O.buyer_openid))
           .where(_C.distributor_id == _ME, _C.order_no.in_(_KEYS)))


def team_order_count(session: Session, me_id: int) -> int:
    return int(session.scalar(select(func.count()).where(_C.distributor_id == me_id)) or 0)


def _keys(session: Session, stmt: Select[Any], me_id: int, number: int) -> tuple[list[Any], bool]:
    """Page `number`'s keys of an ordered key query, and whether another page follows."""
    keys = list(session.connection().execute(stmt, {"me": me_id, "offset": (number - 1) * PAGE_SIZE,
                                                    "limit": PAGE_SIZE + 1}).scalars())
    return keys[:PAGE_SIZE], len(keys) > PAGE_SIZE


def team_order_page(session: Session, me_id: int, number: int) -> tuple[list[TeamOrder], bool]:
    """The orders on page `number` that earned the distributor commission, newest commission
    first, and whether another page follows."""
    keys, more = _keys(session, _ORDER_KEYS, me_id, number)
    if not keys:
        return [], more
    rows = {r[0]: r for r in session.connection().execute(_ORDERS, {"me": me_id, "keys": keys})}
    return [TeamOrder(no, at, amount, refunded, status, depth, seller_name, buyer_name, comm - rev, rev,
                      share_state({"amount_fen": comm, "reversed_fen": rev, "state": state}))
            for no, at, amount, refunded, status, depth, seller_name, buyer_name, comm, rev, state
            in (rows[k] for k in keys)], more


# ---- 明细 -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    kind: str
    amount_fen: int
    order_no: str | None
    withdrawal_id: int | None
    created_at: datetime


_ENTRY_KEYS = (select(_E.id).where(_E.distributor_id == _ME)
               .order_by(_E.created_at.desc(), _E.id.desc()).offset(_OFFSET).limit(_LIMIT))
_ENTRIES = select(_E.id, _E.kind, _E.amount_fen, _E.order_no, _E.withdrawal_id, _E.created_at).where(_E.id.in_(_KEYS))


def entry_count(session: Session, me_id: int) -> int:
    return int(session.scalar(select(func.count()).where(_E.distributor_id == me_id)) or 0)


def entry_page(session: Session, me_id: int, number: int) -> tuple[list[Entry], bool]:
    """The distributor's ledger entries on page `number`, newest first, and whether another page
    follows."""
    ids, more = _keys(session, _ENTRY_KEYS, me_id, number)
    if not ids:
        return [], more
    rows = {r[0]: r for r in session.connection().execute(_ENTRIES, {"keys": ids})}
    return [Entry(*rows[i][1:]) for i in ids], more
