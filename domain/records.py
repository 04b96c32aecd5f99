"""The back office's records: the ledger as 佣金记录 filters, totals and pages it, orders as 订单
finds them (by number, exact or a prefix; by distributor, status, paid day), and one order with
everything that happened to it (events, commissions per level, reversals). The console's pages
and GET /api/orders/{order_no} read them here; each query is a range of one index:

- entries by posting time: `ix_ledger_entries_posted` (created_at, kind, distributor_id,
  amount_fen) holds what a page's totals sum, so totals never fetch a row; by distributor:
  (distributor_id, created_at);
- orders by paid time: `ix_orders_paid` (paid_at, distributor_id, status, amounts); by number:
  the primary key, a prefix as a key range; by distributor: (distributor_id, paid_at);
- an order's reversals: the unique (distributor_id, kind, ref) of its receivers and refund or
  cancel events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from domain.commission import CANCELLED, REFUNDED, STATUS_NAMES
from domain.formats import day_bounds, month_start
from domain.ledger import KIND_NAMES
from storage.models_ledger import EntryKind
from storage.tables import COMMISSIONS, DISTRIBUTORS, ENTRIES, EVENTS, ORDERS

PAGE_SIZE = 50
EVENT_NAMES = {"paid": "付款", "shipped": "发货", "completed": "完成", "refunded": "退款", "cancelled": "取消"}
SHARE_NAMES = {"pending": "待结算", "available": "可提现", "reversed": "已冲回"}  # a commission's state
_D = DISTRIBUTORS.c


def on_days(column: Any, since: date | None, until: date | None) -> list[ColumnElement[bool]]:
    """`column` (an instant) on the China-time days `since`–`until`, both included; none is open."""
    start, end = day_bounds(since, until)
    return [*((column >= start,) if start else ()), *((column < end,) if end else ())]


def read_days(query: Mapping[str, str], problems: list[str]) -> tuple[date | None, date | None]:
    """The days `since` and `until` (China time, both included) a console filter names; what
    cannot be read is left out and said in `problems`."""
    days: list[date | None] = []
    for name in ("since", "until"):
        raw = query.get(name, "").strip()
        try:
            days.append(date.fromisoformat(raw) if raw else None)
        except ValueError:
            problems.append(f"日期“{raw[:20]}”看不懂，请用 2026-12-01 这样的格式。")
            days.append(None)
    since, until = days
    if since and until and until < since:
        problems.append(f"结束日期 {until} 早于开始日期 {since}，已忽略日期。")
        return None, None
    return since, until


def code_of(query: Mapping[str, str]) -> str:
    """A console filter's distributor code, as codes are written (upper case, at most 16)."""
    return query.get("code", "").strip().upper()[:16]


def _distributor(code: str) -> Any:
    """The id of the distributor with this code, as a subquery (its unique index), so that the
    outer query walks that distributor's own index."""
    return select(_D.id).where(_D.code == code).scalar_subquery()


def _encoded(pairs: tuple[tuple[str, Any], ...]) -> str:
    return urlencode({k: v for k, v in pairs if v})


# ---- 佣金记录: the ledger ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LedgerFilter:
    kind: str = ""
    code: str = ""
    since: date | None = None
    until: date | None = None

    @classmethod
    def of(cls, query: Mapping[str, str], now: datetime) -> tuple[LedgerFilter, list[str]]:
        """The filter a query names; a query that names no days at all (the page's first visit)
        means this month, and an empty `since` means from the beginning."""
        problems: list[str] = []
        since, until = read_days(query, problems)
        if "since" not in query and "until" not in query:
            since = month_start(now).date()
        kind = query.get("kind", "")
        return cls(kind if kind in KIND_NAMES else "", code_of(query), since, until), problems

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        return day_bounds(self.since, self.until)

    def narrowing(self) -> list[ColumnElement[bool]]:
        """The kind and distributor conditions (the days are `bounds`)."""
        e = ENTRIES.c
        return [c for c in ((e.kind == self.kind) if self.kind else None,
                             (e.distributor_id == _distributor(self.code)) if self.code else None) if c is not None]

    def where(self) -> list[ColumnElement[bool]]:
        return [*self.narrowing(), *on_days(ENTRIES.c.created_at, self.since, self.until)]

    def query(self) -> str:
        """The filter as a query string; `since` is always there (empty: from the beginning)."""
        return urlencode({"since": self.since or "", **{k: v for k, v in (("until", self.until), ("kind", self.kind),
                                                                          ("code", self.code)) if v}})


def ledger_page(session: Session, f: LedgerFilter, page_no: int) -> tuple[list[Any], bool]:
    """A page (from 1) of the filtered entries, newest first, with who they are; and whether
    another page follows."""
    e = ENTRIES.c
    rows = session.execute(
        select(e.id, e.created_at, e.kind, e.amount_fen, e.order_no, e.withdrawal_id, _D.code, _D.name)
        .join(DISTRIBUTORS, _D.id == e.distributor_id).where(*f.where())
        .order_by(e.created_at.desc(), e.id.desc()).offset((page_no - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all()
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def ledger_totals(session: Session, f: LedgerFilter) -> list[tuple[str, int, int]]:
    """(kind, entries, fen) of the filtered entries, in KIND_NAMES' order, kinds without any left out."""
    e = ENTRIES.c
    found = {kind: (int(n), int(fen)) for kind, n, fen in session.execute(
        select(e.kind, func.count(), func.coalesce(func.sum(e.amount_fen), 0)).where(*f.where()).group_by(e.kind))}
    return [(kind, *found[kind]) for kind in KIND_NAMES if kind in found]


# ---- 订单: finding orders -------------------------------------------------------------------------
@dataclass(frozen=True)
class OrderFilter:
    number: str = ""  # an order number, or its beginning
    code: str = ""
    status: str = ""
    since: date | None = None
    until: date | None = None

    @classmethod
    def of(cls, query: Mapping[str, str]) -> tuple[OrderFilter, list[str]]:
        problems: list[str] = []
        since, until = read_days(query, problems)
        status = query.get("status", "")
        return cls(query.get("q", "").strip()[:64], code_of(query), status if status in STATUS_NAMES else "",
                   since, until), problems

    def where(self) -> list[ColumnElement[bool]]:
        o = ORDERS.c
        out = on_days(o.paid_at, self.since, self.until)
        if self.number:
            out += _prefix(o.order_no, self.number)
        if self.code:
            out.append(o.distributor_id == _distributor(self.code))
        if self.status:
            out.append(o.status == self.status)
        return out

    def query(self) -> str:
        return _encoded((("q", self.number), ("code", self.code), ("status", self.status), ("since", self.since),
                         ("until", self.until)))


def _prefix(col: Any, text: str) -> list[ColumnElement[bool]]:
    """Values that begin with `text` (the whole value too): a range of the column's index in its
    byte order (SQLite's BINARY, PostgreSQL's C collation as deployed), then the exact test."""
    last = ord(text[-1])
    bounds = [col >= text] + ([col < text[:-1] + chr(last + 1)] if last < 0x10FFFF else [])
    return [*bounds, func.substr(col, 1, len(text)) == text]


def find_orders(session: Session, f: OrderFilter, page_no: int) -> tuple[list[Any], bool]:
    """A page (from 1) of the orders the filter finds, the latest paid first, with their
    distributors; and whether another page follows."""
    o = ORDERS.c
    rows = session.execute(
        select(o.order_no, o.amount_fen, o.refunded_fen, o.status, o.paid_at, _D.code, _D.name)
        .join(DISTRIBUTORS, _D.id == o.distributor_id).where(*f.where())
        .order_by(o.paid_at.desc(), o.order_no.desc()).offset((page_no - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all()
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


# ---- one order --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OrderRecord:
    order: Any  # the order's row with its distributor's code and name
    history: list[Any]  # its events, in the order they were applied
    commissions: list[Any]  # per level (depth), with the receiver's code and name
    reversals: list[Any]  # the reversal entries its refunds and cancellation posted


def order_record(session: Session, order_no: str) -> OrderRecord | None:
    o = session.execute(select(ORDERS, _D.code, _D.name).join(DISTRIBUTORS, _D.id == ORDERS.c.distributor_id)
                        .where(ORDERS.c.order_no == order_no)).mappings().first()
    if o is None:
        return None
    history = session.execute(select(EVENTS).where(EVENTS.c.order_no == order_no)
                              .order_by(EVENTS.c.id)).mappings().all()
    comms = session.execute(select(COMMISSIONS, _D.code, _D.name).join(DISTRIBUTORS, _D.id == COMMISSIONS.c.distributor_id)
                            .where(COMMISSIONS.c.order_no == order_no).order_by(COMMISSIONS.c.depth)).mappings().all()
    undone = [h["event_id"] for h in history if h["type"] in (REFUNDED, CANCELLED)]
    e = ENTRIES.c
    reversals = session.execute(
        select(e.created_at, e.amount_fen, e.ref, _D.code, _D.name).join(DISTRIBUTORS, _D.id == e.distributor_id)
        .where(e.distributor_id.in_([c["distributor_id"] for c in comms]), e.kind == EntryKind.REVERSAL,
               e.ref.in_(undone)).order_by(e.id)).all() if undone and comms else []
    return OrderRecord(o, list(history), list(comms), list(reversals))


def share_state(commission: Mapping[str, Any]) -> str:
    """A commission's state as the API names it: reversed once nothing of it is left."""
    return "reversed" if commission["reversed_fen"] >= commission["amount_fen"] else str(commission["state"])
