"""Applying the shop's order events to orders, commissions, the ledger and balances, a batch at
a time (storage.group_commit).

An OrderBook reads what the batch's events need at once (their stored answers, orders with
commissions, the credited distributors' chains, their month's commission when a cap applies),
then checks and applies one event at a time in memory: an event that breaks a rule raises a
domain.refusals.Refusal before the book remembers anything of it, so a refused event leaves no
trace. Then `write` stores what the applied events changed, one statement per table whatever the
batch's size (orders, commissions, entries, events), and `finish` what they add up to (balances,
notices, contest and daily totals, promotions, risk, webhooks). `apply_events` runs it all in one
SAVEPOINT and once more when another process stored one of its keys first. The rules are the pure
functions of domain.commission.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import commission as rules
from domain import risk
from domain.config import Config
from domain.config_sections import WebhookEvent
from domain.contests import SaleChange, record_sales
from domain.dashboard import add_to_days
from domain.distributor_totals import add_to_totals
from domain.formats import china_time, month_start
from domain.ledger import Delta, add_to_balances, append_entries, month_accrued
from domain.notices import PERSON_COLUMNS, Credits, Person, settle_and_notify
from domain.plan_reads import PlanReads
from domain.promotion import Unlocks, no_unlocks, promote
from domain.refusals import Refusal
from domain.webhook_events import emit
from storage.db import is_postgres
from storage.group_commit import Failed, once_more_on_conflict
from storage.models import DistributorStatus
from storage.models_ledger import CommissionState, EntryKind
from storage.tables import COMMISSIONS, DISTRIBUTORS, EVENTS, ORDERS

log = logging.getLogger(__name__)
Answer = dict[str, Any]


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


@dataclass
class _Applied:
    """What one event did, kept apart until it has gone through."""

    order: _Order
    entries: list[dict[str, Any]]
    changed: list[dict[str, Any]]  # an existing order's commissions it changed
    credits: Credits
    deltas: dict[int, Delta]


def _comm_json(c: dict[str, Any], code: str) -> dict[str, Any]:
    state = "reversed" if c["reversed_fen"] >= c["amount_fen"] else c["state"]
    return {"distributor_code": code, "depth": c["depth"], "amount_fen": c["amount_fen"],
            "reversed_fen": c["reversed_fen"], "state": state}


def apply_events(session: Session, config: Config, events: list[EventIn], now: datetime,
                 unlocks: Unlocks = no_unlocks) -> list[Answer | Failed]:
    """A batch of events in the caller's transaction: each event's answer, or Failed with its
    Refusal. When another process stored one of the batch's keys first (the shop retried an
    event on another process), the batch runs once more and sees it; should it conflict again,
    each event runs on its own, so that one event's trouble is its own."""
    def batch() -> list[Answer | Failed]:
        book = OrderBook(session, config, events, now, unlocks)
        answers = [book.try_apply(session, e) for e in events]
        book.write(session)
        book.finish(session)
        return answers
    try:
        return once_more_on_conflict(session, batch)
    except IntegrityError as e:
        if len(events) == 1:
            log.exception("order event failed")
            return [Failed(e)]
        return [answer for one in events for answer in apply_events(session, config, [one], now, unlocks)]


class OrderBook:
    def __init__(self, session: Session, config: Config, events: list[EventIn], now: datetime,
                 unlocks: Unlocks = no_unlocks):
        self.config, self.now, self.unlocks = config, now, unlocks
        self.stored: dict[str, Answer] = {}
        self.orders: dict[str, _Order] = {}
        self.chains: dict[str, list[Person]] = {}
        self.accrued: dict[int, int] = {}  # with a monthly cap: commission credited this month, net
        self.credits = Credits()
        self.deltas: dict[int, Delta] = defaultdict(Delta)
        self.watch = risk.Watch(config)
        self.plans = PlanReads(config)  # per-SKU rates and the repeat reward (domain.plans)
        # What `write` stores: orders paid in this batch, stored orders changed (their receivers
        # whose commission changed), ledger entries and event rows, in the order they came.
        self.new: dict[str, None] = {}
        self.changed: dict[str, dict[int, None]] = {}
        self.entries: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        if events:
            self._load(session, [e.event_id for e in events], list({e.order_no for e in events}),
                       list({e.distributor_code for e in events if e.type == rules.PAID and e.distributor_code}))
            self.plans.load(session, [(c[0].id, e.sku, e.buyer_openid, e.occurred_at or now) for e in events
                                      if e.type == rules.PAID and (c := self.chains.get(e.distributor_code or ""))])

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
        if not codes:
            return
        width = len(PERSON_COLUMNS)
        for row in conn.execute(_chains(self.config.distribution.max_levels), {"codes": codes}).all():
            chain = [Person(*row[i:i + width]) for i in range(0, len(row), width) if row[i] is not None]
            self.chains[chain[0].code] = chain
        if self.config.distribution.monthly_cap_fen:
            self.accrued = month_accrued(session, sorted({p.id for c in self.chains.values() for p in c}), self.now)

    def try_apply(self, session: Session, e: EventIn) -> Answer | Failed:
        """`apply`, with a refused event's Refusal (or a bug's exception, logged) as its outcome."""
        try:
            return self.apply(session, e)
        except Refusal as refused:
            return Failed(refused)
        except Exception as err:  # a bug in one event: the others go on
            log.exception("order event %s failed", e.event_id)
            return Failed(err)

    def apply(self, session: Session, e: EventIn) -> Answer:
        """The answer to one event (a Refusal when it cannot be applied). An event_id seen before
        gets its first answer again with "duplicate": true."""
        if e.event_id in self.stored:
            return {**self.stored[e.event_id], "duplicate": True}
        done = self._pay(e) if e.type == rules.PAID else self._change(e)
        order = done.order
        receivers = [done.credits.people.get(c["distributor_id"]) or self.credits.people[c["distributor_id"]]
                     for c in order.comms]
        answer = {"order_no": e.order_no, "status": order.row["status"], "duplicate": False,
                  "amount_fen": order.row["amount_fen"], "refunded_fen": order.row["refunded_fen"],
                  "commissions": [_comm_json(c, p.code) for c, p in zip(order.comms, receivers, strict=True)]}
        self._remember(e, done, answer)
        return answer

    def _remember(self, e: EventIn, done: _Applied, answer: Answer) -> None:
        """The event went through: the book remembers it and what it writes."""
        self.rows.append({"event_id": e.event_id, "order_no": e.order_no, "type": e.type, "amount_fen": e.amount_fen,
                          "status": done.order.row["status"], "occurred_at": e.occurred_at, "received_at": self.now,
                          "answer": answer})
        self.orders[e.order_no], self.stored[e.event_id] = done.order, answer
        if e.type == rules.PAID:
            self.new[e.order_no] = None
            self.plans.paid(done.order.row["distributor_id"], e.buyer_openid, done.order.row["paid_at"])
        elif e.order_no not in self.new:
            self.changed.setdefault(e.order_no, {}).update((c["distributor_id"], None) for c in done.changed)
        self.entries.extend(done.entries)
        self.credits.add(done.credits)
        for did, d in done.deltas.items():
            self.deltas[did] += d
        if self.config.distribution.monthly_cap_fen:
            self._count_toward_cap(done)
        if e.type == rules.PAID:
            self.watch.paid_order(e.order_no, done.order.row["amount_fen"], e.buyer_openid,
                                  self.chains[e.distributor_code or ""])
        elif e.type in (rules.REFUNDED, rules.CANCELLED):
            self.watch.refund(done.order.row["distributor_id"])

    def _count_toward_cap(self, done: _Applied) -> None:
        """The month's commission after the event: what it credited, less what it reversed of
        this month's commission (a refund gives room back under the cap)."""
        since = month_start(self.now)
        for entry in done.entries:
            did = entry["distributor_id"]
            c = next(c for c in done.order.comms if c["distributor_id"] == did)
            if did in self.accrued and c["created_at"] >= since:
                self.accrued[did] += entry["amount_fen"]

    def write(self, session: Session) -> None:
        """What the applied events changed, one statement per table: new orders with their
        commissions (in order_no order: two processes inserting the same ones wait in one order),
        stored orders and commissions changed, ledger entries, then the events."""
        conn = session.connection()
        new = [self.orders[no] for no in sorted(self.new)]
        if new:
            conn.execute(_INSERT_ORDER, [o.row for o in new])
            comms = [c for o in new for c in o.comms]
            if comms:
                conn.execute(_INSERT_COMMISSION, comms)
        if self.changed:
            rows = [self.orders[no].row for no in sorted(self.changed)]
            conn.execute(_UPDATE_ORDER, [{"no": r["order_no"], "o_status": r["status"], "o_refunded": r["refunded_fen"],
                                          "o_completed": r["completed_at"], "o_updated": r["updated_at"]} for r in rows])
            comms = [c for no, dids in sorted(self.changed.items()) for c in self.orders[no].comms
                     if c["distributor_id"] in dids]
            if comms:
                conn.execute(_UPDATE_COMMISSION, [{"no": c["order_no"], "did": c["distributor_id"], "c_state": c["state"],
                                                   "c_reversed": c["reversed_fen"], "c_unfreeze": c["unfreeze_at"]}
                                                  for c in comms])
        append_entries(session, self.entries)
        if self.rows:
            conn.execute(_INSERT_EVENT, self.rows)

    def finish(self, session: Session) -> None:
        """What the batch's events add up to: balances and distributors' totals, the batched notices,
        contest totals, promotions (completed sales past a rank's line), the risk rules (domain.risk), and
        last the day's totals (on PostgreSQL the day's row is locked from there to the commit)."""
        add_to_balances(session, self.deltas)
        add_to_totals(session, self.credits.sales, self.entries)
        settle_and_notify(session, self.config, self.now, self.credits)
        record_sales(session, self.credits.sales)
        if self.credits.completed:
            promote(session, self.config, self.credits.completed, self.now, unlocks=self.unlocks)
        for type_, events in self.credits.hooks.items():
            emit(session, self.config, type_, events, self.now)
        self.watch.finish(session, self.now)
        add_to_days(session, self.credits.sales, self.entries)

    def _pay(self, e: EventIn) -> _Applied:
        dist, now = self.config.distribution, self.now
        if e.order_no in self.orders:
            raise Refusal("order_exists", f"Order {e.order_no} was already paid under another event_id; "
                          "an order is paid once.", details={"order_no": e.order_no})
        chain = self.chains.get(e.distributor_code or "")
        if chain is None:
            raise Refusal("unknown_distributor", f"No distributor has the code {e.distributor_code!r}.",
                          details={"distributor_code": e.distributor_code})
        sku_rates, extra = self.plans.terms(chain[0].id, e.sku, e.buyer_openid, e.occurred_at or now)
        shares = rules.split_commission(
            e.amount_fen or 0,
            [rules.Receiver(p.id, p.openid, p.rank, p.status == DistributorStatus.ACTIVE) for p in chain],
            rates_of=lambda rank: self.config.rank(rank).rates, max_levels=dist.max_levels,
            self_purchase=dist.self_purchase, buyer_openid=e.buyer_openid,
            monthly_cap_fen=dist.monthly_cap_fen, month_accrued={p.id: self.accrued.get(p.id, 0) for p in chain},
            sku_rates=sku_rates, extra_rate=extra)
        row = {"order_no": e.order_no, "distributor_id": chain[0].id, "amount_fen": e.amount_fen or 0,
               "refunded_fen": 0, "status": rules.PAID, "sku": e.sku, "buyer_openid": e.buyer_openid,
               "paid_at": e.occurred_at or now, "completed_at": None, "updated_at": now}
        comms = [{"order_no": e.order_no, "distributor_id": s.distributor_id, "depth": s.depth, "rate": str(s.rate),
                  "amount_fen": s.amount_fen, "reversed_fen": 0, "state": CommissionState.PENDING,
                  "unfreeze_at": None, "created_at": now} for s in shares]
        entries = [{"distributor_id": c["distributor_id"], "kind": EntryKind.COMMISSION, "amount_fen": c["amount_fen"],
                    "ref": e.order_no, "order_no": e.order_no, "created_at": now, "counted_at": row["paid_at"]}
                   for c in comms]
        done = _Applied(_Order(row, comms), entries, [], Credits(), defaultdict(Delta))
        credits, codes = done.credits, {p.id: p.code for p in chain}
        for c in comms:
            done.deltas[c["distributor_id"]].pending_fen += c["amount_fen"]
            credits.credited[c["distributor_id"]].append(c["amount_fen"])
            if self.config.webhooks:
                credits.hooks[WebhookEvent.COMMISSION_CREATED].append((c["distributor_id"], {
                    "order_no": e.order_no, "distributor_code": codes[c["distributor_id"]], "depth": c["depth"],
                    "amount_fen": c["amount_fen"], "order_amount_fen": row["amount_fen"], "at": china_time(now)}))
        credits.people.update((p.id, p) for p in chain)
        credits.sales.append(SaleChange(chain[0].id, row["paid_at"], e.sku, row["amount_fen"], orders=1))
        return done

    def _change(self, e: EventIn) -> _Applied:
        """shipped, completed, refunded or cancelled, on an order that exists."""
        known = self.orders.get(e.order_no)
        if known is None:
            raise Refusal("unknown_order", f"No order {e.order_no!r} has been paid; send its 'paid' event "
                          "first.", details={"order_no": e.order_no})
        order = _Order(dict(known.row), [dict(c) for c in known.comms])  # changed on copies until it went through
        status = _next_status(e, order.row)
        done = _Applied(order, [], [], Credits(), defaultdict(Delta))
        if e.type == rules.COMPLETED:
            self._complete(done)
        elif e.type in (rules.REFUNDED, rules.CANCELLED):
            self._reverse(e, done)
        order.row["status"], order.row["updated_at"] = status, self.now
        return done

    def _complete(self, done: _Applied) -> None:
        """A completed order: its commissions unfreeze after the freeze (at once with no freeze)."""
        now, freeze_days, order = self.now, self.config.distribution.freeze_days, done.order
        order.row["completed_at"] = now
        done.credits.completed.add(order.row["distributor_id"])
        due = rules.unfreeze_at(now, freeze_days)
        for c in order.comms:
            c["unfreeze_at"] = due
            if freeze_days == 0 and c["state"] == CommissionState.PENDING:
                rest = c["amount_fen"] - c["reversed_fen"]
                c["state"] = CommissionState.AVAILABLE
                done.deltas[c["distributor_id"]].pending_fen -= rest
                done.deltas[c["distributor_id"]].available_fen += rest
                done.credits.freed[c["distributor_id"]] += rest
        done.changed.extend(order.comms)

    def _reverse(self, e: EventIn, done: _Applied) -> None:
        """A refund or a cancellation: the sale taken back and each commission's share of it
        reversed, with a reversal entry each."""
        row, now, credits = done.order.row, self.now, done.credits
        taken = (e.amount_fen or 0) if e.type == rules.REFUNDED else row["amount_fen"] - row["refunded_fen"]
        credits.sales.append(SaleChange(row["distributor_id"], row["paid_at"], row["sku"], -taken,
                                        orders=-1 if e.type == rules.CANCELLED else 0))
        if e.type == rules.REFUNDED:
            row["refunded_fen"] += e.amount_fen or 0
        refunded = row["refunded_fen"] if e.type == rules.REFUNDED else row["amount_fen"]
        for c in done.order.comms:
            due = rules.reversal_due(c["amount_fen"], c["reversed_fen"], refunded, row["amount_fen"])
            if due <= 0:
                continue
            c["reversed_fen"] += due
            if c["state"] == CommissionState.PENDING:
                done.deltas[c["distributor_id"]].pending_fen -= due
            else:
                done.deltas[c["distributor_id"]].available_fen -= due
            done.entries.append({"distributor_id": c["distributor_id"], "kind": EntryKind.REVERSAL,
                                 "amount_fen": -due, "ref": e.event_id, "order_no": e.order_no, "created_at": now,
                                 "counted_at": row["paid_at"]})
            if self.config.webhooks:
                credits.hooks[WebhookEvent.COMMISSION_REVERSED].append((c["distributor_id"], {
                    "order_no": e.order_no, "distributor_code": self.credits.people[c["distributor_id"]].code,
                    "depth": c["depth"], "amount_fen": due, "reason": e.type, "event_id": e.event_id,
                    "at": china_time(now)}))
            done.changed.append(c)


def _next_status(e: EventIn, row: dict[str, Any]) -> str:
    """The order's status after the event; refused when the event does not apply to it."""
    try:
        return rules.next_status(row["status"], e.type, amount_fen=row["amount_fen"],
                                 refunded_fen=row["refunded_fen"], refund_fen=e.amount_fen or 0)
    except rules.TransitionError as err:
        raise Refusal(err.code, f"Order {e.order_no}: {err}.",
                      details={"status": row["status"], "type": e.type, "refunded_fen": row["refunded_fen"],
                               "amount_fen": row["amount_fen"]}) from None
