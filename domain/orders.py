"""Applying the shop's order events to orders, commissions, the ledger and balances, a batch at
a time (storage.group_commit).

An OrderBook reads what the batch's events need at once (their stored answers, orders with
commissions, the credited distributors' chains), then applies one event at a time inside the
caller's SAVEPOINT: an event that breaks a rule raises a domain.refusals.Refusal, before or after
it wrote, and the savepoint takes its writes back, so a refused event leaves no trace. The book's
memory of an order changes only once its event has gone through. Balances, which only add up, and
notices are written once at the end of the batch. The rules are the pure functions of domain.commission.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.orm import Session

from domain import commission as rules
from domain import risk
from domain.config import Config
from domain.config_sections import WebhookEvent
from domain.contests import SaleChange, record_sales
from domain.dashboard import add_to_days
from domain.formats import china_time, month_start
from domain.ledger import Delta, add_to_balances, append_entries, ensure_balances
from domain.notices import PERSON_COLUMNS, Credits, Person, settle_and_notify
from domain.promotion import Unlocks, no_unlocks, promote
from domain.refusals import Refusal
from domain.webhook_events import emit
from storage.db import is_postgres
from storage.models import DistributorStatus
from storage.models_ledger import CommissionState, EntryKind
from storage.tables import COMMISSIONS, DISTRIBUTORS, EVENTS, ORDERS


@dataclass(frozen=True)
class EventIn:
    """An order event whose shape has been checked at the API's edge."""

    event_id: str
    order_no: str
    type: str
    amount_fen: int | None = None
    distributor_code: str | None = None
    sku: str | None = None
    buyer_openid: str | None = None
    occurred_at: datetime | None = None


# ---- statements, built once (building them per event costs more than running them) -------------
_STORED = select(EVENTS.c.event_id, EVENTS.c.answer).where(EVENTS.c.event_id.in_(bindparam("ids", expanding=True)))
_RECEIVER = DISTRIBUTORS.alias("receiver")
_ORDERS = (select(ORDERS, *(c.label("c_" + c.name) for c in COMMISSIONS.c),
                  *(_RECEIVER.c[n].label("p_" + n) for n in PERSON_COLUMNS))
           .outerjoin(COMMISSIONS, COMMISSIONS.c.order_no == ORDERS.c.order_no)
           .outerjoin(_RECEIVER, _RECEIVER.c.id == COMMISSIONS.c.distributor_id)
           .where(ORDERS.c.order_no.in_(bindparam("nos", expanding=True)))
           .order_by(ORDERS.c.order_no, COMMISSIONS.c.depth))  # one locking order for every process: no deadlocks
_ORDERS_LOCKED = _ORDERS.with_for_update(of=ORDERS)
_UPDATE_ORDER = update(ORDERS).where(ORDERS.c.order_no == bindparam("no")).values(
    status=bindparam("o_status"), refunded_fen=bindparam("o_refunded"), completed_at=bindparam("o_completed"),
    updated_at=bindparam("o_updated"))
_UPDATE_COMMISSION = update(COMMISSIONS).where(
    COMMISSIONS.c.order_no == bindparam("no"), COMMISSIONS.c.distributor_id == bindparam("did")).values(
    state=bindparam("c_state"), reversed_fen=bindparam("c_reversed"), unfreeze_at=bindparam("c_unfreeze"))
_INSERT_ORDER, _INSERT_COMMISSION, _INSERT_EVENT = ORDERS.insert(), COMMISSIONS.insert(), EVENTS.insert()
_ORDER_COLUMNS = tuple(ORDERS.c.keys())
_COMMISSION_COLUMNS = tuple(COMMISSIONS.c.keys())


@functools.cache
def _chains(levels: int) -> Select[Any]:
    """Distributors by code, each with up to `levels - 1` inviters above, one row each."""
    tables = [DISTRIBUTORS.alias(f"up{i}") for i in range(levels)]
    stmt = select(*(t.c[n] for t in tables for n in PERSON_COLUMNS)).select_from(tables[0])
    for below, above in zip(tables, tables[1:]):
        stmt = stmt.outerjoin(above, above.c.id == below.c.inviter_id)
    return stmt.where(tables[0].c.code.in_(bindparam("codes", expanding=True)))


@dataclass
class _Order:
    """An order as the book knows it: its row and its commissions (rows as dicts)."""

    row: dict[str, Any]
    comms: list[dict[str, Any]]


def _comm_json(c: dict[str, Any], code: str) -> dict[str, Any]:
    state = "reversed" if c["reversed_fen"] >= c["amount_fen"] else c["state"]
    return {"distributor_code": code, "depth": c["depth"], "amount_fen": c["amount_fen"],
            "reversed_fen": c["reversed_fen"], "state": state}


class OrderBook:
    def __init__(self, session: Session, config: Config, events: list[EventIn], now: datetime,
                 unlocks: Unlocks = no_unlocks):
        self.config, self.now, self.unlocks = config, now, unlocks
        self.stored: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, _Order] = {}
        self.chains: dict[str, list[Person]] = {}
        self.credits = Credits()
        self.deltas: dict[int, Delta] = defaultdict(Delta)
        self._tried: set[str] = set()
        self.watch = risk.Watch(config)
        if events:
            self._load(session, [e.event_id for e in events], list({e.order_no for e in events}),
                       list({e.distributor_code for e in events if e.type == rules.PAID and e.distributor_code}))

    def _load(self, session: Session, ids: list[str], nos: list[str], codes: list[str]) -> None:
        conn = session.connection()
        self.stored.update(conn.execute(_STORED, {"ids": ids}).all())
        for r in conn.execute(_ORDERS_LOCKED if is_postgres(session) else _ORDERS, {"nos": nos}).mappings():
            o = self.orders.get(r["order_no"])
            if o is None:
                o = self.orders[r["order_no"]] = _Order({k: r[k] for k in _ORDER_COLUMNS}, [])
            if r["c_order_no"] is not None:
                o.comms.append({k: r["c_" + k] for k in _COMMISSION_COLUMNS})
                person = Person(*(r["p_" + n] for n in PERSON_COLUMNS))
                self.credits.people[person.id] = person
        if codes:
            width = len(PERSON_COLUMNS)
            for row in conn.execute(_chains(self.config.distribution.max_levels), {"codes": codes}).all():
                chain = [Person(*row[i:i + width]) for i in range(0, len(row), width) if row[i] is not None]
                self.chains[chain[0].code] = chain

    def apply(self, session: Session, e: EventIn) -> dict[str, Any]:
        """The answer to one event (a Refusal when it cannot be applied). An event_id seen before
        gets its first answer again with "duplicate": true."""
        if e.event_id in self._tried:
            # A second attempt after a conflict: another process stored this event, or paid this
            # order, a moment ago; read them again.
            self._load(session, [e.event_id], [e.order_no], [])
        self._tried.add(e.event_id)
        if e.event_id in self.stored:
            return {**self.stored[e.event_id], "duplicate": True}
        credits, deltas = Credits(), defaultdict(Delta)
        if e.type == rules.PAID:
            order = self._pay(session, e, credits, deltas)
        else:
            order = self._change(session, e, credits, deltas)
        receivers = [credits.people.get(c["distributor_id"]) or self.credits.people[c["distributor_id"]]
                     for c in order.comms]
        answer = {"order_no": e.order_no, "status": order.row["status"], "duplicate": False,
                  "amount_fen": order.row["amount_fen"], "refunded_fen": order.row["refunded_fen"],
                  "commissions": [_comm_json(c, p.code) for c, p in zip(order.comms, receivers, strict=True)]}
        session.connection().execute(_INSERT_EVENT, {
            "event_id": e.event_id, "order_no": e.order_no, "type": e.type, "amount_fen": e.amount_fen,
            "status": order.row["status"], "occurred_at": e.occurred_at, "received_at": self.now, "answer": answer})
        # The event went through: the book remembers it.
        self.orders[e.order_no], self.stored[e.event_id] = order, answer
        self.credits.add(credits)
        if e.type == rules.PAID:
            chain = self.chains[e.distributor_code or ""]
            self.watch.paid_order(e.order_no, order.row["amount_fen"], e.buyer_openid, chain)
        elif e.type in (rules.REFUNDED, rules.CANCELLED):
            self.watch.refund(order.row["distributor_id"])
        for did, d in deltas.items():
            self.deltas[did] += d
        return answer

    def finish(self, session: Session) -> None:
        """What the batch's events add up to: balances, the batched notices, contest totals, and
        the promotion of whoever's completed sales crossed a rank's line, the risk rules (domain.risk),
        and last the day's totals
        (on PostgreSQL the day's row is locked from there to the commit, and nothing else waits)."""
        add_to_balances(session, self.deltas)
        settle_and_notify(session, self.config, self.now, self.credits)
        record_sales(session, self.credits.sales)
        if self.credits.completed:
            promote(session, self.config, self.credits.completed, self.now, unlocks=self.unlocks)
        for type_, events in self.credits.hooks.items():
            emit(session, self.config, type_, events, self.now)
        self.watch.finish(session, self.now)
        add_to_days(session, self.now, self.credits.sales, self.credits.earned_fen)

    def _pay(self, session: Session, e: EventIn, credits: Credits, deltas: dict[int, Delta]) -> _Order:
        dist, now = self.config.distribution, self.now
        if e.order_no in self.orders:
            raise Refusal("order_exists", f"Order {e.order_no} was already paid under another event_id; "
                          "an order is paid once.", details={"order_no": e.order_no})
        chain = self.chains.get(e.distributor_code or "")
        if chain is None:
            raise Refusal("unknown_distributor", f"No distributor has the code {e.distributor_code!r}.",
                          details={"distributor_code": e.distributor_code})
        accrued = _month_accrued(session, [p.id for p in chain], now) if dist.monthly_cap_fen else {}
        shares = rules.split_commission(
            e.amount_fen or 0,
            [rules.Receiver(p.id, p.openid, p.rank, p.status == DistributorStatus.ACTIVE) for p in chain],
            rates_of=lambda rank: self.config.rank(rank).rates, max_levels=dist.max_levels,
            self_purchase=dist.self_purchase, buyer_openid=e.buyer_openid,
            monthly_cap_fen=dist.monthly_cap_fen, month_accrued=accrued)
        row = {"order_no": e.order_no, "distributor_id": chain[0].id, "amount_fen": e.amount_fen or 0,
               "refunded_fen": 0, "status": rules.PAID, "sku": e.sku, "buyer_openid": e.buyer_openid,
               "paid_at": e.occurred_at or now, "completed_at": None, "updated_at": now}
        conn = session.connection()
        conn.execute(_INSERT_ORDER, row)
        comms = [{"order_no": e.order_no, "distributor_id": s.distributor_id, "depth": s.depth, "rate": str(s.rate),
                  "amount_fen": s.amount_fen, "reversed_fen": 0, "state": CommissionState.PENDING,
                  "unfreeze_at": None, "created_at": now} for s in shares]
        if comms:
            conn.execute(_INSERT_COMMISSION, comms)
            append_entries(session, [{"distributor_id": c["distributor_id"], "kind": EntryKind.COMMISSION,
                                      "amount_fen": c["amount_fen"], "ref": e.order_no, "order_no": e.order_no,
                                      "created_at": now} for c in comms])
        codes = {p.id: p.code for p in chain}
        for c in comms:
            deltas[c["distributor_id"]].pending_fen += c["amount_fen"]
            credits.credited[c["distributor_id"]].append(c["amount_fen"])
            if self.config.webhooks:
                credits.hooks[WebhookEvent.COMMISSION_CREATED].append((c["distributor_id"], {
                    "order_no": e.order_no, "distributor_code": codes[c["distributor_id"]], "depth": c["depth"],
                    "amount_fen": c["amount_fen"], "order_amount_fen": row["amount_fen"], "at": china_time(now)}))
        credits.people.update((p.id, p) for p in chain)
        credits.sales.append(SaleChange(chain[0].id, row["paid_at"], e.sku, row["amount_fen"], orders=1))
        credits.earned_fen += sum(c["amount_fen"] for c in comms)
        return _Order(row, comms)

    def _change(self, session: Session, e: EventIn, credits: Credits, deltas: dict[int, Delta]) -> _Order:
        """shipped, completed, refunded or cancelled, on an order that exists."""
        known = self.orders.get(e.order_no)
        if known is None:
            raise Refusal("unknown_order", f"No order {e.order_no!r} has been paid; send its 'paid' event "
                          "first.", details={"order_no": e.order_no})
        order = _Order(dict(known.row), [dict(c) for c in known.comms])  # changed on copies until it went through
        row = order.row
        status = _next_status(e, row)
        changed: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        if e.type == rules.COMPLETED:
            changed = self._complete(order, credits, deltas)
        elif e.type in (rules.REFUNDED, rules.CANCELLED):
            changed, entries = self._reverse(e, order, credits, deltas)
        row["status"], row["updated_at"] = status, self.now
        _write_change(session, e.order_no, row, changed)
        append_entries(session, entries)
        return order

    def _complete(self, order: _Order, credits: Credits, deltas: dict[int, Delta]) -> list[dict[str, Any]]:
        """A completed order: its commissions unfreeze after the freeze (at once with no freeze);
        the commissions changed."""
        now, freeze_days = self.now, self.config.distribution.freeze_days
        order.row["completed_at"] = now
        credits.completed.add(order.row["distributor_id"])
        due = rules.unfreeze_at(now, freeze_days)
        for c in order.comms:
            c["unfreeze_at"] = due
            if freeze_days == 0 and c["state"] == CommissionState.PENDING:
                rest = c["amount_fen"] - c["reversed_fen"]
                c["state"] = CommissionState.AVAILABLE
                deltas[c["distributor_id"]].pending_fen -= rest
                deltas[c["distributor_id"]].available_fen += rest
                credits.freed[c["distributor_id"]] += rest
        return list(order.comms)

    def _reverse(self, e: EventIn, order: _Order, credits: Credits,
                 deltas: dict[int, Delta]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A refund or a cancellation: the sale taken back and each commission's share of it
        reversed; the commissions changed and their reversal entries."""
        row, now = order.row, self.now
        taken = (e.amount_fen or 0) if e.type == rules.REFUNDED else row["amount_fen"] - row["refunded_fen"]
        credits.sales.append(SaleChange(row["distributor_id"], row["paid_at"], row["sku"], -taken,
                                        orders=-1 if e.type == rules.CANCELLED else 0))
        if e.type == rules.REFUNDED:
            row["refunded_fen"] += e.amount_fen or 0
        refunded = row["refunded_fen"] if e.type == rules.REFUNDED else row["amount_fen"]
        changed: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        for c in order.comms:
            due = rules.reversal_due(c["amount_fen"], c["reversed_fen"], refunded, row["amount_fen"])
            if due <= 0:
                continue
            c["reversed_fen"] += due
            credits.earned_fen -= due
            if c["state"] == CommissionState.PENDING:
                deltas[c["distributor_id"]].pending_fen -= due
            else:
                deltas[c["distributor_id"]].available_fen -= due
            entries.append({"distributor_id": c["distributor_id"], "kind": EntryKind.REVERSAL,
                            "amount_fen": -due, "ref": e.event_id, "order_no": e.order_no, "created_at": now})
            if self.config.webhooks:
                credits.hooks[WebhookEvent.COMMISSION_REVERSED].append((c["distributor_id"], {
                    "order_no": e.order_no, "distributor_code": self.credits.people[c["distributor_id"]].code,
                    "depth": c["depth"], "amount_fen": due, "reason": e.type, "event_id": e.event_id,
                    "at": china_time(now)}))
            changed.append(c)
        return changed, entries


def _next_status(e: EventIn, row: dict[str, Any]) -> str:
    """The order's status after the event; refused when the event does not apply to it."""
    try:
        return rules.next_status(row["status"], e.type, amount_fen=row["amount_fen"],
                                 refunded_fen=row["refunded_fen"], refund_fen=e.amount_fen or 0)
    except rules.TransitionError as err:
        raise Refusal(err.code, f"Order {e.order_no}: {err}.",
                      details={"status": row["status"], "type": e.type, "refunded_fen": row["refunded_fen"],
                               "amount_fen": row["amount_fen"]}) from None


def _write_change(session: Session, order_no: str, row: dict[str, Any], changed: list[dict[str, Any]]) -> None:
    """The order's new status and the commissions the event changed, as stored."""
    conn = session.connection()
    conn.execute(_UPDATE_ORDER, {"no": order_no, "o_status": row["status"], "o_refunded": row["refunded_fen"],
                                 "o_completed": row["completed_at"], "o_updated": row["updated_at"]})
    if changed:
        conn.execute(_UPDATE_COMMISSION, [{"no": c["order_no"], "did": c["distributor_id"], "c_state": c["state"],
                                           "c_reversed": c["reversed_fen"], "c_unfreeze": c["unfreeze_at"]}
                                          for c in changed])

def _month_accrued(session: Session, ids: list[int], now: datetime) -> dict[int, int]:
    """Each receiver's commission credited this month, net of reversals. On PostgreSQL their
    balance rows are locked first, so two processes cannot both fill one cap."""
    if is_postgres(session):
        ensure_balances(session, ids, lock=True)
    c = COMMISSIONS.c
    rows = session.connection().execute(select(c.distributor_id, func.sum(c.amount_fen - c.reversed_fen))
                                        .where(c.distributor_id.in_(ids), c.created_at >= month_start(now))
                                        .group_by(c.distributor_id))
    return {i: int(v or 0) for i, v in rows.all()}
