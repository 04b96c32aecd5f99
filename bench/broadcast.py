"""A campaign to many distributors: time to queue, send rate against outbox.rate_per_second, memory.

    .venv/bin/python bench/broadcast.py [--recipients 10000 100000] [--rate 500] [--latency 0.003]
                                        [--db sqlite postgresql] [--pg-url URL] [--keep]

The WeChat API is the sandbox emulator served by this script (its own aiohttp server on
127.0.0.1), answering every call after `--latency` seconds, as a network would. For each audience
size, on SQLite one `distbot serve` process, on PostgreSQL two sharing the database:

1. distributors are seeded straight into the database (each a subscribed follower who talked to the
   account in the last 48 hours, so every message is a customer-service message);
2. POST /api/campaigns (audience "all"); printed: the time until every recipient's outbox row is
   queued (target ≤ 10 s at 100,000), from GET /api/campaigns/{id};
3. the campaign is sent; printed: sends/s as WeChat saw them between the first and the last, against
   the configured rate (target ≥ 95% of 500/s; with two processes about twice that), and each
   server's peak memory (target: 100,000 recipients within 10% of 10,000).

The baseline, in the same run: a bare aiohttp client sending the same number of messages to the same
emulator at the same rate, with no database — what the rate limit alone allows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import ADMIN, Emulator, Server, peak_rss_mb, pg_database, pg_server  # noqa: E402
from bench.order_load import seed_distributors  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from storage.queue_worker import THROTTLE_SLACK  # noqa: E402


TEXT = "双十二大促今晚八点开始，点击菜单领取专属海报。"


async def api(http: aiohttp.ClientSession, server: Server, method: str, path: str, **kw: Any) -> Any:
    async with http.request(method, server.url("/api" + path), headers={"Authorization": f"Bearer {ADMIN}"},
                            **kw) as resp:
        body = await resp.json()
        if resp.status >= 300:
            raise SystemExit(f"{method} {path}: HTTP {resp.status} {body}")
        return body


async def campaign(servers: list[Server], emulator: Emulator, n: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:
        t0 = time.monotonic()
        created = await api(http, servers[0], "POST", "/campaigns",
                            json={"title": "双十二", "kind": "notice", "text": TEXT})
        queued_at = None
        while True:
            c = await api(http, servers[0], "GET", f"/campaigns/{created['id']}")
            if queued_at is None and c["status"] != "scheduled" and c["pending"] + c["sent"] + c["failed"] >= n:
                queued_at = time.monotonic() - t0
            if c["status"] == "done":
                break
            await asyncio.sleep(0.1 if queued_at is None else 0.5)
    return {"queued_s": queued_at or 0.0, "sent": c["sent"], "failed": c["failed"], "rate": await emulator.rate(),
            "rss_mb": sum(peak_rss_mb(s.proc.pid) for s in servers if s.proc is not None)}


async def baseline(emulator: Emulator, n: int, rate: float, concurrency: int = 32) -> float:
    """A bare sender: the same sends, the same spacing, no database."""
    async with aiohttp.ClientSession() as http:
        async with http.get(emulator.api_base + "token", params={
                "grant_type": "client_credential", "appid": "wxsandbox0000000000", "secret": "sandbox-secret"}) as resp:
            token = (await resp.json())["access_token"]
        slots = asyncio.Semaphore(concurrency)
        pending: set[asyncio.Task[None]] = set()

        async def send(i: int) -> None:
            async with http.post(emulator.api_base + "message/custom/send", params={"access_token": token}, json={
                    "touser": f"obench{i:010d}", "msgtype": "text", "text": {"content": TEXT}}) as resp:
                await resp.read()
            slots.release()

        interval, next_at = 1.0 / rate, time.monotonic()
        for i in range(n):
            await slots.acquire()
            now = time.monotonic()
            next_at = max(next_at, now - THROTTLE_SLACK)  # the outbox's own schedule
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at += interval
            task = asyncio.create_task(send(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return await emulator.rate()


async def run(db: str, url_for: Any, processes: int, args: argparse.Namespace, workdir: Path) -> None:
    for n in args.recipients:
        emulator = Emulator(args.latency, n)
        await emulator.start()
        db_url = await url_for(n)
        servers = []
        try:
            for p in range(processes):
                (workdir / f"{db}-{n}-{p}").mkdir()
                servers.append(Server(workdir / f"{db}-{n}-{p}", db_url, outbox_rate=args.rate,
                                      api_base_url=emulator.api_base, outbox_batch=200))
                await servers[-1].start()
            await seed_distributors(db_url, n)
            r = await campaign(servers, emulator, n)
        finally:
            for s in servers:
                s.stop()
            emulator.stop()
        target = args.rate * processes
        print(f"[{db}, {processes} process{'es' if processes > 1 else ''}] {n:>7,} recipients: "
              f"queued in {r['queued_s']:.2f} s; sent {r['sent']:,} (failed {r['failed']}) at {r['rate']:.0f}/s "
              f"= {r['rate'] / target:.1%} of {target:.0f}/s; peak memory {r['rss_mb']:.0f} MB", flush=True)


async def main_async(args: argparse.Namespace) -> None:
    with scratch_dir("distbot-bench-broadcast-", args.keep) as workdir:
        n = min(args.recipients)
        emulator = Emulator(args.latency, n)
        await emulator.start()
        try:
            achieved = await baseline(emulator, n, args.rate)
        finally:
            emulator.stop()
        print(f"[baseline] bare aiohttp sender, {n:,} sends at {args.rate:.0f}/s with {args.latency * 1000:.0f} ms "
              f"latency: {achieved:.0f}/s = {achieved / args.rate:.1%}", flush=True)
        with contextlib.ExitStack() as stack:
            if "sqlite" in args.db:
                async def sqlite_url(n: int) -> str:
                    return f"sqlite+aiosqlite:///{workdir}/broadcast-{n}.db"
                await run("sqlite", sqlite_url, 1, args, workdir)
            if "postgresql" in args.db:
                server_url = await pg_server(args, stack)
                if server_url is None:
                    raise SystemExit("[postgresql] no --pg-url and no PostgreSQL binaries on this machine")

                async def pg_url(n: int) -> str:
                    assert server_url is not None
                    return await pg_database(server_url)  # each size its own database on the one server
                await run("postgresql", pg_url, 2, args, workdir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipients", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--rate", type=float, default=500, help="outbox.rate_per_second of each server")
    p.add_argument("--latency", type=float, default=0.003, help="seconds the emulator takes to answer a call")
    p.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    p.add_argument("--pg-url", help="a PostgreSQL server URL whose user may CREATE DATABASE")
    p.add_argument("--keep", action="store_true")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
