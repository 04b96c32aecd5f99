"""The ledger export at scale on SQLite: GET /api/exports/ledger.csv over 1,000,000 entries,
timed, with the server's memory watched.

    .venv/bin/python bench/exports.py [--entries 1000000] [--distributors 100000] [--keep]

1. A SQLite file in a temp dir is migrated and seeded as bench/console.py seeds it (distributors,
   orders over the past 60 days with their commission and reversal entries, withdrawals), until
   the ledger holds `--entries` entries.
2. `distbot serve` starts as its own process (bench/harness.Server: sandbox mode, a free port of
   127.0.0.1), and a one-day export warms it up (imports, the first queries).
3. The whole ledger is exported (`from` a year ago, `to` today) and read by the client as it
   streams. Printed: time to the first byte, the whole time, rows and MB per second, and the
   server's resident memory: before, the most seen during the export (VmRSS every 20 ms), the
   process's high-water mark (VmHWM) before and after, and the file's size beside them. The
   export is streamed a page at a time, so memory should grow by a few MB whatever the size of
   the file.
   The file is checked: a BOM, the header, one line per entry.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.console import migrated_and_seeded  # noqa: E402
from bench.harness import ADMIN, Server, peak_rss_mb, rss_mb  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from domain.formats import CHINA  # noqa: E402


async def export(http: aiohttp.ClientSession, server: Server, since: str, until: str) -> tuple[float, float, int, int]:
    """(seconds to the first byte, seconds in all, bytes, lines) of one ledger export."""
    t0 = time.perf_counter()
    first, size, lines, head = None, 0, 0, b""
    async with http.get(server.url("/api/exports/ledger.csv"), params={"from": since, "to": until},
                        headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200, (resp.status, await resp.text())
        async for chunk in resp.content.iter_chunked(1 << 16):
            if first is None:
                first = time.perf_counter() - t0
            if len(head) < 64:
                head += chunk[:64]
            size += len(chunk)
            lines += chunk.count(b"\n")
    assert head.startswith("\ufeff".encode()), head[:16]
    return first or 0.0, time.perf_counter() - t0, size, lines


async def run(workdir: Path, distributors: int, entries: int) -> None:
    path = workdir / "distbot.db"
    db_url = f"sqlite+aiosqlite:///{path}"
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    await migrated_and_seeded(path, distributors, entries, entries // 100, now)
    print(f"seeded {entries:,} ledger entries ({distributors:,} distributors) in {time.perf_counter() - t0:.1f} s; "
          f"database {path.stat().st_size / 2**20:.0f} MB")
    today = now.astimezone(CHINA).date()
    server = Server(workdir, db_url)
    await server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        async with aiohttp.ClientSession() as http:
            await export(http, server, str(today), str(today))  # warm-up: one day
            before_rss, before_peak = rss_mb(pid), peak_rss_mb(pid)
            samples: list[float] = []

            async def watch() -> None:
                while True:
                    samples.append(rss_mb(pid))
                    await asyncio.sleep(0.02)
            watcher = asyncio.create_task(watch())
            try:
                first, took, size, lines = await export(http, server, str(today - timedelta(days=365)), str(today))
            finally:
                watcher.cancel()
            peak = peak_rss_mb(pid)
        rows = lines - 1
        assert rows == entries, f"{rows:,} rows exported of {entries:,} entries"
        print(f"ledger.csv, {rows:,} rows, {size / 2**20:.1f} MB: first byte after {first * 1000:.0f} ms, "
              f"whole file in {took:.1f} s ({rows / took:,.0f} rows/s, {size / 2**20 / took:.1f} MB/s)")
        print(f"server memory: {before_rss:.0f} MB resident before the export; during it at most "
              f"{max(samples):.0f} MB (+{max(samples) - before_rss:.0f} MB, sampled every 20 ms); the process's peak "
              f"{before_peak:.0f} MB before, {peak:.0f} MB after; the file: {size / 2**20:.0f} MB")
    finally:
        server.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distributors", type=int, default=100_000)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    with scratch_dir("distbot-exports-", args.keep) as workdir:
        await run(workdir, args.distributors, args.entries)


if __name__ == "__main__":
    asyncio.run(main())
