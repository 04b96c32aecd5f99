"""Applying the shop's order events to orders, commissions, the ledger and balances, a batch at
a time: one transaction, a handful of queries for the whole batch, writes as executemany.

Events are applied in arrival order to working copies in memory (so a batch may hold several
events of one order), each one checked completely before it changes anything; a rejected event
leaves no trace. The rules themselves are the pure functions of domain.commission.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.config import Config
from domain import commission as rules
from domain.formats import month_start
from domain.notices import DISTRIBUTORS, PERSON_COLUMNS, Person, settle_and_notify
from domain.ledger import ZERO, Delta, add_to_balances, append_entries, is_postgres
from storage.models import DistributorStatus
from storage.models_ledger import Balance, Commission, CommissionState, EntryKind, Order, OrderEvent

ORDERS: Table = Order.__table__  # type: ignore[assignment]
EVENTS: Table = OrderEvent.__table__  # type: ignore[assignment]
COMMISSIONS: Table = Commission.__table__  # type: ignore[assignment]
BALANCES: Table = Balance.__table__  # type: ignore[assignment]

@dataclass(frozen=True)
class EventIn:
    """An order event whose shape has been checked (see handlers.orders.parse_event)."""

    event_id: str
    order_no: str
    type: str
    amount_fen: int | None = None
    distributor_code: str | None = None
    sku: str | None = None
    buyer_openid: str | None = None
    occurred_at: datetime | None = None


class Rejected(Exception):
    """An event that cannot be applied; nothing of it is stored."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


_ORDER_COLUMNS = ("order_no", "distributor_id", "amount_fen", "refunded_fen", "status", "sku", "buyer_openid",
                  "paid_at", "completed_at", "updated_at")
_COMM_COLUMNS = ("order_no", "distributor_id", "depth", "rate", "amount_fen", "reversed_fen", "state", "unfreeze_at",
                 "created_at")


# ---- statements, built once (building them per batch costs more than running them) ----------------
@functools.cache
def _stored_answers() -> Select[Any]:
    return select(EVENTS.c.event_id, EVENTS.c.answer).where(EVENTS.c.event_id.in_(bindparam("ids", expanding=True)))


@functools.cache
def _orders_with_commissions(lock: bool) -> Select[Any]:
    receiver = DISTRIBUTORS.alias("receiver")
    stmt = (select(ORDERS, *(c.label("c_" + c.name) for c in COMMISSIONS.c),
                   *(receiver.c[n].label("p_" + n) for n in PERSON_COLUMNS))
            .outerjoin(COMMISSIONS, COMMISSIONS.c.order_no == ORDERS.c.order_no)
            .outerjoin(receiver, receiver.c.id == COMMISSIONS.c.distributor_id)
            .where(ORDERS.c.order_no.in_(bindparam("nos", expanding=True)))
            .order_by(ORDERS.c.order_no))  # one locking order for every process: no deadlocks
    return stmt.with_for_update(of=ORDERS) if lock else stmt


@functools.cache
def _chains(levels: int) -> Select[Any]:
    """Distributors by code, each with up to `levels - 1` inviters above, one row each."""
    tables = [DISTRIBUTORS.alias(f"up{i}") for i in range(levels)]
    stmt = select(*(t.c[n] for t in tables for n in PERSON_COLUMNS)).select_from(tables[0])
    for below, above in zip(tables, tables[1:]):
        stmt = stmt.outerjoin(above, above.c.id == below.c.inviter_id)
    return stmt.where(tables[0].c.code.in_(bindparam("codes", expanding=True)))


@functools.cache
def _ensure_balances() -> Any:
    return pg_insert(BALANCES).on_conflict_do_nothing(index_elements=["distributor_id"])


@functools.cache
def _insert(table: Table) -> Any:
    return table.insert()


@functools.cache
def _upsert(dialect: str, table: Table, key: tuple[str, ...], changing: tuple[str, ...]) -> Any:
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
    return stmt.on_conflict_do_update(index_elements=list(key), set_={k: stmt.excluded[k] for k in changing})


@dataclass
class _Comm:
    order_no: str
    distributor_id: int
    depth: int
    rate: str
    amount_fen: int
    reversed_fen: int
    state: str
    unfreeze_at: datetime | None
    created_at: datetime
    new: bool = False
    dirty: bool = False

    @property
    def remaining(self) -> int:
        return self.amount_fen - self.reversed_fen


@dataclass
class _Order:
    order_no: str
    distributor_id: int
    amount_fen: int
    refunded_fen: int
    status: str
    sku: str | None
    buyer_openid: str | None
    paid_at: datetime
    completed_at: datetime | None
    updated_at: datetime
    comms: list[_Comm] = field(default_factory=list)
    new: bool = False
    dirty: bool = False


def comm_json(c: _Comm, codes: dict[int, str]) -> dict[str, Any]:
    state = "reversed" if c.reversed_fen >= c.amount_fen else c.state
    return {"distributor_code": codes.get(c.distributor_id, ""), "depth": c.depth, "amount_fen": c.amount_fen,
            "reversed_fen": c.reversed_fen, "state": state}


def answer_json(o: _Order, codes: dict[int, str]) -> dict[str, Any]:
    return {"order_no": o.order_no, "status": o.status, "duplicate": False, "amount_fen": o.amount_fen,
            "refunded_fen": o.refunded_fen,
            "commissions": [comm_json(c, codes) for c in sorted(o.comms, key=lambda c: c.depth)]}


class _Batch:
    def __init__(self, conn: Connection, config: Config, now: datetime):
        self.conn, self.config, self.now = conn, config, now
        self.dist = config.distribution
        self.orders: dict[str, _Order] = {}
        self.people: dict[int, Person] = {}
        self.by_code: dict[str, Person] = {}
        self.codes: dict[int, str] = {}
        self.accrued: dict[int, int] = {}
        self.deltas: dict[int, Delta] = defaultdict(Delta)
        self.entries: list[dict[str, Any]] = []
        self.event_rows: list[dict[str, Any]] = []
        self.credited: dict[int, list[int]] = defaultdict(list)  # receiver -> commission amounts
        self.freed: dict[int, int] = defaultdict(int)  # receiver -> newly available fen

    # ---- loading ----------------------------------------------------------------------------
    def load(self, events: list[EventIn]) -> None:
        """Three queries for the whole batch: the orders with their commissions and receivers,
        the credited distributors with their inviters (a join per level), the month's accruals."""
        s = self.conn
        nos = list({e.order_no for e in events})
        stmt = _orders_with_commissions(is_postgres(s))
        for r in s.execute(stmt, {"nos": nos}).mappings():
            o = self.orders.get(r["order_no"])
            if o is None:
                o = self.orders[r["order_no"]] = _Order(**{k: r[k] for k in _ORDER_COLUMNS})
            if r["c_order_no"] is not None:
                o.comms.append(_Comm(**{k: r["c_" + k] for k in _COMM_COLUMNS}))
                self._know(Person(*(r["p_" + n] for n in PERSON_COLUMNS)))
        codes = list({e.distributor_code for e in events if e.type == rules.PAID and e.distributor_code})
        if codes:
            width, levels = len(PERSON_COLUMNS), self.dist.max_levels
            for row in s.execute(_chains(levels), {"codes": codes}).all():
                for i in range(levels):
                    if row[i * width] is not None:
                        self._know(Person(*row[i * width:(i + 1) * width]))
                self.by_code[row[1]] = self.people[row[0]]
        if self.dist.monthly_cap_fen:
            self._load_accrued()

    def _know(self, p: Person) -> None:
        self.people[p.id] = p
        self.codes[p.id] = p.code

    def _load_accrued(self) -> None:
        ids = sorted(self.people)
        if not ids:
            return
        if is_postgres(self.conn):
            # Serialise per receiver across processes, so two batches cannot both fill the cap.
            self.conn.execute(_ensure_balances(), [{"distributor_id": i, **ZERO} for i in ids])
            self.conn.execute(select(BALANCES.c.distributor_id).where(BALANCES.c.distributor_id.in_(ids))
                              .order_by(BALANCES.c.distributor_id).with_for_update())
        c = COMMISSIONS.c
        rows = self.conn.execute(
            select(c.distributor_id, func.sum(c.amount_fen - c.reversed_fen))
            .where(c.distributor_id.in_(ids), c.created_at >= month_start(self.now)).group_by(c.distributor_id))
        self.accrued = {i: int(v or 0) for i, v in rows.all()}

    # ---- applying ---------------------------------------------------------------------------
    def apply(self, e: EventIn) -> dict[str, Any]:
        if e.type == rules.PAID:
            o = self._paid(e)
        else:
            o = self.orders.get(e.order_no)
            if o is None:
                raise Rejected(422, "unknown_order", f"No order {e.order_no!r} has been paid; send its 'paid' event "
                               "first.", {"order_no": e.order_no})
            try:
                status = rules.next_status(o.status, e.type, amount_fen=o.amount_fen, refunded_fen=o.refunded_fen,
                                           refund_fen=e.amount_fen or 0)
            except rules.TransitionError as err:
                raise Rejected(422, err.code, f"Order {e.order_no}: {err}.",
                               {"status": o.status, "type": e.type, "refunded_fen": o.refunded_fen,
                                "amount_fen": o.amount_fen}) from None
            {rules.SHIPPED: self._shipped, rules.COMPLETED: self._completed, rules.REFUNDED: self._refunded,
             rules.CANCELLED: self._cancelled}[e.type](o, e)
            o.status, o.updated_at, o.dirty = status, self.now, True
        answer = answer_json(o, self.codes)
        self.event_rows.append({"event_id": e.event_id, "order_no": o.order_no, "type": e.type,
                                "amount_fen": e.amount_fen, "status": o.status, "occurred_at": e.occurred_at,
                                "received_at": self.now, "answer": answer})
        return answer

    def _paid(self, e: EventIn) -> _Order:
        if e.order_no in self.orders:
            raise Rejected(409, "order_exists", f"Order {e.order_no} was already paid under another event_id; "
                           "an order is paid once.", {"order_no": e.order_no})
        credited = self.by_code.get(e.distributor_code or "")
        if credited is None:
            raise Rejected(422, "unknown_distributor", f"No distributor has the code {e.distributor_code!r}.",
                           {"distributor_code": e.distributor_code})
        chain, person = [], credited
        while person is not None and len(chain) < self.dist.max_levels:
            chain.append(person)
            person = self.people.get(person.inviter_id) if person.inviter_id else None
        shares = rules.split_commission(
            e.amount_fen or 0,
            [rules.Receiver(p.id, p.openid, p.rank, p.status == DistributorStatus.ACTIVE) for p in chain],
            rates_of=lambda rank: self.config.rank(rank).rates, max_levels=self.dist.max_levels,
            self_purchase=self.dist.self_purchase, buyer_openid=e.buyer_openid,
            monthly_cap_fen=self.dist.monthly_cap_fen, month_accrued=self.accrued)
        at = e.occurred_at or self.now
        o = _Order(e.order_no, credited.id, e.amount_fen or 0, 0, rules.PAID, e.sku, e.buyer_openid, at, None,
                   self.now, new=True)
        for sh in shares:
            o.comms.append(_Comm(o.order_no, sh.distributor_id, sh.depth, str(sh.rate), sh.amount_fen, 0,
                                 CommissionState.PENDING, None, self.now, new=True))
            self.entries.append({"distributor_id": sh.distributor_id, "kind": EntryKind.COMMISSION,
                                 "amount_fen": sh.amount_fen, "ref": o.order_no, "order_no": o.order_no,
                                 "created_at": self.now})
            self.deltas[sh.distributor_id].pending_fen += sh.amount_fen
            self.credited[sh.distributor_id].append(sh.amount_fen)
        self.orders[o.order_no] = o
        return o

    def _shipped(self, o: _Order, e: EventIn) -> None:
        pass

    def _completed(self, o: _Order, e: EventIn) -> None:
        o.completed_at = self.now
        due = rules.unfreeze_at(self.now, self.dist.freeze_days)
        for c in o.comms:
            c.unfreeze_at, c.dirty = due, True
            if self.dist.freeze_days == 0:
                self._free(c)

    def _free(self, c: _Comm) -> None:
        if c.state == CommissionState.PENDING:
            c.state = CommissionState.AVAILABLE
            self.deltas[c.distributor_id].pending_fen -= c.remaining
            self.deltas[c.distributor_id].available_fen += c.remaining
            self.freed[c.distributor_id] += c.remaining

    def _refunded(self, o: _Order, e: EventIn) -> None:
        o.refunded_fen += e.amount_fen or 0
        self._reverse(o, e, o.refunded_fen)

    def _cancelled(self, o: _Order, e: EventIn) -> None:
        self._reverse(o, e, o.amount_fen)

    def _reverse(self, o: _Order, e: EventIn, refunded_total: int) -> None:
        for c in o.comms:
            due = rules.reversal_due(c.amount_fen, c.reversed_fen, refunded_total, o.amount_fen)
            if due <= 0:
                continue
            c.reversed_fen += due
            c.dirty = True
            bucket = "pending_fen" if c.state == CommissionState.PENDING else "available_fen"
            setattr(self.deltas[c.distributor_id], bucket, getattr(self.deltas[c.distributor_id], bucket) - due)
            if c.distributor_id in self.accrued and c.created_at >= month_start(self.now):
                self.accrued[c.distributor_id] -= due
            self.entries.append({"distributor_id": c.distributor_id, "kind": EntryKind.REVERSAL, "amount_fen": -due,
                                 "ref": e.event_id, "order_no": o.order_no, "created_at": self.now})

    # ---- writing ----------------------------------------------------------------------------
    def flush(self, notify: bool) -> None:
        s = self.conn
        orders = list(self.orders.values())
        _write(s, ORDERS, ["order_no"], ("status", "refunded_fen", "completed_at", "updated_at"),
               [_order_row(o) for o in orders if o.new], [_order_row(o) for o in orders if o.dirty and not o.new])
        comms = [c for o in orders for c in o.comms]
        _write(s, COMMISSIONS, ["order_no", "distributor_id"], ("reversed_fen", "state", "unfreeze_at"),
               [_comm_row(c) for c in comms if c.new], [_comm_row(c) for c in comms if c.dirty and not c.new])
        if self.event_rows:
            s.execute(_insert(EVENTS), self.event_rows)
        append_entries(s, self.entries)
        add_to_balances(s, self.deltas)
        settle_and_notify(s, self.config, self.now, credited=self.credited, freed=self.freed, people=self.people,
                          notify=notify)


def _write(conn: Connection, table: Table, key: list[str], changing: tuple[str, ...],
           new: list[dict[str, Any]], changed: list[dict[str, Any]]) -> None:
    """Insert the new rows and update the changed ones.

    On SQLite one upsert does both: the batch has held the write lock since BEGIN IMMEDIATE, so
    the rows it found missing are still missing. On PostgreSQL a new order may be inserted by
    another process meanwhile, which must fail this batch (and be answered 409 on the retry),
    never be overwritten: new rows get a plain insert there."""
    if not new and not changed:
        return
    upsert = _upsert(conn.dialect.name, table, tuple(key), changing)
    if not is_postgres(conn):
        conn.execute(upsert, new + changed)
        return
    if new:
        conn.execute(_insert(table), new)
    if changed:
        conn.execute(upsert, changed)


def _order_row(o: _Order) -> dict[str, Any]:
    return {"order_no": o.order_no, "distributor_id": o.distributor_id, "amount_fen": o.amount_fen,
            "refunded_fen": o.refunded_fen, "status": o.status, "sku": o.sku, "buyer_openid": o.buyer_openid,
            "paid_at": o.paid_at, "completed_at": o.completed_at, "updated_at": o.updated_at}


def _comm_row(c: _Comm) -> dict[str, Any]:
    return {"order_no": c.order_no, "distributor_id": c.distributor_id, "depth": c.depth, "rate": c.rate,
            "amount_fen": c.amount_fen, "reversed_fen": c.reversed_fen, "state": c.state,
            "unfreeze_at": c.unfreeze_at, "created_at": c.created_at}


def apply_events_sync(conn: Connection, config: Config, events: list[EventIn], *, now: datetime | None = None,
                      notify: bool = True) -> list[dict[str, Any] | Rejected]:
    """Apply events in order inside the connection's transaction; one answer (or Rejected) each.

    An event_id seen before gets the first answer again with "duplicate": true. `notify=False`
    leaves out the outbox notices (direct tests)."""
    now = now or datetime.now(UTC)
    stored = dict(conn.execute(_stored_answers(), {"ids": [e.event_id for e in events]}).all()) if events else {}
    batch = _Batch(conn, config, now)
    todo = [e for e in events if e.event_id not in stored]
    if todo:
        batch.load(todo)
    results: list[dict[str, Any] | Rejected] = []
    for e in events:
        if e.event_id in stored:
            results.append({**stored[e.event_id], "duplicate": True})
            continue
        try:
            answer = batch.apply(e)
        except Rejected as r:
            results.append(r)
            continue
        stored[e.event_id] = answer
        results.append(answer)
    batch.flush(notify)
    return results


async def apply_events(session: AsyncSession, config: Config, events: list[EventIn], *, now: datetime | None = None,
                       notify: bool = True) -> list[dict[str, Any] | Rejected]:
    """apply_events_sync in an AsyncSession's transaction."""
    return await session.run_sync(lambda s: apply_events_sync(s.connection(), config, events, now=now, notify=notify))
