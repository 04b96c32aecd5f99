"""Contests and ranks at scale on SQLite: 排行 and 等级 with 100,000 distributors and 1,000,000
orders in the month, and the settlement of a contest with about 100,000 participants.

    .venv/bin/python bench/contests.py [--distributors 100000] [--orders 1000000] [--top 1000] [--keep]

1. A SQLite file in a temp dir is migrated and seeded straight into the tables (sqlite3
   executemany, one transaction): `--distributors` distributors and `--orders` orders paid this
   calendar month (China time), random sellers and amounts, every 20th refunded in part, every
   50th cancelled, every third completed; ten distributors to an inviter.
2. This month's 月度推广之星 is made as the `contests` job makes it (`ensure_star`: the contest
   and its running totals backfilled from the orders with one INSERT ... SELECT). Printed: the time.
3. 排行: the handler alone (`handlers.contests.on_top`: its queries and its text), called `--top`
   times for random distributors, each inside a unit of work on the app's writer as the dispatcher
   runs it (the webhook and the passive reply around it are not in this figure). Printed: p50,
   p99. Target: p99 < 20 ms.
4. 等级: the handler alone (`handlers.ranks.on_rank`: personal sales, team size, the text with
   its bars), timed the same way. Target: p99 < 20 ms.
5. Settlement: a sales contest over the same orders, already ended, with ten prizes, is created
   (backfill timed) and settled by `domain.contest_results.settle` in one unit (`slow=True`, as the
   job runs it): the final standings recounted from the orders, the ten rewards, notices and the
   results campaign. Printed: participants and the time. Target: < 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from bench.scratch import scratch_dir  # noqa: E402
from kit.chat import Ctx  # noqa: E402
from kit.scheduler import JOBS  # noqa: E402
from domain import contest_results, contests  # noqa: E402
from domain.config import Config  # noqa: E402
from domain.formats import month_start  # noqa: E402
from kit.app_keys import PACKS
from content.store import PackLibrary  # noqa: E402
from handlers.contests import on_top  # noqa: E402
from handlers.ranks import on_rank  # noqa: E402
from storage.db import create_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Distributor  # noqa: E402
from storage.tables import CONTEST_SCORES  # noqa: E402
from storage.writer import Writer  # noqa: E402

FANOUT = 10
# Lines that most distributors are short of, so that 等级 shows the next rank's bars.
RANKS = [{"key": "junior", "name": "初级推广员", "rates": [0.10, 0.03]},
         {"key": "gold", "name": "黄金合伙人", "rates": [0.15, 0.05], "min_sales_fen": 1_000_000, "min_team_size": 10}]

def seed(path: Path, distributors: int, orders: int, now: datetime) -> None:
    rng = random.Random(7)
    start = month_start(now).astimezone(UTC)
    span = max(int((now - start).total_seconds()) - 60, 60)
    # SQLite keeps UTC times as text, as the UtcDateTime column type writes them.
    stamp = "%Y-%m-%d %H:%M:%S.%f"
    joined = (start - timedelta(days=40)).strftime(stamp)
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany(
                "INSERT INTO distributors (id, code, openid, phone, name, inviter_id, rank, status, registered_at,"
                " weekly_report) VALUES (?, ?, ?, ?, ?, ?, 'junior', 'active', ?, 1)",
                ((i + 1, f"C{i:05X}"[-6:], f"obench{i:010d}", str(13000000000 + i), "张" + "三四五六七"[i % 5],
                  (i - 1) // FANOUT + 1 if i else None, joined) for i in range(distributors)))

            def rows() -> Any:
                for k in range(orders):
                    at = (start + timedelta(seconds=rng.randrange(span))).strftime(stamp)
                    amount = rng.randrange(1000, 50000)
                    status = "cancelled" if k % 50 == 0 else "completed" if k % 3 == 0 else "paid"
                    refunded = amount // 4 if k % 20 == 0 else 0
                    yield (f"BC{k}", rng.randrange(distributors) + 1, amount, refunded, status, at,
                           at if status == "completed" else None, at)
            db.executemany("INSERT INTO orders (order_no, distributor_id, amount_fen, refunded_fen, status, paid_at,"
                           " completed_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows())
        db.execute("ANALYZE")
    finally:
        db.close()


def percentiles(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


class _NoJobs:
    def start(self, *args: Any, **kw: Any) -> bool:
        return False


async def run(path: Path, distributors: int, orders: int, calls: int) -> None:
    db_url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(db_url)
    await upgrade(engine)
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    seed(path, distributors, orders, now)
    print(f"seeded {distributors:,} distributors and {orders:,} orders this month in {time.perf_counter() - t0:.1f} s")
    config = Config(database={"url": db_url}, contests={"monthly_star_prizes_fen": [50000, 30000, 10000]},
                    ranks=RANKS)
    writer = Writer(engine)
    try:
        t0 = time.perf_counter()
        await writer.run(lambda s: contests.ensure_star(s, config, now), slow=True)
        scored = await writer.run(lambda s: s.scalar(select(func.count()).select_from(CONTEST_SCORES)))
        print(f"monthly star made with its backfill ({scored:,} score rows) in {time.perf_counter() - t0:.2f} s")

        rng = random.Random(4)
        app = {JOBS: _NoJobs(), PACKS: PackLibrary()}

        def timed(handler: Any, expected: str) -> Any:
            def one(session: Any) -> float:
                d = session.get(Distributor, rng.randrange(distributors) + 1)
                ctx = Ctx(session=session, app=app, config=config, now=datetime.now(UTC), openid=d.openid,
                          distributor=d, state=None)
                t = time.perf_counter()
                reply = handler(None, ctx)
                took = time.perf_counter() - t
                assert expected in reply.content, reply
                return took
            return one
        for name, handler, expected in (("排行", on_top, "月度推广之星"), ("等级", on_rank, "【我的等级】")):
            times = [await writer.run(timed(handler, expected)) for _ in range(calls)]
            print(f"{name} handler alone (in a unit of work, {calls} calls, random askers): {percentiles(times)}")

        ended = datetime.now(UTC)
        t0 = time.perf_counter()
        cid = await writer.run(lambda s: contests.create(
            s, title="结算压测赛", metric="sales", skus=(), starts_at=month_start(now).astimezone(UTC), ends_at=ended,
            prizes_fen=[10000] * 10, audience="all", now=ended), slow=True)
        print(f"contest created with its backfill in {time.perf_counter() - t0:.2f} s")
        participants = await writer.run(lambda s: s.scalar(select(func.count()).select_from(CONTEST_SCORES)
                                                           .where(CONTEST_SCORES.c.contest_id == cid)))
        t0 = time.perf_counter()
        campaign = await writer.run(lambda s: contest_results.settle(s, cid, datetime.now(UTC)), slow=True)
        took = time.perf_counter() - t0
        again = await writer.run(lambda s: contest_results.settle(s, cid, datetime.now(UTC)), slow=True)
        print(f"settlement of a contest with {participants:,} participants: {took:.2f} s "
              f"(campaign {campaign}; a second settle: {again})")
        if campaign is None or again is not None:
            raise SystemExit("the contest was not settled exactly once")
    finally:
        await writer.close()
        await engine.dispose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distributors", type=int, default=100_000)
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--top", type=int, default=1000, help="排行 and 等级 calls to time")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    with scratch_dir("distbot-contests-", args.keep) as workdir:
        await run(workdir / "distbot.db", args.distributors, args.orders, args.top)


if __name__ == "__main__":
    asyncio.run(main())
