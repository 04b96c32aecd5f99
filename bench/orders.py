"""Order events and the 收益 reply under load: distbot as its own process, this script as the client.

    .venv/bin/python bench/orders.py [--events 100000] [--concurrency 20] [--distributors 100000]
                                     [--entries 1000000] [--earnings 2000] [--db sqlite|postgresql]
                                     [--pg-url URL] [--keep]

1. `distbot serve` starts on a free port (bench/harness.Server: sandbox mode; a SQLite file in a
   temp dir, or a fresh database on PostgreSQL: --pg-url, else a throw-away cluster from the
   machine's binaries), and is waited for on /healthz. `--distributors` are seeded straight into
   the database, ten to an inviter (so most orders pay two levels).
2. Order events: `--events` events (paid, then completed, per order) are posted to
   POST /api/orders/events by `--concurrency` closed-loop senders. Printed: events/s, latency
   percentiles, and the server's peak memory.  Target: ≥ 1,000 events/s on SQLite.
3. The ledger is topped up to `--entries` entries (straight into the database, with matching
   balances), then `--earnings` signed 收益 messages from random distributors go through the
   webhook, one at a time, paced so that each reply's chart (rendered after the reply) does not
   queue behind the next. Printed: the server-side time of the reply (from distbot's own
   histogram, as a bucket bound) and the client-side round trip (an upper bound), and peak memory.
   Target: p99 < 20 ms.

   Also printed: the handler alone (in-process, on the same database) and 帮助 through the webhook,
   which has no queries: the difference between the two is 收益's own share of the reply time.

Only 127.0.0.1 is used; everything started here is stopped at the end; --keep keeps the temp dir.
--risk on|off sets risk.enabled (the risk rules evaluated with each batch of order events, on by
default). --risk both compares the two: `--rounds` pairs of event runs (each on a fresh server and
database), in the order off, on, on, off, ... so that a drift of the machine during the runs falls
on both alike; then the medians of events/s and of server CPU per event, with and without the
rules, and their ratio (target: within 10%). The 收益 timing is skipped then.
--outbox-rate sets the server's outbox.rate_per_second (the commission notices it sends during the
event run cost server CPU); --profile records the server with py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.harness import ADMIN, TOKEN, Server, cpu_seconds, peak_rss_mb, pg_database, pg_server  # noqa: E402
from bench.load_client import ACCOUNT, TEXT_XML, sign  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from storage.db import create_engine  # noqa: E402

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
                    "INSERT INTO ledger_entries (distributor_id, kind, amount_fen, ref, created_at)"
                    " VALUES (:d, 'commission', :a, :r, :t)"), rows)
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
async def post_events(server: Server, events: int, concurrency: int, distributors: int) -> dict[str, Any]:
    return await post_events_to(server.url(""), ADMIN, events, concurrency, distributors)


async def post_events_to(base: str, token: str, events: int, concurrency: int, distributors: int) -> dict[str, Any]:
    """`events` order events (paid, then completed, per order) from `concurrency` closed-loop senders."""
    orders = events // 2
    counter = iter(range(orders))
    latencies: list[float] = []
    errors: dict[int, int] = {}
    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {token}"}
    run = secrets.token_hex(3)

    async def sender(http: aiohttp.ClientSession) -> None:
        for n in counter:
            no = f"B{run}-{n}"
            d = rng.randrange(distributors)
            for body in ({"event_id": f"{no}-p", "order_no": no, "type": "paid", "amount_fen": 1000 + n % 50000,
                          "distributor_code": code_of(d)},
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
        await asyncio.gather(*(sender(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"events": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed,
            "latency_ms": percentiles(latencies), "errors": errors}


def signed(server: Server, openid: str, content: str, msg_id: int) -> tuple[str, bytes]:
    ts, nonce = str(int(time.time())), secrets.token_hex(4)
    xml = TEXT_XML.format(account=ACCOUNT, openid=openid, ts=ts, content=content, msg_id=msg_id)
    return server.url(f"/wechat?timestamp={ts}&nonce={nonce}&signature={sign(TOKEN, ts, nonce)}"), xml.encode()


async def histogram(http: aiohttp.ClientSession, server: Server) -> dict[float, float]:
    async with http.get(server.url("/metrics")) as r:
        body = await r.text()
    out: dict[float, float] = {}
    for m in re.finditer(r'distbot_handler_seconds_bucket\{le="([^"]+)",outcome="passive"\} (\S+)', body):
        out[float("inf") if m.group(1) == "+Inf" else float(m.group(1))] = float(m.group(2))
    return out


async def earnings_replies(server: Server, n: int, distributors: int, pace: float, text: str = "收益",
                           expect: str = "累计") -> dict[str, Any]:
    rng = random.Random(2)
    latencies: list[float] = []
    bad = 0
    async with aiohttp.ClientSession() as http:
        before = await histogram(http, server)
        for i in range(n):
            url, body = signed(server, f"obench{rng.randrange(distributors):010d}", text, 9_000_000_000 + i)
            t0 = time.perf_counter()
            async with http.post(url, data=body) as r:
                reply = await r.text()
            latencies.append(time.perf_counter() - t0)
            if expect not in reply:
                bad += 1
            await asyncio.sleep(pace)
        after = await histogram(http, server)
    counts = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = counts.get(float("inf"), 0)
    p99_bucket = next((le for le in sorted(counts) if total and counts[le] >= 0.99 * total), float("nan"))
    p50_bucket = next((le for le in sorted(counts) if total and counts[le] >= 0.50 * total), float("nan"))
    return {"replies": n, "bad": bad, "client_ms": percentiles(latencies), "server_p99_le_ms": p99_bucket * 1000,
            "server_p50_le_ms": p50_bucket * 1000}


async def post_earnings_baseline(server: Server, args: argparse.Namespace, n_dist: int) -> dict[str, Any]:
    """The same through the webhook for 帮助 (a handler with no queries): the dispatcher's share."""
    return await earnings_replies(server, max(args.earnings // 4, 100), n_dist, args.pace, "帮助", "分销员助手")


async def earnings_handler(db_url: str, n: int, distributors: int) -> dict[str, float]:
    """The 收益 handler alone (its queries and text; the chart is made after the reply), inside a
    unit of work as the dispatcher runs it."""
    from kit.chat import Ctx
    from wechat.wechat_keys import WECHAT
    from domain.config import Config
    from handlers.earnings import CHARTS, Charts, on_earnings
    from storage.models import Distributor
    from storage.writer import Writer

    engine = create_engine(db_url)
    writer = Writer(engine)
    config = Config(database={"url": db_url})
    app = {CHARTS: Charts(), WECHAT: None}  # the chart's upload is not part of this figure
    rng = random.Random(4)

    def one(session: Any) -> float:
        d = session.get(Distributor, rng.randrange(distributors) + 1)
        assert d is not None
        ctx = Ctx(session=session, app=app, config=config, now=datetime.now(UTC), openid=d.openid,
                  distributor=d, state=None)
        t0 = time.perf_counter()
        on_earnings(None, ctx)  # type: ignore[arg-type]
        return time.perf_counter() - t0

    try:
        times = [await writer.run(one) for _ in range(n)]
    finally:
        await writer.close()
        await engine.dispose()
    return percentiles(times)


# ---- main ------------------------------------------------------------------------------------
async def run_on(db: str, db_url: str, args: argparse.Namespace, workdir: Path, risk: bool) -> dict[str, Any]:
    """One server: seeded, the event run, then (unless --risk both) the 收益 timing; the event run's figures."""
    server = Server(workdir, db_url, Path(f"{args.profile}.{db}.txt") if args.profile else None, args.outbox_rate,
                    risk=risk)
    r: dict[str, Any] = {}
    try:
        await server.start()
        pid = server.proc.pid  # type: ignore[union-attr]
        n_dist = max(args.distributors, 1)
        t0 = time.perf_counter()
        await seed_distributors(db_url, n_dist)
        print(f"[{db}] seeded {n_dist:,} distributors in {time.perf_counter() - t0:.1f} s", flush=True)
        if args.events:
            cpu0 = cpu_seconds(pid)
            r = await post_events(server, args.events, args.concurrency, n_dist)
            cpu = cpu_seconds(pid) - cpu0
            r["cpu_us"] = cpu / r["events"] * 1e6
            lat = r["latency_ms"]
            print(f"[{db}] order events (risk {'on' if risk else 'off'}): {r['events']:,} in {r['seconds']:.1f} s = {r['rate']:,.0f} events/s "
                  f"(concurrency {args.concurrency}); server CPU {cpu / r['events'] * 1e6:.0f} µs/event "
                  f"({cpu / r['seconds'] * 100:.0f}% of a core); latency ms p50 {lat['p50']:.1f} p90 {lat['p90']:.1f} "
                  f"p99 {lat['p99']:.1f} max {lat['max']:.0f}; non-200: {r['errors'] or 'none'}; "
                  f"server peak RSS {peak_rss_mb(pid):.0f} MB", flush=True)
        if args.earnings and args.risk != "both":
            t0 = time.perf_counter()
            entries = await seed_entries(db_url, args.entries, n_dist)
            print(f"[{db}] ledger has {entries:,} entries (topped up in {time.perf_counter() - t0:.1f} s)",
                  flush=True)
            r = await earnings_replies(server, args.earnings, n_dist, args.pace)
            c = r["client_ms"]
            print(f"[{db}] 收益 replies: {r['replies']:,} ({r['bad']} bad); server-side p50 ≤ {r['server_p50_le_ms']:g} ms,"
                  f" p99 ≤ {r['server_p99_le_ms']:g} ms (histogram bucket); client round trip ms p50 {c['p50']:.1f} "
                  f"p90 {c['p90']:.1f} p99 {c['p99']:.1f} max {c['max']:.0f}; server peak RSS "
                  f"{peak_rss_mb(pid):.0f} MB", flush=True)
            r = await post_earnings_baseline(server, args, n_dist)
            h = await earnings_handler(db_url, 500, n_dist)
            print(f"[{db}] 收益 handler alone (its queries and text, in-process, 500 calls): ms p50 {h['p50']:.2f} "
                  f"p99 {h['p99']:.2f} max {h['max']:.1f}; for comparison 帮助 through the webhook: server-side p50 ≤ "
                  f"{r['server_p50_le_ms']:g} ms, p99 ≤ {r['server_p99_le_ms']:g} ms, client p50 "
                  f"{r['client_ms']['p50']:.1f} p99 {r['client_ms']['p99']:.1f} ms", flush=True)
    finally:
        server.stop()
    return r


def risk_order(args: argparse.Namespace) -> list[bool]:
    """Whether each run has the rules on: one run, or --rounds pairs off, on, on, off, ..."""
    if args.risk != "both":
        return [args.risk == "on"]
    return [on if k % 2 == 0 else not on for k in range(args.rounds) for on in (False, True)]


def compare_risk(db: str, runs: list[tuple[bool, dict[str, Any]]]) -> None:
    def median(risk: bool, key: str) -> float:
        return statistics.median(r[key] for on, r in runs if on == risk)
    rate_on, rate_off = median(True, "rate"), median(False, "rate")
    cpu_on, cpu_off = median(True, "cpu_us"), median(False, "cpu_us")
    print(f"[{db}] risk rules, median of {len(runs) // 2} runs each: {rate_on:,.0f} events/s with them, "
          f"{rate_off:,.0f} without ({rate_on / rate_off - 1:+.1%}); server CPU {cpu_on:,.0f} µs/event with them, "
          f"{cpu_off:,.0f} without ({cpu_on / cpu_off - 1:+.1%}). Target: within 10%", flush=True)


async def main_async(args: argparse.Namespace) -> None:
    with scratch_dir("distbot-bench-orders-", args.keep) as workdir, contextlib.ExitStack() as stack:
        for db in args.db:
            server_url = await pg_server(args, stack) if db == "postgresql" else None
            if db == "postgresql" and server_url is None:
                print("[postgresql] skipped: no --pg-url and no PostgreSQL binaries on this machine")
                continue
            runs = []
            for k, risk in enumerate(risk_order(args)):
                where = workdir / f"{db}-{k}"
                where.mkdir()
                url = (await pg_database(server_url) if server_url is not None
                       else f"sqlite+aiosqlite:///{where}/distbot.db")
                runs.append((risk, await run_on(db, url, args, where, risk)))
            if args.risk == "both" and args.events:
                compare_risk(db, runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="order events to post (half paid, half completed)")
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--distributors", type=int, default=100_000)
    p.add_argument("--entries", type=int, default=1_000_000, help="ledger entries before the 收益 timing")
    p.add_argument("--earnings", type=int, default=2000, help="收益 replies to time (0: skip)")
    p.add_argument("--pace", type=float, default=0.1, help="seconds between 收益 messages")
    p.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    p.add_argument("--pg-url", help="a PostgreSQL server URL whose user may CREATE DATABASE")
    p.add_argument("--risk", choices=["on", "off", "both"], default="on",
                   help="risk.enabled: evaluate the risk rules on each batch of order events; both: compare")
    p.add_argument("--rounds", type=int, default=2, help="with --risk both: pairs of runs (off, on, on, off, ...)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--profile", help="record the server with py-spy (--gil) into PROFILE.<db>.txt, collapsed "
                   "stacks; the server's CPU and memory figures are then py-spy's, not distbot's")
    p.add_argument("--outbox-rate", type=float, help="outbox.rate_per_second for the server (default: the "
                   "config default, 100/s); the commission notices it sends cost server CPU during the run")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
