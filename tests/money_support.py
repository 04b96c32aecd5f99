"""Helpers for the money tests: a harness with chosen distribution settings, distributors seeded
straight into the database, order events over HTTP, and the ledger invariants."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from sandbox.platform import Platform, SimUser
from kit.app_keys import SESSIONMAKER
from domain.ledger import balances, ledger_sums
from domain.formats import CHINA, month_of
from storage.tables import DAILY_TOTALS, DISTRIBUTOR_TOTALS, DISTRIBUTORS, ENTRIES, ORDERS
from storage.models import Distributor, Follower
from storage.models_ledger import Commission, EntryKind, LedgerEntry, Order, OrderEvent, Withdrawal
from tests.conftest import Harness, make_config

_codes = itertools.count(1)
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def fresh_code() -> str:
    n = next(_codes)
    letters = ""
    for _ in range(4):
        n, r = divmod(n, len(_CODE_ALPHABET))
        letters += _CODE_ALPHABET[r]
    return "T" + letters + "9"


@asynccontextmanager
async def money_harness(db_url: str, platform: Platform, wechat_server: TestServer, *,
                        ranks: list[dict[str, Any]] | None = None, **distribution: Any) -> AsyncIterator[Harness]:
    sections: dict[str, Any] = {"distribution": distribution}
    if ranks is not None:
        sections["ranks"] = ranks
    async with Harness(make_config(db_url, **sections), platform, wechat_server, reply_deadline=3.0) as h:
        yield h


async def seed(h: Harness, *, inviter: Distributor | None = None, rank: str = "junior", name: str = "张三",
               user: SimUser | None = None) -> tuple[Distributor, SimUser]:
    """A registered distributor, written straight into the database (fast), with its sandbox user."""
    user = user or h.user()
    user.subscribed = True
    now = datetime.now(UTC)
    async with h.app[SESSIONMAKER]() as session, session.begin():
        d = Distributor(code=fresh_code(), openid=user.openid, phone=f"139{next(_codes):08d}", name=name,
                        inviter_id=inviter.id if inviter else None, rank=rank, status="active", registered_at=now)
        session.add_all([d, Follower(openid=user.openid, subscribed=True, followed_at=now,
                                     last_interaction_at=now, created_at=now)])
    return d, user


_events = itertools.count(1)


def event(order_no: str, type: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"evt-{next(_events)}-{order_no}-{type}", "order_no": order_no, "type": type, **fields}


async def post_event(h: Harness, body: Any = None, **fields: Any) -> tuple[int, Any]:
    return await h.api("POST", "/orders/events", json=body if body is not None else fields)


async def pay(h: Harness, order_no: str, amount: int, d: Distributor, **extra: Any) -> dict[str, Any]:
    status, body = await post_event(h, event(order_no, "paid", amount_fen=amount, distributor_code=d.code, **extra))
    assert status == 200, body
    return body


async def send(h: Harness, order_no: str, type: str, **extra: Any) -> dict[str, Any]:
    status, body = await post_event(h, event(order_no, type, **extra))
    assert status == 200, body
    return body


async def balance(h: Harness, d: Distributor) -> dict[str, int]:
    status, body = await h.api("GET", f"/distributors/{d.code}")
    assert status == 200, body
    return body["balance"]


async def snapshot(h: Harness) -> dict[str, Any]:
    """Everything the money side stores, to compare before and after a refused request."""
    async with h.app[SESSIONMAKER]() as session:
        counts = {m.__tablename__: await session.scalar(select(func.count()).select_from(m))
                  for m in (Order, OrderEvent, Commission, LedgerEntry, Withdrawal)}
        rows = (await session.execute(select(Order.order_no, Order.status, Order.refunded_fen))).all()
        comms = (await session.execute(select(Commission.order_no, Commission.distributor_id,
                                              Commission.reversed_fen, Commission.state))).all()
        ids = (await session.scalars(select(Distributor.id))).all()
        bal = await session.run_sync(balances, ids)
    return {"counts": counts, "orders": sorted(rows), "commissions": sorted(comms), "balances": bal}


async def check_invariants(h: Harness) -> None:
    """The ledger's promises (CONTRACT §4.1, §4.2), checked over every distributor."""
    async with h.app[SESSIONMAKER]() as session:
        ids = (await session.scalars(select(Distributor.id))).all()
        bal = await session.run_sync(balances, ids)
        sums = await session.run_sync(ledger_sums)
        for did in ids:
            b, s = bal[did], sums.get(did, {"total": 0, "withdrawals": 0})
            assert b["pending_fen"] + b["available_fen"] == s["total"], (did, b, s)
            assert b["withdrawing_fen"] + b["withdrawn_fen"] == -s["withdrawals"], (did, b, s)
            assert b["pending_fen"] >= 0 and b["withdrawing_fen"] >= 0 and b["withdrawn_fen"] >= 0, (did, b)
        # No posting twice.
        dupes = (await session.execute(
            select(ENTRIES.c.distributor_id, ENTRIES.c.kind, ENTRIES.c.ref, func.count())
            .group_by(ENTRIES.c.distributor_id, ENTRIES.c.kind, ENTRIES.c.ref).having(func.count() > 1))).all()
        assert not dupes, dupes
        # Each commission: its reversals add up to reversed_fen, never beyond the commission;
        # the pending bucket is exactly the unreversed rest of the pending commissions.
        comms = (await session.execute(select(Commission.order_no, Commission.distributor_id, Commission.amount_fen,
                                              Commission.reversed_fen, Commission.state))).all()
        reversals = dict(((o, d), -int(t)) for o, d, t in (await session.execute(
            select(ENTRIES.c.order_no, ENTRIES.c.distributor_id, func.sum(ENTRIES.c.amount_fen))
            .where(ENTRIES.c.kind == EntryKind.REVERSAL).group_by(ENTRIES.c.order_no, ENTRIES.c.distributor_id))).all())
        pending: dict[int, int] = {}
        for o, d, amount, rev, state in comms:
            assert amount > 0 and 0 <= rev <= amount, (o, d, amount, rev)
            assert reversals.get((o, d), 0) == rev, (o, d, rev, reversals.get((o, d)))
            if state == "pending":
                pending[d] = pending.get(d, 0) + amount - rev
        for did in ids:
            assert bal[did]["pending_fen"] == pending.get(did, 0), (did, bal[did], pending.get(did, 0))
        # Nobody has taken out more than they ever earned.
        earned = dict((await session.execute(
            select(ENTRIES.c.distributor_id, func.sum(ENTRIES.c.amount_fen))
            .where(ENTRIES.c.kind.in_((EntryKind.COMMISSION, EntryKind.REWARD)))
            .group_by(ENTRIES.c.distributor_id))).all())
        for did in ids:
            assert bal[did]["withdrawing_fen"] + bal[did]["withdrawn_fen"] <= int(earned.get(did, 0) or 0)
        assert await session.run_sync(daily_totals) == await session.run_sync(recount_days)
        assert await session.run_sync(distributor_totals) == await session.run_sync(recount_totals)


def daily_totals(session: Any) -> dict[Any, tuple[int, int, int, int]]:
    t = DAILY_TOTALS.c
    return {day: (int(a), int(b), int(c), int(d)) for day, a, b, c, d in session.execute(
        select(t.day, t.sales_fen, t.orders, t.commission_fen, t.first_sales)) if (a, b, c, d) != (0, 0, 0, 0)}


def recount_days(session: Any) -> dict[Any, tuple[int, int, int, int]]:
    """What the console's daily totals must hold, counted again from the orders, the ledger and
    the distributors' first sales."""
    days: dict[Any, list[int]] = {}

    def add(at: datetime, i: int, value: int) -> None:
        days.setdefault(at.astimezone(CHINA).date(), [0, 0, 0, 0])[i] += value
    o, e, d = ORDERS.c, ENTRIES.c, DISTRIBUTORS.c
    for paid_at, amount, refunded, status in session.execute(select(o.paid_at, o.amount_fen, o.refunded_fen, o.status)):
        if status != "cancelled":
            add(paid_at, 0, amount - refunded)
            add(paid_at, 1, 1)
    for at, fen in session.execute(select(o.paid_at, e.amount_fen).join(ORDERS, o.order_no == e.order_no).where(
            e.kind.in_((EntryKind.COMMISSION, EntryKind.REVERSAL)))):  # on the day the order was paid
        add(at, 2, fen)
    sellers = set(session.scalars(select(o.distributor_id)))
    for did, first in session.execute(select(d.id, d.first_sale_at)):
        assert (first is not None) == (did in sellers), (did, first)
        if first is not None:
            add(first, 3, 1)
    return {day: tuple(v) for day, v in days.items() if any(v)}


def distributor_totals(session: Any) -> dict[tuple[int, int], tuple[int, int, int]]:
    t = DISTRIBUTOR_TOTALS.c
    return {(did, month): (a, b, c) for did, month, a, b, c in session.execute(
        select(t.distributor_id, t.month, t.sales_fen, t.orders, t.commission_fen)) if (a, b, c) != (0, 0, 0)}


def recount_totals(session: Any) -> dict[tuple[int, int], tuple[int, int, int]]:
    """What the distributors' running totals must hold (month 0: all time), counted again from
    the orders and the ledger."""
    rows: dict[tuple[int, int], list[int]] = {}

    def add(did: int, at: datetime, i: int, value: int) -> None:
        for month in (0, month_of(at).key):
            rows.setdefault((did, month), [0, 0, 0])[i] += value
    o, e = ORDERS.c, ENTRIES.c
    for did, paid_at, amount, refunded, status in session.execute(
            select(o.distributor_id, o.paid_at, o.amount_fen, o.refunded_fen, o.status)):
        if status != "cancelled":
            add(did, paid_at, 0, amount - refunded)
            add(did, paid_at, 1, 1)
    for did, at, fen in session.execute(select(e.distributor_id, o.paid_at, e.amount_fen)
                                        .join(ORDERS, o.order_no == e.order_no).where(
            e.kind.in_((EntryKind.COMMISSION, EntryKind.REVERSAL)))):
        add(did, at, 2, fen)
    return {key: (a, b, c) for key, (a, b, c) in rows.items() if (a, b, c) != (0, 0, 0)}


__all__ = ["balance", "check_invariants", "event", "fresh_code", "money_harness", "pay", "post_event",
           "seed", "send", "snapshot"]
