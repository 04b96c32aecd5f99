"""A distributor's own records in chat, ten to a page: their team's members (团队), the orders that
earned them commission at any depth (团队订单) and their ledger entries (明细).

A page is read in two steps: the keys of its ten rows, one LIMIT/OFFSET range of an index that
holds every column the order and the filter need (so the rows skipped over are never fetched),
then those ten rows. Nothing loads a whole team or ledger, so a page costs about the same at
10,000 members or 100,000 entries (bench/chat_depth.py):

- members: `ix_distributors_inviter_members` (inviter, status, id), newest first; the second
  level in the order of the direct members they came through (each walked the same way);
- team orders: `ix_commissions_receiver_created` (receiver, created_at, order_no);
- entries: `ix_ledger_entries_distributor_created` (distributor, created_at, id).

The counts of a team are indexed counts, its sales this month the running totals
(`distributor_totals`, counted as domain.figures counts credited sales).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, select
from sqlalchemy.orm import Session

from domain.distributor_totals import month_of
from domain.records import share_state
from storage.models import BoundBy, DistributorStatus
from storage.tables import COMMISSIONS, DISTRIBUTOR_TOTALS, DISTRIBUTORS, ENTRIES, ORDERS

PAGE_SIZE = 10
MAX_PAGE = 1_000_000
_PAGE = re.compile(r"第?(\d{1,7})页?", re.ASCII)
_D, _O, _C, _E = DISTRIBUTORS, ORDERS.c, COMMISSIONS.c, ENTRIES.c
BOUND_NAMES = {BoundBy.SCAN: "扫码", BoundBy.CODE: "推广码", BoundBy.LINK: "链接"}


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


def pager_line(word: str, paging: Paging) -> str:
    """The line under a page: where it is and how to get the next one."""
    if paging.number < paging.pages:
        return f"第 {paging.number}/{paging.pages} 页，发送「{word} {paging.number + 1}」查看下一页。"
    return f"第 {paging.number}/{paging.pages} 页，已是最后一页。" if paging.pages > 1 else ""


def past_end_line(word: str, paging: Paging, what: str) -> str:
    return f"没有第 {paging.number} 页：{what}只有 {paging.pages} 页，发送「{word} {paging.pages}」查看最后一页。"


# ---- 团队 ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    level: int  # 1: direct, 2: through a direct member
    name: str
    registered_at: datetime
    bound_by: str | None
    sold: bool
    bought: bool


@dataclass(frozen=True)
class _Level:
    """The active members `level` steps below a distributor: a chain of aliases joined inviter to
    invitee (the steps between may have any status, as commission walks them), top first."""

    steps: list[Any]
    joined: Any
    where: ColumnElement[bool]

    @classmethod
    def of(cls, me_id: int, level: int) -> _Level:
        steps = [_D.alias(f"m{i}") for i in range(level)]
        joined = steps[0]
        for above, below in zip(steps, steps[1:], strict=False):
            joined = joined.join(below, below.c.inviter_id == above.c.id)
        return cls(steps, joined, and_(steps[0].c.inviter_id == me_id, steps[-1].c.status == DistributorStatus.ACTIVE))

    @property
    def member(self) -> Any:
        return self.steps[-1].c

    def select(self, *columns: Any) -> Select[Any]:
        return select(*columns).select_from(self.joined).where(self.where)


def team_levels(session: Session, me_id: int, depth: int, since: datetime) -> list[tuple[int, int]]:
    """(active members, of them registered since `since`) at each level 1..depth."""
    out = []
    for level in range(1, depth + 1):
        m = _Level.of(me_id, level)
        size, new = session.execute(m.select(func.count(), func.coalesce(
            func.sum(case((m.member.registered_at >= since, 1), else_=0)), 0))).one()
        out.append((int(size), int(new)))
    return out


def team_month_sales(session: Session, me_id: int, depth: int, now: datetime) -> int:
    """The credited sales of the team's active members in `now`'s China-time month (fen)."""
    t = DISTRIBUTOR_TOTALS.c
    fen = 0
    for level in range(1, depth + 1):
        m = _Level.of(me_id, level)
        members = m.select(m.member.id).scalar_subquery()
        fen += int(session.scalar(select(func.coalesce(func.sum(t.sales_fen), 0))
                                  .where(t.month == month_of(now), t.distributor_id.in_(members))) or 0)
    return fen


def member_page(session: Session, me_id: int, sizes: list[int], paging: Paging) -> list[Member]:
    """The members on this page: direct members first, then each next level, newest first."""
    ids: list[tuple[int, int]] = []
    start, end = paging.offset, paging.offset + PAGE_SIZE
    before = 0
    for level, size in enumerate(sizes, start=1):
        lo, hi = max(start - before, 0), min(end - before, size)
        if lo < hi:
            m = _Level.of(me_id, level)
            stmt = m.select(m.member.id).order_by(*(s.c.id.desc() for s in m.steps)).offset(lo).limit(hi - lo)
            ids += [(level, i) for i in session.scalars(stmt)]
        before += size
    if not ids:
        return []
    d = _D.c
    bought = exists().where(_O.buyer_openid == d.openid)
    rows = {r.id: r for r in session.execute(
        select(d.id, d.name, d.registered_at, d.bound_by, d.first_sale_at.is_not(None).label("sold"),
               bought.label("bought")).where(d.id.in_([i for _, i in ids])))}
    return [Member(level, rows[i].name, rows[i].registered_at, rows[i].bound_by, bool(rows[i].sold),
                   bool(rows[i].bought)) for level, i in ids]


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


def team_order_count(session: Session, me_id: int) -> int:
    return int(session.scalar(select(func.count()).where(_C.distributor_id == me_id)) or 0)


def team_order_page(session: Session, me_id: int, paging: Paging) -> list[TeamOrder]:
    """The orders that earned the distributor commission on this page, newest commission first."""
    keys = list(session.scalars(select(_C.order_no).where(_C.distributor_id == me_id)
                                .order_by(_C.created_at.desc(), _C.order_no.desc())
                                .offset(paging.offset).limit(PAGE_SIZE)))
    if not keys:
        return []
    seller, buyer = _D.alias("seller"), _D.alias("buyer")
    stmt = (select(_O.order_no, _O.paid_at, _O.amount_fen, _O.refunded_fen, _O.status, _C.depth,
                   seller.c.name, buyer.c.name, _C.amount_fen, _C.reversed_fen, _C.state)
            .select_from(COMMISSIONS.join(ORDERS, _O.order_no == _C.order_no)
                         .join(seller, seller.c.id == _O.distributor_id)
                         .outerjoin(buyer, buyer.c.openid == _O.buyer_openid))
            .where(_C.distributor_id == me_id, _C.order_no.in_(keys)))
    rows = {r[0]: r for r in session.execute(stmt)}
    return [TeamOrder(no, at, amount, refunded, status, depth, seller_name, buyer_name, comm - rev, rev,
                      share_state({"amount_fen": comm, "reversed_fen": rev, "state": state}))
            for no, at, amount, refunded, status, depth, seller_name, buyer_name, comm, rev, state
            in (rows[k] for k in keys)]


# ---- 明细 -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    kind: str
    amount_fen: int
    order_no: str | None
    withdrawal_id: int | None
    created_at: datetime


def entry_count(session: Session, me_id: int) -> int:
    return int(session.scalar(select(func.count()).where(_E.distributor_id == me_id)) or 0)


def entry_page(session: Session, me_id: int, paging: Paging) -> list[Entry]:
    """The distributor's ledger entries on this page, newest first."""
    ids = list(session.scalars(select(_E.id).where(_E.distributor_id == me_id)
                               .order_by(_E.created_at.desc(), _E.id.desc()).offset(paging.offset).limit(PAGE_SIZE)))
    if not ids:
        return []
    rows = {r.id: r for r in session.execute(
        select(_E.id, _E.kind, _E.amount_fen, _E.order_no, _E.withdrawal_id, _E.created_at)
        .where(_E.id.in_(ids)))}
    return [Entry(rows[i].kind, rows[i].amount_fen, rows[i].order_no, rows[i].withdrawal_id, rows[i].created_at)
            for i in ids]
