"""Reads during an order load on SQLite: does a burst of page reads push the Writer onto its slow path?

    .venv/bin/python bench/reads.py [--events 2000] [--readers 8] [--distributors 2000] [--keep]

The app runs in this process (aiohttp's TestServer on 127.0.0.1, a SQLite file in a temp dir,
no background workers), seeded with `--distributors` (bench/order_load.seed_distributors). Four runs
of `--events` order events (paid, then completed; 20 closed-loop senders on POST
/api/orders/events), each with `--readers` closed-loop readers beside them:

- `none`:   no readers (the order load alone);
- `bare`:   the share page's read as it was before storage.reader (a bare AsyncSession, whose first
            statement began BEGIN IMMEDIATE on SQLite), served on a bench-only route;
- `reader`: the same read through the Reader, on a bench-only route beside it;
- `pages`:  the real pages, which read through the Reader (GET /s/{code}, the share page, and
            GET /api/distributors/{code}).

Printed per run: events/s, the events' latency, reads/s, and the Writer's lock waits (units that
found SQLite's write lock taken by another connection and went to the writer's thread to wait:
`Writer.lock_waits`). Figures, not a verdict: with the Reader the lock waits should stay at the
`none` run's level, where the bare sessions add about one per read.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.order_load import code_of, post_events_to, seed_distributors  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from app.factory import create_app  # noqa: E402
from kit.app_keys import PACKS, READER, SESSIONMAKER, WRITER
from domain.config import Config  # noqa: E402
from storage.queries import distributor_by_code  # noqa: E402

ADMIN = "bench-admin-token"


async def bare_share_read(request: web.Request) -> web.Response:
    """The share page's read before storage.reader: a bare AsyncSession (BEGIN IMMEDIATE on SQLite)."""
    code, library = request.match_info["code"], request.app[PACKS]
    async with request.app[SESSIONMAKER]() as session:
        found = await session.run_sync(lambda s: distributor_by_code(s, code, active=True))
        packs = await session.run_sync(library.live) if found is not None else []
    return web.Response(text=f"{found is not None} {len(packs)}")


async def reader_share_read(request: web.Request) -> web.Response:
    """The same read through the Reader, as the share page now makes it."""
    code, library = request.match_info["code"], request.app[PACKS]

    def read(session: Session) -> tuple[bool, int]:
        found = distributor_by_code(session, code, active=True)
        return found is not None, len(library.live(session)) if found is not None else 0
    found, packs = await request.app[READER].run(read)
    return web.Response(text=f"{found} {packs}")


PATHS = {"bare": ["/bench/bare/{code}"], "reader": ["/bench/reader/{code}"],
         "pages": ["/s/{code}", "/api/distributors/{code}"]}


async def read_loop(http: aiohttp.ClientSession, server: TestServer, mode: str, distributors: int,
                    stop: asyncio.Event, done: list[int]) -> None:
    rng = random.Random(len(done))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    while not stop.is_set():
        code = code_of(rng.randrange(distributors))
        for path in (p.format(code=code) for p in PATHS[mode]):
            async with http.get(server.make_url(path), headers=headers) as r:
                await r.read()
                assert r.status == 200, (path, r.status)
            done.append(1)


async def one_run(server: TestServer, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    writer = server.app[WRITER]
    waits0, stop, reads = writer.lock_waits, asyncio.Event(), []  # type: ignore[var-annotated]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        readers = [asyncio.create_task(read_loop(http, server, mode, args.distributors, stop, reads))
                   for _ in range(args.readers if mode != "none" else 0)]
        t0 = time.perf_counter()
        r = await post_events_to([str(server.make_url("")).rstrip("/")], ADMIN, args.events, 20, args.distributors)
        elapsed = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*readers)
    r.update(mode=mode, lock_waits=writer.lock_waits - waits0, reads_per_s=len(reads) / elapsed)
    return r


async def main_async(args: argparse.Namespace) -> None:
    with scratch_dir("distbot-reads-", args.keep) as workdir:
        db_url = f"sqlite+aiosqlite:///{workdir}/distbot.db"
        config = Config(database={"url": db_url}, admin={"token": ADMIN}, wechat={"template_id": "tmpl-bench"})
        app = create_app(config, workers=False)
        app.router.add_get("/bench/bare/{code}", bare_share_read)
        app.router.add_get("/bench/reader/{code}", reader_share_read)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            await seed_distributors(db_url, args.distributors)
            for mode in ("none", "bare", "reader", "pages"):
                r = await one_run(server, mode, args)
                lat = r["latency_ms"] or {"p50": 0.0, "p99": 0.0}
                print(f"{mode:6}: {r['events']:,} order events at {r['rate']:,.0f}/s (ms p50 {lat['p50']:.1f} "
                      f"p99 {lat['p99']:.1f}), {r['reads_per_s']:,.0f} reads/s beside them; writer lock waits "
                      f"{r['lock_waits']:,} ({r['lock_waits'] / max(r['events'], 1) * 1000:.0f} per 1,000 events); "
                      f"non-200: {r['errors'] or 'none'}", flush=True)
        finally:
            await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--distributors", type=int, default=2000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
