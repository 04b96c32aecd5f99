"""The weekly-report job over many distributors: time, and memory that must not grow with them.

    .venv/bin/python bench/weekly.py [--distributors 100000] [--orders 300000] [--batch 1000]
                                     [--pg-url postgresql+asyncpg://...] [--keep]

1. A database (a SQLite file in a temp dir, or a fresh database on the --pg-url server) gets
   `--distributors` distributors, ten to an inviter, and `--orders` orders over the last three
   weeks (with their commission entries), straight into the tables.
2. The app is built from the factory without its workers (nothing is sent), and
   `send_weekly_reports` runs for next Monday's week: printed are the reports queued and
   reports/s. A second run must queue nothing (once a week). Then the week after's run, under
   tracemalloc: the peak of Python memory allocated during it holds one batch, not everyone.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.harness import create_database, drop_databases  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from app.factory import create_app  # noqa: E402
from domain.config import Config  # noqa: E402
from handlers.weekly_report import send_weekly_reports  # noqa: E402
from storage.db import create_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402

FANOUT = 10
CHUNK = 20000


async def seed(db_url: str, distributors: int, orders: int, now: datetime) -> None:
    engine = create_engine(db_url)
    rng = random.Random(7)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            joined = now - timedelta(days=30)
            people = [{"id": i + 1, "code": f"B{i:05X}"[-6:], "openid": f"obench{i:010d}", "phone": str(13000000000 + i),
                       "name": "测试" + str(i % 97), "inviter_id": (i - 1) // FANOUT + 1 if i else None,
                       "rank": "junior", "status": "active", "registered_at": joined - timedelta(minutes=i % 5000)}
                      for i in range(distributors)]
            for start in range(0, len(people), CHUNK):
                await conn.execute(text(
                    "INSERT INTO distributors (id, code, openid, phone, name, inviter_id, rank, status,"
                    " registered_at) VALUES (:id, :code, :openid, :phone, :name, :inviter_id, :rank, :status,"
                    " :registered_at)"), people[start:start + CHUNK])
            for start in range(0, orders, CHUNK):
                rows = []
                for k in range(start, min(start + CHUNK, orders)):
                    at = now - timedelta(seconds=rng.randrange(21 * 86400))
                    rows.append({"no": f"BW{k}", "d": rng.randrange(distributors) + 1, "a": rng.randrange(1000, 50000),
                                 "t": at, "c": at if k % 3 else None, "s": "completed" if k % 3 else "paid"})
                await conn.execute(text(
                    "INSERT INTO orders (order_no, distributor_id, amount_fen, refunded_fen, status, paid_at,"
                    " completed_at, updated_at) VALUES (:no, :d, :a, 0, :s, :t, :c, :t)"), rows)
                await conn.execute(text(
                    "INSERT INTO ledger_entries (distributor_id, kind, amount_fen, ref, order_no, created_at, counted_at)"
                    " VALUES (:d, 'commission', :a / 10, :no, :no, :t, :t)"), rows)
    finally:
        await engine.dispose()


async def run(db_url: str, distributors: int, orders: int, batch: int) -> None:
    now = datetime.now(UTC)
    started = time.perf_counter()
    await seed(db_url, distributors, orders, now)
    print(f"seeded {distributors} distributors and {orders} orders in {time.perf_counter() - started:.1f} s")
    config = Config(database={"url": db_url}, admin={"token": "bench-admin-token"})
    runner = web.AppRunner(create_app(config, workers=False, migrate=False))
    await runner.setup()  # the app's resources (database, writer, caches), no server, no workers
    try:
        app = runner.app
        monday = now + timedelta(days=7)  # the week reported is the one that just happened
        started = time.perf_counter()
        queued = await send_weekly_reports(app, monday, batch_size=batch)
        took = time.perf_counter() - started
        print(f"weekly reports: {queued} queued in {took:.1f} s ({queued / took:,.0f}/s), batch {batch}")
        again = await send_weekly_reports(app, monday, batch_size=batch)
        print(f"second run, same week: {again} queued")
        # Memory on another week's run (tracemalloc slows Python down: not timed).
        tracemalloc.start()
        following = await send_weekly_reports(app, monday + timedelta(days=7), batch_size=batch)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"the week after: {following} queued, peak Python memory during the run {peak / 2**20:.1f} MiB")
        if again or queued != distributors or following != distributors:
            raise SystemExit("the weekly report did not reach everyone exactly once a week")
    finally:
        await runner.cleanup()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distributors", type=int, default=100_000)
    ap.add_argument("--orders", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--pg-url", default="", help="a PostgreSQL server URL whose user may CREATE DATABASE")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (SQLite)")
    args = ap.parse_args()
    if args.pg_url:
        name = "bench_" + uuid.uuid4().hex[:12]
        await create_database(args.pg_url, name)
        try:
            await run(args.pg_url.rsplit("/", 1)[0] + "/" + name, args.distributors, args.orders, args.batch)
        finally:
            await drop_databases(args.pg_url, [name])
        return
    with scratch_dir("distbot-weekly-", args.keep) as workdir:
        await run(f"sqlite+aiosqlite:///{workdir}/distbot.db", args.distributors, args.orders, args.batch)


if __name__ == "__main__":
    asyncio.run(main())
