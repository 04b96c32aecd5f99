"""The monthly team bonus at scale on SQLite: 100,000 distributors and 1,000,000 orders in the month.

    .venv/bin/python bench/team_bonus.py [--distributors 100000] [--orders 1000000] [--small] [--keep]

1. A SQLite file in a temp dir is migrated and seeded straight into the tables (sqlite3
   executemany, one transaction): `--distributors` distributors, ten to an inviter, and `--orders`
   orders paid last month (China time) by random sellers, every 20th refunded in part, every 50th
   cancelled. `--small`: 2,000 distributors and 20,000 orders (tests/test_bench_scripts.py).
2. The `team-bonus` job's work for last month (handlers.team_bonus.pay_month: one aggregate
   INSERT ... SELECT, then a chunk of 5,000 paid per unit), with three tiers and a cap. Printed: the
   time, the rewards paid and their sum, and this process's peak RSS during the run (VmHWM reset
   before it where the kernel allows) against its RSS before. Target: < 60 s, memory flat.
3. The same job again: nothing more is paid (printed: the rewards after it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from bench.harness import peak_rss_mb, rss_mb  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from domain.clock import Clock  # noqa: E402
from domain.config import Config  # noqa: E402
from domain.formats import Month, month_of  # noqa: E402
from domain.plans import reward_ref  # noqa: E402
from handlers.team_bonus import pay_month  # noqa: E402
from kit.app_keys import CLOCK, WRITER  # noqa: E402
from kit.live_settings import SETTINGS  # noqa: E402
from storage.db import create_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.tables import ENTRIES  # noqa: E402
from storage.writer import Writer  # noqa: E402

FANOUT = 10
REWARDS = {"team_cap_fen": 50_000, "team_tiers": [{"min_team_sales_fen": 100_000, "rate": 0.01},
                                                  {"min_team_sales_fen": 500_000, "rate": 0.02},
                                                  {"min_team_sales_fen": 1_000_000, "rate": 0.03}]}


def seed(path: Path, distributors: int, orders: int, month: Month) -> None:
    rng = random.Random(7)
    start = month.start.astimezone(UTC)
    span = int((month.end - month.start).total_seconds()) - 1
    stamp = "%Y-%m-%d %H:%M:%S.%f"  # SQLite keeps UTC times as text, as the UtcDateTime column type writes them
    joined = (start - timedelta(days=40)).strftime(stamp)
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany(
                "INSERT INTO distributors (id, code, openid, phone, name, inviter_id, rank, status, registered_at,"
                " weekly_report) VALUES (?, ?, ?, ?, ?, ?, 'junior', 'active', ?, 1)",
                ((i + 1, f"C{i:05X}"[-6:], f"obench{i:010d}", str(13000000000 + i), "张三",
                  (i - 1) // FANOUT + 1 if i else None, joined) for i in range(distributors)))

            def rows() -> Any:
                for k in range(orders):
                    at = (start + timedelta(seconds=rng.randrange(span))).strftime(stamp)
                    amount = rng.randrange(1000, 50000)
                    status = "cancelled" if k % 50 == 0 else "completed"
                    yield (f"TB{k}", rng.randrange(distributors) + 1, amount, amount // 4 if k % 20 == 0 else 0,
                           status, at, at)
            db.executemany("INSERT INTO orders (order_no, distributor_id, amount_fen, refunded_fen, status, paid_at,"
                           " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows())
        db.execute("ANALYZE")
    finally:
        db.close()


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: clear_refs 5); whether it could."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        return True
    return False


async def run(path: Path, distributors: int, orders: int) -> None:
    db_url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(db_url)
    await upgrade(engine)
    month = month_of(datetime.now(UTC)).previous
    t0 = time.perf_counter()
    seed(path, distributors, orders, month)
    print(f"seeded {distributors:,} distributors and {orders:,} orders in {month.label} "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    writer = Writer(engine)
    config = Config(database={"url": db_url}, rewards=REWARDS)
    app: dict[Any, Any] = {SETTINGS: SimpleNamespace(config=config), WRITER: writer, CLOCK: Clock()}

    async def rewards() -> tuple[int, int]:
        return tuple(await writer.run(lambda s: s.execute(  # type: ignore[return-value]
            select(func.count(), func.coalesce(func.sum(ENTRIES.c.amount_fen), 0))
            .where(ENTRIES.c.ref == reward_ref(month))).one()))
    try:
        pid, before = os.getpid(), rss_mb(os.getpid())
        reset = reset_peak()
        t0 = time.perf_counter()
        chunks = await pay_month(app, month)
        took = time.perf_counter() - t0
        peak = peak_rss_mb(pid)
        paid, total = await rewards()
        print(f"team bonus for {month.label}: {took:.2f} s ({chunks} chunks), {paid:,} rewards paid, "
              f"¥{total / 100:,.2f} in all; peak RSS during the run {peak:.0f} MB against {before:.0f} MB before"
              + ("" if reset else " (peak not reset: since the process started)") + ". Target: < 60 s", flush=True)
        await pay_month(app, month)
        again, _ = await rewards()
        print(f"a second run: {again:,} rewards in all", flush=True)
        if again != paid or not paid:
            raise SystemExit("the team bonus was not paid exactly once")
    finally:
        await writer.close()
        await engine.dispose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distributors", type=int, default=100_000)
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--small", action="store_true", help="2,000 distributors and 20,000 orders")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    if args.small:
        args.distributors, args.orders = 2_000, 20_000
    with scratch_dir("distbot-team-bonus-", args.keep) as workdir:
        await run(workdir / "distbot.db", args.distributors, args.orders)


if __name__ == "__main__":
    asyncio.run(main())
