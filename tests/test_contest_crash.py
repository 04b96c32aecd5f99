"""Contests settled by real `distbot serve` processes that are killed with kill -9 while several
contests settle, and started again: each winner is paid exactly once, gets one notice row, and
each contest has one results campaign."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from sandbox.platform import Platform
from storage.db import create_engine
from storage.migrate import upgrade
from storage.tables import BALANCES, CONTESTS, DISTRIBUTORS, ENTRIES, ORDERS, OUTBOX
from tests.eventually import eventually
from tests.serve_support import Served
from tests.test_campaign_crash import config

SELLERS = 30
CONTESTS_N = 8
PRIZES = [30000, 20000, 10000]


async def seed(db_url: str, platform: Platform, now: datetime) -> None:
    """Sellers with orders paid in the last hour, straight into the tables."""
    engine = create_engine(db_url)
    rng = random.Random(11)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(DISTRIBUTORS.insert(), [
                {"id": i + 1, "code": f"K{i:05d}", "openid": f"oKill{i:05d}", "phone": f"137{i:08d}", "name": "测试",
                 "rank": "junior", "status": "active", "registered_at": now - timedelta(days=3), "weekly_report": True}
                for i in range(SELLERS)])
            await conn.execute(ORDERS.insert(), [
                {"order_no": f"KO-{n}", "distributor_id": rng.randrange(SELLERS) + 1,
                 "amount_fen": rng.randrange(1000, 50000), "refunded_fen": 0, "status": "paid",
                 "sku": f"SKU-{n % 3}", "paid_at": now - timedelta(minutes=rng.randrange(1, 55)), "updated_at": now}
                for n in range(300)])
    finally:
        await engine.dispose()
    for i in range(SELLERS):
        user = platform.user(f"oKill{i:05d}")
        user.subscribed, user.last_interaction = True, platform.clock()


async def settled_count(served: Served) -> int:
    status, body = await served.api("GET", "/contests?limit=200")
    assert status == 200, body
    return sum(1 for c in body["contests"] if c["status"] == "settled" and not c["source"])


async def test_kill_9_while_contests_settle_pays_each_winner_once(
        db_url: str, tmp_path: Path, platform: Platform, wechat_server: TestServer) -> None:
    now = datetime.now(UTC)
    await seed(db_url, platform, now)
    cfg = config(tmp_path, db_url, wechat_server, rate=50)
    served = await Served(cfg, tmp_path).start()
    ends = now  # over already (the orders were paid before): nothing to wait for
    ids = []
    try:
        for i in range(CONTESTS_N):
            metric = "sku_sales" if i % 2 else "sales"
            status, body = await served.api("POST", "/contests", json={
                "title": f"冲刺赛{i}", "metric": metric, "skus": [f"SKU-{i % 3}"] if metric == "sku_sales" else [],
                "starts_at": (now - timedelta(hours=1)).isoformat(), "ends_at": ends.isoformat(),
                "prizes_fen": PRIZES})
            assert status == 201, body
            ids.append(body["id"])
        kills = []
        # Round after round: start the job, kill -9 as soon as some contest has settled (or at a
        # random moment), start again, until every contest is settled.
        for _ in range(3):
            assert (await served.api("POST", "/jobs/contests/run"))[0] == 202
            deadline = asyncio.get_running_loop().time() + random.uniform(0.0, 0.4)
            while asyncio.get_running_loop().time() < deadline:
                if await settled_count(served) > sum(kills):
                    break
                await asyncio.sleep(0.001)
            await served.kill()
            restarted = Served(cfg, tmp_path)
            served = await restarted.start()
            kills.append(await settled_count(served) - sum(kills))
            if sum(kills) == CONTESTS_N:
                break
        async def all_settled() -> bool:
            await served.api("POST", "/jobs/contests/run")
            return await settled_count(served) == CONTESTS_N
        await eventually(all_settled, timeout=30, what="every contest settled")
        details = [(await served.api("GET", f"/contests/{cid}"))[1] for cid in ids]
    finally:
        await served.kill()

    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            entries = (await conn.execute(select(ENTRIES.c.distributor_id, ENTRIES.c.ref, ENTRIES.c.amount_fen)
                                          .where(ENTRIES.c.kind == "reward"))).all()
            balances = dict((await conn.execute(select(BALANCES.c.distributor_id, BALANCES.c.available_fen))).all())
            notices = (await conn.execute(select(OUTBOX.c.key).where(OUTBOX.c.key.like("contest:%:won:%")))).all()
            campaigns = await conn.scalar(select(func.count()).select_from(CONTESTS).where(
                CONTESTS.c.campaign_id.is_not(None), CONTESTS.c.source.is_(None)))
    finally:
        await engine.dispose()
    expected = sorted((int(code[1:]) + 1, f"contest:{d['id']}", w["prize_fen"])
                      for d in details for w in d["winners"] for code in [w["code"]])
    assert len(expected) == CONTESTS_N * len(PRIZES)
    assert sorted((did, ref, fen) for did, ref, fen in entries) == expected  # once each, no more
    paid: dict[int, int] = {}
    for did, _, fen in expected:
        paid[did] = paid.get(did, 0) + fen
    assert {d: v for d, v in balances.items() if v} == paid
    assert sorted(k for (k,) in notices) == sorted(f"{ref}:won:{did}" for did, ref, _ in expected)
    assert campaigns == CONTESTS_N
