"""Order events and the 收益 reply under load: distbot as its own process, this script as the client.

    .venv/bin/python bench/orders.py [--events 100000] [--concurrency 20] [--distributors 100000]
                                     [--entries 1000000] [--earnings 2000] [--db sqlite|postgresql]
                                     [--pg-url URL] [--light] [--processes 1 2] [--naive] [--trips] [--keep]

1. `distbot serve` starts on a free port (bench/harness.Server: sandbox mode; a SQLite file in a
   temp dir, or a fresh database on PostgreSQL: --pg-url, else a throw-away cluster from the
   machine's binaries, with pg_stat_statements loaded), and is waited for on /healthz.
   `--distributors` are seeded straight into the database, ten to an inviter (so most orders pay
   two levels). `--light`: the issue's lighter load of a few busy distributors (50, concurrency 20).
2. Order events: `--events` events (paid, then completed, per order) are posted to
   POST /api/orders/events by `--concurrency` closed-loop senders. Printed: events/s, server CPU
   per event, latency percentiles, and the server's peak memory; then what the database received
   (bench/order_counts.py): batches and events per batch, and on PostgreSQL statements and
   transactions per event and per batch (pg_stat_statements), round trips with `--trips`.
   `--processes 1 2` (PostgreSQL): a run per count, each on a fresh database, with that many
   servers on the one database and the senders spread over them round-robin; events/s over all,
   CPU per event summed over the servers; then each count against the first (target: CPU per
   event within 10%). `--naive`: the same load on a fresh copy of the seeded database against
   bench/naive_orders_app.py (one transaction per event), then distbot/naive.
3. The ledger is topped up to `--entries` entries (straight into the database, with matching
   balances), then `--earnings` signed 收益 messages from random distributors go through the
   webhook, one at a time, paced so that each reply's chart (rendered after the reply) does not
   queue behind the next. Printed: the server-side time of the reply (from distbot's own
   histogram, as a bucket bound) and the client-side round trip (an upper bound), and peak memory.
   Target: p99 < 20 ms. (After the one-process run only.)

   Also printed: the handler alone (in-process, on the same database) and 帮助 through the webhook,
   which has no queries: the difference between the two is 收益's own share of the reply time.

Only 127.0.0.1 is used; everything started here is stopped at the end; --keep keeps the temp dir.
--risk on|off sets risk.enabled (the risk rules evaluated with each batch of order events, on by
default). --risk both compares the two: `--rounds` pairs of event runs (each on a fresh server and
database), in the order off, on, on, off, ... so that a drift of the machine during the runs falls
on both alike; then the medians of events/s and of server CPU per event, with and without the
rules, and their ratio (target: within 10%). The 收益 timing is skipped then.
--buyers N names one of N buyers on each paid event (each buying from the same few distributors);
--repeat turns the repeat reward on ([rewards.repeat]): the same run with and without it is what
the reward costs (issue 25: < 5%).
--outbox-rate sets the server's outbox.rate_per_second (the commission notices it sends during the
event run cost server CPU); they go to WeChat, here bench/emulator.py as a process of its own (its
followers are the seeded distributors, each answer after --latency), as in production: what WeChat
spends answering is not distbot's. --profile records the server with py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (ADMIN, FREEZE_DAYS, TOKEN, Databases, Emulator, Server, cpu_seconds, free_port,  # noqa: E402
                           machine_cpu, peak_rss_mb, spawn, stop, wait_healthy)
from bench.load_client import ACCOUNT, TEXT_XML, sign  # noqa: E402
from bench.order_counts import Probe, summary, top_statements  # noqa: E402
from bench.order_load import percentiles, post_events_to, seed_distributors, seed_entries  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from storage.db import create_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402

NAIVE_APP = ROOT / "bench" / "naive_orders_app.py"
LIGHT = {"distributors": 50, "concurrency": 20}  # the lighter load: a few busy distributors
REPEAT = "[rewards.repeat]\nwindow_days = 30\nextra_rate = 0.02\n"  # --repeat: the repeat reward on
LIGHT_TARGET = 6.0  # distbot ≥ 6× the naive app's events/s under the lighter load


# ---- 收益 ------------------------------------------------------------------------------------
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


async def time_earnings(db: str, server: Server, db_url: str, args: argparse.Namespace, n_dist: int) -> None:
    """Step 3: the ledger topped up, then 收益 through the webhook, 帮助 and the handler alone."""
    pid = server.proc.pid  # type: ignore[union-attr]
    t0 = time.perf_counter()
    entries = await seed_entries(db_url, args.entries, n_dist)
    print(f"[{db}] ledger has {entries:,} entries (topped up in {time.perf_counter() - t0:.1f} s)", flush=True)
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


# ---- the event runs --------------------------------------------------------------------------
async def event_run(pids: list[int], bases: list[str], token: str, probe: Probe,
                    args: argparse.Namespace) -> dict[str, Any]:
    """Step 2 against the servers at `bases` (processes `pids`): the figures and the probe's counts."""
    before = await probe.snapshot()
    cpu0, mine0, (busy0, total0) = sum(cpu_seconds(p) for p in pids), cpu_seconds(os.getpid()), machine_cpu()
    r = await post_events_to(bases, token, args.events, args.concurrency, args.distributors, args.buyers)
    cpu, mine = sum(cpu_seconds(p) for p in pids) - cpu0, cpu_seconds(os.getpid()) - mine0
    busy, total = machine_cpu()
    r.update(cpu_us=cpu / r["events"] * 1e6, cores=cpu / r["seconds"], client=mine / r["seconds"])
    r["rest"] = (busy - busy0) / (total - total0) * (os.cpu_count() or 1) - r["cores"] - r["client"]
    r["counts"] = await probe.describe(before, await probe.snapshot(), r["events"])
    return r


async def run_on(db: str, db_url: str, dbs: Databases, args: argparse.Namespace, workdir: Path, risk: bool,
                 processes: int) -> dict[str, Any]:
    """`processes` servers on one database, seeded; the event run, then (one process, unless --risk
    both) the 收益 timing; the event run's figures."""
    probe = Probe.start(db_url, dbs, args.trips, workdir / "trips.log")
    emulator = Emulator(args.latency, args.distributors)  # WeChat, where the commission notices go
    await emulator.start()
    servers = []
    for k in range(processes):
        (workdir / f"p{k}").mkdir()
        servers.append(Server(workdir / f"p{k}", probe.served_url, Path(f"{args.profile}.{db}.{k}.txt")
                              if args.profile else None, args.outbox_rate, api_base_url=emulator.api_base,
                              risk=risk, extra=REPEAT if args.repeat else ""))
    r: dict[str, Any] = {}
    try:
        for server in servers:
            await server.start()
        t0 = time.perf_counter()
        await seed_distributors(db_url, args.distributors)
        print(f"[{db}] seeded {args.distributors:,} distributors in {time.perf_counter() - t0:.1f} s", flush=True)
        if args.events:
            pids = [s.proc.pid for s in servers]  # type: ignore[union-attr]
            r = await event_run(pids, [s.url("") for s in servers], ADMIN, probe, args)
            many = f", {processes} processes" if processes > 1 else ""
            print(f"[{db}] order events (risk {'on' if risk else 'off'}{many}): {summary(r)} (concurrency "
                  f"{args.concurrency}); server peak RSS {max(peak_rss_mb(p) for p in pids):.0f} MB", flush=True)
            print(f"[{db}]   the database received: {r['counts']}", flush=True)
            if probe.server_url and args.top_statements:
                for line in await top_statements(probe.server_url, db_url):
                    print(f"[{db}]     {line}", flush=True)
        if args.earnings and args.risk != "both" and processes == 1:
            await time_earnings(db, servers[0], db_url, args, args.distributors)
    finally:
        for server in servers:
            server.stop()
        emulator.stop()
        probe.stop()
    return r


async def run_naive(db: str, db_url: str, dbs: Databases, args: argparse.Namespace,
                    workdir: Path) -> dict[str, Any]:
    """The same load against bench/naive_orders_app.py on a fresh database, migrated and seeded alike."""
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    await seed_distributors(db_url, args.distributors)
    probe = Probe.start(db_url, dbs, args.trips, workdir / "trips.log")
    port, log = free_port(), workdir / "naive.log"
    proc = spawn([sys.executable, str(NAIVE_APP), "--port", str(port), "--token", ADMIN, "--db-url",
                  probe.served_url, "--freeze-days", str(FREEZE_DAYS)], log=log)
    try:
        await wait_healthy(port, proc, log)
        r = await event_run([proc.pid], [f"http://127.0.0.1:{port}"], ADMIN, probe, args)
    finally:
        stop(proc)
        probe.stop()
    print(f"[{db}] naive app (one transaction per event): {summary(r)}", flush=True)
    print(f"[{db}]   the database received: {r['counts']}", flush=True)
    return r


# ---- comparisons -----------------------------------------------------------------------------
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


def compare_processes(db: str, runs: list[tuple[int, dict[str, Any]]]) -> None:
    (n0, first), *others = runs
    for n, r in others:
        print(f"[{db}] {n} processes against {n0}: {r['rate']:,.0f} events/s against {first['rate']:,.0f} "
              f"({r['rate'] / first['rate']:.2f}×); server CPU {r['cpu_us']:,.0f} µs/event against "
              f"{first['cpu_us']:,.0f} ({r['cpu_us'] / first['cpu_us'] - 1:+.1%}). Target: CPU per event within "
              "10%", flush=True)


def compare_naive(db: str, distbot: dict[str, Any], naive: dict[str, Any], args: argparse.Namespace) -> None:
    light = args.distributors <= LIGHT["distributors"]
    print(f"[{db}] distbot/naive: {distbot['rate'] / naive['rate']:.1f}× the events/s, "
          f"{naive['cpu_us'] / distbot['cpu_us']:.1f}× less server CPU per event, p99 "
          f"{distbot['latency_ms']['p99']:.1f} ms against {naive['latency_ms']['p99']:.1f} ms. Target: ≥ "
          f"{LIGHT_TARGET:g}× the events/s under the lighter load"
          + ("" if light else f" ({LIGHT['distributors']} distributors: not this run)"), flush=True)


# ---- main ------------------------------------------------------------------------------------
async def bench_kind(db: str, dbs: Databases, args: argparse.Namespace, workdir: Path) -> None:
    """Every run on one kind of database, each on a fresh one, and their comparisons."""
    counts = args.processes if db == "postgresql" else [1]
    runs = []
    for k, (risk, n) in enumerate((risk, n) for risk in risk_order(args) for n in counts):
        (workdir / f"{db}-{k}").mkdir()
        url = await dbs.fresh(f"{db}-{k}")
        runs.append((risk, n, await run_on(db, url, dbs, args, workdir / f"{db}-{k}", risk, n)))
    if not args.events:
        return
    if args.risk == "both":
        compare_risk(db, [(risk, r) for risk, n, r in runs if n == counts[0]])
    if len(counts) > 1:
        compare_processes(db, [(n, r) for _, n, r in runs])
    if args.naive:
        (workdir / f"{db}-naive").mkdir()
        naive = await run_naive(db, await dbs.fresh(f"{db}-naive"), dbs, args, workdir / f"{db}-naive")
        compare_naive(db, runs[0][2], naive, args)


async def main_async(args: argparse.Namespace) -> None:
    from devtools.pgcluster import find_pg_bin
    with scratch_dir("distbot-bench-orders-", args.keep) as workdir:
        for db in args.db:
            if db == "postgresql" and args.pg_url is None and find_pg_bin() is None:
                print("[postgresql] skipped: no --pg-url and no PostgreSQL binaries on this machine")
                continue
            dbs = Databases(db, args.pg_url, workdir, statements=True)
            try:
                await bench_kind(db, dbs, args, workdir)
            finally:
                await dbs.cleanup()  # the databases made on a --pg-url server are dropped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="order events to post (half paid, half completed)")
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--distributors", type=int, default=100_000)
    p.add_argument("--light", action="store_true", help="the issue's lighter load: --distributors "
                   f"{LIGHT['distributors']} --concurrency {LIGHT['concurrency']}")
    p.add_argument("--entries", type=int, default=1_000_000, help="ledger entries before the 收益 timing")
    p.add_argument("--earnings", type=int, default=2000, help="收益 replies to time (0: skip)")
    p.add_argument("--pace", type=float, default=0.1, help="seconds between 收益 messages")
    p.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    p.add_argument("--pg-url", help="a PostgreSQL server URL whose user may CREATE DATABASE")
    p.add_argument("--processes", nargs="+", type=int, default=[1], help="PostgreSQL: distbot servers on one "
                   "database, a run per count (1 2: both, and the second against the first); SQLite runs one")
    p.add_argument("--naive", action="store_true", help="then the same load against bench/naive_orders_app.py "
                   "on a fresh copy of the seeded database, and distbot/naive")
    p.add_argument("--trips", action="store_true", help="PostgreSQL: count round trips through a proxy "
                   "(bench/pg_trips.py; it slows the run down)")
    p.add_argument("--top-statements", action="store_true", help="PostgreSQL: then the five statements the "
                   "database spent most time on during distbot's run (pg_stat_statements)")
    p.add_argument("--risk", choices=["on", "off", "both"], default="on",
                   help="risk.enabled: evaluate the risk rules on each batch of order events; both: compare")
    p.add_argument("--rounds", type=int, default=2, help="with --risk both: pairs of runs (off, on, on, off, ...)")
    p.add_argument("--buyers", type=int, default=0, help="paid events name one of this many buyers, each buying "
                   "from the same few distributors (0: no buyer_openid)")
    p.add_argument("--repeat", action="store_true", help="the repeat reward on ([rewards.repeat]); with --buyers, "
                   "to time what it costs against the same run without it")
    p.add_argument("--latency", type=float, default=0.003, help="seconds WeChat (bench/emulator.py, its own "
                   "process, the seeded distributors its followers) takes to answer a notice")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--profile", help="record the server with py-spy (--gil) into PROFILE.<db>.<process>.txt, "
                   "collapsed stacks; the server's CPU and memory figures are then py-spy's, not distbot's")
    p.add_argument("--outbox-rate", type=float, help="outbox.rate_per_second for the server (default: the "
                   "config default, 100/s); the commission notices it sends cost server CPU during the run")
    args = p.parse_args()
    if args.light:
        vars(args).update(LIGHT)
    args.distributors = max(args.distributors, 1)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
