"""Applying the shop's order events to orders, commissions, the ledger and balances.

One event at a time, inside the caller's SAVEPOINT (storage.group_commit): an event that breaks
a rule raises Rejected before or after it wrote, and the savepoint takes everything back, so a
rejected event leaves no trace. The rules themselves are the pure functions of domain.commission.
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
from domain.config import Config
from domain.formats import month_start
from domain.ledger import Delta, add_to_balances, append_entries, ensure_balances
from domain.notices import PERSON_COLUMNS, Credits, Person
from storage.db import is_postgres
from storage.group_commit import Refused
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


class Rejected(Refused):
    """An event that cannot be applied; nothing of it is stored."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


# ---- statements, built once (building them per event costs more than running them) -------------
_STORED = select(EVENTS.c.answer).where(EVENTS.c.event_id == bindparam("id"))
_ORDER = select(ORDERS).where(ORDERS.c.order_no == bindparam("no"))
_RECEIVER = DISTRIBUTORS.alias("receiver")
_COMMISSIONS = (select(COMMISSIONS, *(_RECEIVER.c[n].label("p_" + n) for n in PERSON_COLUMNS))
                .join(_RECEIVER, _RECEIVER.c.id == COMMISSIONS.c.distributor_id)
                .where(COMMISSIONS.c.order_no == bindparam("no")).order_by(COMMISSIONS.c.depth))
_UPDATE_ORDER = update(ORDERS).where(ORDERS.c.order_no == bindparam("no")).values(
    status=bindparam("o_status"), refunded_fen=bindparam("o_refunded"), completed_at=bindparam("o_completed"),
    updated_at=bindparam("o_updated"))
_UPDATE_COMMISSION = update(COMMISSIONS).where(
    COMMISSIONS.c.order_no == bindparam("no"), COMMISSIONS.c.distributor_id == bindparam("did")).values(
    state=bindparam("c_state"), reversed_fen=bindparam("c_reversed"), unfreeze_at=bindparam("c_unfreeze"))
_INSERT_ORDER, _INSERT_COMMISSION, _INSERT_EVENT = ORDERS.insert(), COMMISSIONS.insert(), EVENTS.insert()


@functools.cache
def _chain(levels: int) -> Select[Any]:
    """A distributor by code with up to `levels - 1` inviters above, in one row."""
    tables = [DISTRIBUTORS.alias(f"up{i}") for i in range(levels)]
    stmt = select(*(t.c[n] for t in tables for n in PERSON_COLUMNS)).select_from(tables[0])
    for below, above in zip(tables, tables[1:]):
        stmt = stmt.outerjoin(above, above.c.id == below.c.inviter_id)
    return stmt.where(tables[0].c.code == bindparam("code"))


def _comm_json(c: dict[str, Any], code: str) -> dict[str, Any]:
    state = "reversed" if c["reversed_fen"] >= c["amount_fen"] else c["state"]
    return {"distributor_code": code, "depth": c["depth"], "amount_fen": c["amount_fen"],
            "reversed_fen": c["reversed_fen"], "state": state}


def apply_event(session: Session, config: Config, e: EventIn, now: datetime) -> tuple[dict[str, Any], Credits]:
    """The answer to one event, and what it credited. An event_id seen before gets its first
    answer again with "duplicate": true. Rejected when the event cannot be applied."""
    stored = session.execute(_STORED, {"id": e.event_id}).scalar()
    if stored is not None:
        return {**stored, "duplicate": True}, Credits()
    credits = Credits()
    if e.type == rules.PAID:
        order, comms, codes = _pay(session, config, e, now, credits)
    else:
        order, comms, codes = _change(session, config, e, now, credits)
    answer = {"order_no": order["order_no"], "status": order["status"], "duplicate": False,
              "amount_fen": order["amount_fen"], "refunded_fen": order["refunded_fen"],
              "commissions": [_comm_json(c, codes[c["distributor_id"]]) for c in comms]}
    session.execute(_INSERT_EVENT, {"event_id": e.event_id, "order_no": e.order_no, "type": e.type,
                                    "amount_fen": e.amount_fen, "status": order["status"],
                                    "occurred_at": e.occurred_at, "received_at": now, "answer": answer})
    return answer, credits


def _pay(session: Session, config: Config, e: EventIn, now: datetime,
         credits: Credits) -> tuple[dict[str, Any], list[dict[str, Any]], dict[int, str]]:
    dist = config.distribution
    if session.execute(_ORDER, {"no": e.order_no}).first() is not None:
        raise Rejected(409, "order_exists", f"Order {e.order_no} was already paid under another event_id; "
                       "an order is paid once.", {"order_no": e.order_no})
    row = session.execute(_chain(dist.max_levels), {"code": e.distributor_code or ""}).first()
    if row is None:
        raise Rejected(422, "unknown_distributor", f"No distributor has the code {e.distributor_code!r}.",
                       {"distributor_code": e.distributor_code})
    width = len(PERSON_COLUMNS)
    chain = [Person(*row[i:i + width]) for i in range(0, len(row), width) if row[i] is not None]
    accrued = _month_accrued(session, [p.id for p in chain], now) if dist.monthly_cap_fen else {}
    shares = rules.split_commission(
        e.amount_fen or 0, [rules.Receiver(p.id, p.openid, p.rank, p.status == DistributorStatus.ACTIVE) for p in chain],
        rates_of=lambda rank: config.rank(rank).rates, max_levels=dist.max_levels,
        self_purchase=dist.self_purchase, buyer_openid=e.buyer_openid,
        monthly_cap_fen=dist.monthly_cap_fen, month_accrued=accrued)
    order = {"order_no": e.order_no, "distributor_id": chain[0].id, "amount_fen": e.amount_fen or 0,
             "refunded_fen": 0, "status": rules.PAID, "sku": e.sku, "buyer_openid": e.buyer_openid,
             "paid_at": e.occurred_at or now, "completed_at": None, "updated_at": now}
    session.execute(_INSERT_ORDER, order)
    comms = [{"order_no": e.order_no, "distributor_id": s.distributor_id, "depth": s.depth, "rate": str(s.rate),
              "amount_fen": s.amount_fen, "reversed_fen": 0, "state": CommissionState.PENDING,
              "unfreeze_at": None, "created_at": now} for s in shares]
    if comms:
        session.execute(_INSERT_COMMISSION, comms)
        append_entries(session, [{"distributor_id": c["distributor_id"], "kind": EntryKind.COMMISSION,
                                  "amount_fen": c["amount_fen"], "ref": e.order_no, "order_no": e.order_no,
                                  "created_at": now} for c in comms])
        add_to_balances(session, {c["distributor_id"]: Delta(pending_fen=c["amount_fen"]) for c in comms})
    for c in comms:
        credits.credited[c["distributor_id"]].append(c["amount_fen"])
    credits.people.update((p.id, p) for p in chain)
    return order, comms, {p.id: p.code for p in chain}


def _month_accrued(session: Session, ids: list[int], now: datetime) -> dict[int, int]:
    """Each receiver's commission credited this month, net of reversals. On PostgreSQL their
    balance rows are locked first, so two processes cannot both fill one cap."""
    if is_postgres(session):
        ensure_balances(session, ids, lock=True)
    c = COMMISSIONS.c
    rows = session.execute(select(c.distributor_id, func.sum(c.amount_fen - c.reversed_fen))
                           .where(c.distributor_id.in_(ids), c.created_at >= month_start(now))
                           .group_by(c.distributor_id))
    return {i: int(v or 0) for i, v in rows.all()}


def _change(session: Session, config: Config, e: EventIn, now: datetime,
            credits: Credits) -> tuple[dict[str, Any], list[dict[str, Any]], dict[int, str]]:
    """shipped, completed, refunded or cancelled, on an order that exists."""
    stmt = _ORDER.with_for_update() if is_postgres(session) else _ORDER
    found = session.execute(stmt, {"no": e.order_no}).mappings().first()
    if found is None:
        raise Rejected(422, "unknown_order", f"No order {e.order_no!r} has been paid; send its 'paid' event first.",
                       {"order_no": e.order_no})
    order = dict(found)
    try:
        status = rules.next_status(order["status"], e.type, amount_fen=order["amount_fen"],
                                   refunded_fen=order["refunded_fen"], refund_fen=e.amount_fen or 0)
    except rules.TransitionError as err:
        raise Rejected(422, err.code, f"Order {e.order_no}: {err}.",
                       {"status": order["status"], "type": e.type, "refunded_fen": order["refunded_fen"],
                        "amount_fen": order["amount_fen"]}) from None
    comms, codes = [], {}
    for r in session.execute(_COMMISSIONS, {"no": e.order_no}).mappings():
        person = Person(*(r["p_" + n] for n in PERSON_COLUMNS))
        credits.people[person.id] = person
        codes[person.id] = person.code
        comms.append({k: r[k] for k in COMMISSIONS.c.keys()})
    deltas: dict[int, Delta] = defaultdict(Delta)
    entries: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    if e.type == rules.COMPLETED:
        order["completed_at"] = now
        due = rules.unfreeze_at(now, config.distribution.freeze_days)
        for c in comms:
            c["unfreeze_at"] = due
            if config.distribution.freeze_days == 0 and c["state"] == CommissionState.PENDING:
                rest = c["amount_fen"] - c["reversed_fen"]
                c["state"] = CommissionState.AVAILABLE
                deltas[c["distributor_id"]].pending_fen -= rest
                deltas[c["distributor_id"]].available_fen += rest
                credits.freed[c["distributor_id"]] += rest
            changed.append(c)
    elif e.type in (rules.REFUNDED, rules.CANCELLED):
        if e.type == rules.REFUNDED:
            order["refunded_fen"] += e.amount_fen or 0
        refunded = order["refunded_fen"] if e.type == rules.REFUNDED else order["amount_fen"]
        for c in comms:
            due = rules.reversal_due(c["amount_fen"], c["reversed_fen"], refunded, order["amount_fen"])
            if due <= 0:
                continue
            c["reversed_fen"] += due
            delta = deltas[c["distributor_id"]]
            if c["state"] == CommissionState.PENDING:
                delta.pending_fen -= due
            else:
                delta.available_fen -= due
            entries.append({"distributor_id": c["distributor_id"], "kind": EntryKind.REVERSAL, "amount_fen": -due,
                            "ref": e.event_id, "order_no": e.order_no, "created_at": now})
            changed.append(c)
    order["status"], order["updated_at"] = status, now
    session.execute(_UPDATE_ORDER, {"no": e.order_no, "o_status": status, "o_refunded": order["refunded_fen"],
                                    "o_completed": order["completed_at"], "o_updated": now})
    if changed:
        session.execute(_UPDATE_COMMISSION, [{"no": c["order_no"], "did": c["distributor_id"], "c_state": c["state"],
                          "c_reversed": c["reversed_fen"], "c_unfreeze": c["unfreeze_at"]} for c in changed])
    append_entries(session, entries)
    add_to_balances(session, deltas)
    return order, comms, codes
