"""The order-event load of bench/orders.py (and reads.py, broadcast.py): distributors seeded
straight into a database, the ledger topped up, and order events posted by closed-loop senders.

- `seed_distributors(url, n)`: n distributors, ten to an inviter (codes from `code_of`);
- `seed_entries(url, total, n)`: the ledger topped up to `total` commission entries, balances alike;
- `post_events_to(bases, token, events, concurrency, n)`: `events` order events (paid, then
  completed, per order) from `concurrency` senders, spread round-robin over the servers at `bases`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import text

from storage.db import create_engine

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
FANOUT = 10


def code_of(i: int) -> str:
    out = ""
    for _ in range(6):
        i, r = divmod(i, len(ALPHABET))
        out += ALPHABET[r]
    return out


def percentiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    if not xs:
        return {}
    pick = lambda q: xs[min(int(q * len(xs)), len(xs) - 1)] * 1000  # noqa: E731
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": xs[-1] * 1000}


# ---- seeding ---------------------------------------------------------------------------------
async def seed_distributors(db_url: str, n: int) -> None:
    engine = create_engine(db_url)
    now = datetime.now(UTC) - timedelta(days=90)
    try:
        async with engine.begin() as conn:
            have = (await conn.execute(text("SELECT count(*) FROM distributors"))).scalar_one()
            rows = [{"id": i + 1, "code": code_of(i), "openid": f"obench{i:010d}", "phone": str(13000000000 + i),
                     "name": "测试" + code_of(i)[:2], "inviter_id": (i - 1) // FANOUT + 1 if i else None,
                     "rank": "junior", "status": "active", "registered_at": now}
                    for i in range(have, n)]
            for chunk in range(0, len(rows), 20000):
                await conn.execute(text(
                    "INSERT INTO distributors (id, code, openid, phone, name, inviter_id, rank, status, registered_at)"
                    " VALUES (:id, :code, :openid, :phone, :name, :inviter_id, :rank, :status, :registered_at)"),
                    rows[chunk:chunk + 20000])
            if engine.dialect.name == "postgresql":
                await conn.execute(text("SELECT setval('distributors_id_seq', (SELECT max(id) FROM distributors))"))
    finally:
        await engine.dispose()


async def seed_entries(db_url: str, total: int, distributors: int) -> int:
    """Top the ledger up to `total` entries (commissions over the last 60 days), balances alike."""
    engine = create_engine(db_url)
    rng = random.Random(7)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            have = (await conn.execute(text("SELECT count(*) FROM ledger_entries"))).scalar_one()
            missing = max(total - have, 0)
            for start in range(0, missing, 50000):
                rows = []
                for k in range(start, min(start + 50000, missing)):
                    rows.append({"d": rng.randrange(distributors) + 1, "a": rng.randrange(100, 5000),
                                 "r": f"seed-{k}", "t": now - timedelta(seconds=rng.randrange(60 * 86400))})
                await conn.execute(text(
                    "INSERT INTO ledger_entries (distributor_id, kind, amount_fen, ref, created_at, counted_at)"
                    " VALUES (:d, 'commission', :a, :r, :t, :t)"), rows)
            if missing:
                await conn.execute(text(
                    "INSERT INTO balances (distributor_id, pending_fen, available_fen, withdrawing_fen, withdrawn_fen)"
                    " SELECT distributor_id, 0, sum(amount_fen), 0, 0 FROM ledger_entries WHERE ref LIKE 'seed-%'"
                    " GROUP BY distributor_id ON CONFLICT (distributor_id) DO UPDATE"
                    " SET available_fen = balances.available_fen + excluded.available_fen"))
            return (await conn.execute(text("SELECT count(*) FROM ledger_entries"))).scalar_one()
    finally:
        await engine.dispose()


# ---- load ------------------------------------------------------------------------------------
async def post_events_to(bases: Sequence[str], token: str, events: int, concurrency: int,
                         distributors: int, buyers: int = 0) -> dict[str, Any]:
    """`events` order events (paid, then completed, per order) from `concurrency` closed-loop
    senders, sender k posting to bases[k % len(bases)]; with `buyers`, each paid event names one of
    that many buyers, who buys from the same few distributors (repeat purchases)."""
    orders = events // 2
    counter = iter(range(orders))
    latencies: list[float] = []
    errors: dict[int, int] = {}
    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {token}"}
    run = secrets.token_hex(3)

    async def sender(http: aiohttp.ClientSession, base: str) -> None:
        for n in counter:
            no = f"B{run}-{n}"
            d = rng.randrange(distributors)
            paid = {"event_id": f"{no}-p", "order_no": no, "type": "paid", "amount_fen": 1000 + n % 50000,
                    "distributor_code": code_of(d)}
            if buyers:
                b = rng.randrange(buyers)
                paid.update(buyer_openid=f"obuyer{b:08d}", distributor_code=code_of((b * 7 + n % 3) % distributors))
            for body in (paid,
                         {"event_id": f"{no}-c", "order_no": no, "type": "completed"}):
                t0 = time.perf_counter()
                async with http.post(base + "/api/orders/events", json=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors[r.status] = errors.get(r.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(sender(http, bases[k % len(bases)]) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"events": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed,
            "latency_ms": percentiles(latencies), "errors": errors}
