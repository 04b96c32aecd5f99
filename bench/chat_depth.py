"""团队, 团队订单 and 明细 for a distributor with a big team and a long ledger: page 1 and the last
page of each, on SQLite (and on PostgreSQL when DISTBOT_TEST_PG_URL is set, or with --pg-url).

    .venv/bin/python bench/chat_depth.py [--members 10000] [--entries 100000] [--distributors 100000]
                                         [--calls 200] [--pg-url URL] [--keep]

1. A fresh database is migrated and seeded straight into the tables (SQLAlchemy Core bulk inserts):
   one distributor with `--members` members (a fifth direct, the rest four to a direct member),
   each bound by scan or code, some with sales; other distributors up to `--distributors`, ten to
   an inviter; `--entries` / 2 orders sold by the members, each with the distributor's commission
   (depth 1 or 2) and the seller's; the distributor's ledger `--entries` rows (commissions,
   reversals, withdrawals, rewards, adjustments); this month's running totals of every seller.
2. Each command's handler (`on_team`, `on_team_orders`, `on_details`: its queries and its text)
   is called `--calls` times for page 1 and as many for its last page, each call inside a unit of
   work on the app's writer as the dispatcher runs it (the webhook around it is not in the
   figure). Printed: p50, p99 and max per command and page. Target: **p99 < 30 ms**.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from bench.harness import Databases  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from kit.chat import Ctx, Incoming  # noqa: E402
from domain.config import Config  # noqa: E402
from domain.formats import month_of  # noqa: E402
from domain.team_pages import Paging, entry_count, team_figures, team_order_count  # noqa: E402
from handlers.details import on_details  # noqa: E402
from handlers.team import on_team  # noqa: E402
from handlers.team_orders import on_team_orders  # noqa: E402
from storage.db import create_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Distributor  # noqa: E402
from storage.tables import COMMISSIONS, DISTRIBUTOR_TOTALS, DISTRIBUTORS, ENTRIES, ORDERS  # noqa: E402
from storage.writer import Writer  # noqa: E402

ME = 1
CHUNK = 10_000
TARGET_MS = 30.0
NOW = datetime.now(UTC)
KINDS = ("reversal", "withdrawal", "reward", "adjustment")


def distributors(members: int, total: int, now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """The distributor (id 1), their members, then the others up to `total`, ten to an inviter."""
    direct = max(members // 5, 1)
    rows = []
    for i in range(1, max(total, members + 1) + 1):
        if i == ME:
            inviter = None
        elif i <= members + 1:  # the team: ids 2 .. direct + 1 direct, the rest under them
            inviter = ME if i <= direct + 1 else 2 + (i - direct - 2) % direct
        else:
            inviter = members + 2 + (i - members - 2) // 10 if i > members + 11 else None
        rows.append({"id": i, "code": f"B{i:05d}"[-6:], "openid": f"obench{i:010d}", "phone": str(13000000000 + i),
                     "name": "张三李四王五赵六"[i % 8] + "某", "inviter_id": inviter,
                     "bound_by": rng.choice(("scan", "code")) if inviter else None, "rank": "junior",
                     "status": "active" if i % 97 else "exited", "registered_at": now - timedelta(days=i % 300),
                     "first_sale_at": now - timedelta(days=3) if i % 3 == 0 else None, "weekly_report": True})
    return rows


def money(members: int, entries: int, now: datetime, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Orders by the members, the commissions they paid (the distributor's and the seller's), the
    distributor's ledger and this month's totals of the sellers."""
    direct = max(members // 5, 1)
    orders, commissions, ledger, totals = [], [], [], {}
    for k in range(entries // 2):
        seller = 2 + rng.randrange(members)
        at = now - timedelta(seconds=(entries // 2 - k) * 60)
        amount = rng.randrange(1000, 50000)
        no = f"CD{k:07d}"
        orders.append({"order_no": no, "distributor_id": seller, "amount_fen": amount, "refunded_fen": 0,
                       "status": "completed" if k % 3 else "paid", "buyer_openid": f"obuyer{k % 5000}",
                       "paid_at": at, "updated_at": at})
        depth = 1 if seller <= direct + 1 else 2
        for did, d, rate in ((ME, depth, 10 if depth == 1 else 3), (seller, 0, 10)):
            commissions.append({"order_no": no, "distributor_id": did, "depth": d, "rate": f"0.{rate:02d}",
                                "amount_fen": amount * rate // 100, "reversed_fen": 0, "state": "pending",
                                "created_at": at})
        ledger.append({"distributor_id": ME, "kind": "commission", "amount_fen": amount * (10 if depth == 1 else 3)
                       // 100, "ref": no, "order_no": no, "created_at": at})
        if month_of(at) == month_of(now):
            totals[seller] = totals.get(seller, 0) + amount
    for k in range(entries - len(ledger)):
        kind = KINDS[k % len(KINDS)]
        sign = -1 if kind in ("reversal", "withdrawal") else 1
        ledger.append({"distributor_id": ME, "kind": kind, "amount_fen": sign * rng.randrange(100, 5000),
                       "ref": f"other-{k}", "order_no": None, "created_at": now - timedelta(seconds=k * 37)})
    return {"orders": orders, "commissions": commissions, "ledger": ledger,
            "totals": [{"distributor_id": d, "month": month_of(now).key, "sales_fen": fen, "orders": 1,
                        "commission_fen": 0} for d, fen in totals.items()]}


async def seed(db_url: str, members: int, entries: int, total: int, now: datetime) -> None:
    rng = random.Random(7)
    engine = create_engine(db_url)
    try:
        made = money(members, entries, now, rng)
        async with engine.begin() as conn:
            for table, rows in ((DISTRIBUTORS, distributors(members, total, now, rng)), (ORDERS, made["orders"]),
                                (COMMISSIONS, made["commissions"]), (ENTRIES, made["ledger"]),
                                (DISTRIBUTOR_TOTALS, made["totals"])):
                for start in range(0, len(rows), CHUNK):
                    await conn.execute(insert(table), rows[start:start + CHUNK])
        # Statistics, and on PostgreSQL the visibility map that index-only scans need (autovacuum's
        # work in a live database).
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    finally:
        await engine.dispose()


def percentiles(times: list[float]) -> tuple[str, float]:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):6.2f} ms, p99 {p99:6.2f} ms, max {ms[-1]:6.2f} ms", p99


async def time_commands(db_url: str, calls: int) -> float:
    """Each command's page 1 and last page, `calls` times each; the slowest p99 (ms)."""
    engine = create_engine(db_url)
    writer = Writer(engine)
    config = Config(database={"url": db_url}, distribution={"max_levels": 3})
    worst = 0.0
    try:
        last = await writer.run(lambda s: {
            "团队": Paging(1, sum(n for n, _ in team_figures(s, ME, 2, NOW, NOW, sales=False).levels)).pages,
            "团队订单": Paging(1, team_order_count(s, ME)).pages, "明细": Paging(1, entry_count(s, ME)).pages})
        for word, handler in (("团队", on_team), ("团队订单", on_team_orders), ("明细", on_details)):
            for page in (1, last[word]):
                def one(session: Any, page: int = page, handler: Any = handler) -> float:
                    me = session.get(Distributor, ME)
                    ctx = Ctx(session=session, app={}, config=config, now=datetime.now(UTC), openid=me.openid,
                              distributor=me, state=None, args=str(page) if page > 1 else "")
                    t = time.perf_counter()
                    reply = handler(Incoming(me.openid, "gh_bench", "text", 0), ctx)
                    took = time.perf_counter() - t
                    assert "¥" in reply.content or "加入" in reply.content, reply.content[:300]
                    return took
                times = [await writer.run(one) for _ in range(calls)]
                shown, p99 = percentiles(times)
                worst = max(worst, p99)
                print(f"  {word:<4} page {page:>6}: {shown}", flush=True)
    finally:
        await writer.close()
        await engine.dispose()
    return worst


async def run_on(kind: str, pg_url: str | None, workdir: Path, args: argparse.Namespace) -> float:
    dbs = Databases(kind, pg_url, workdir)
    try:
        db_url = await dbs.fresh("chat_depth")
        engine = create_engine(db_url)
        await upgrade(engine)
        await engine.dispose()
        t0 = time.perf_counter()
        await seed(db_url, args.members, args.entries, args.distributors, NOW)
        print(f"{dbs.describe()}: seeded a team of {args.members:,} among {args.distributors:,} distributors and a "
              f"ledger of {args.entries:,} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        return await time_commands(db_url, args.calls)
    finally:
        await dbs.cleanup()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--entries", type=int, default=100_000, help="the distributor's ledger rows")
    ap.add_argument("--distributors", type=int, default=100_000, help="distributors in all (the team among them)")
    ap.add_argument("--calls", type=int, default=200, help="calls per command and page")
    ap.add_argument("--pg-url", default=os.environ.get("DISTBOT_TEST_PG_URL"),
                    help="a PostgreSQL server (default: DISTBOT_TEST_PG_URL; none: SQLite only)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    with scratch_dir("distbot-chat-depth-", args.keep) as workdir:
        worst = await run_on("sqlite", None, workdir, args)
        if args.pg_url:
            worst = max(worst, await run_on("postgresql", args.pg_url, workdir, args))
    print(f"slowest p99: {worst:.2f} ms (target < {TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
