"""What an event run of bench/orders.py cost the database: batches, statements, transactions, round trips.

- batches: the distinct `received_at` of the run's order_events rows. distbot stamps every event
  of a group commit with the batch's one `now`, so on both databases this counts the committed
  batches that applied events (the naive app stamps each event: one batch per event);
- statements and transactions (PostgreSQL, when the server has pg_stat_statements loaded, as the
  throw-away cluster of `harness.pg_cluster(statements=True)` has): the calls the database counted
  during the run, utility statements included (BEGIN, SAVEPOINT, COMMIT), each row of an
  executemany a call; everything the server sent in that time, its outbox worker included;
- round trips (PostgreSQL, `--trips`): the server's connections go through bench/pg_trips.py,
  a proxy that counts the turns of each connection. It adds a hop to every trip: the run's
  events/s and latency are then not the issue's figures, its statement and CPU counts are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.harness import Databases, free_port, spawn, statement_calls, stop, tree_cpu
from storage.db import create_engine

TRIPS_SCRIPT = Path(__file__).resolve().parent / "pg_trips.py"


async def batches_of(db_url: str) -> tuple[int, int]:
    """(events stored, batches that stored them) in the database."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT count(*), count(DISTINCT received_at) FROM order_events"))).one()
            return int(row[0]), int(row[1])
    finally:
        await engine.dispose()


@dataclass
class Probe:
    """Reads the counters of one database before and after a run (`snapshot`), `describe`s the difference."""

    db_url: str
    server_url: str | None  # the PostgreSQL server's URL; None on SQLite
    trips: subprocess.Popen[bytes] | None = None
    served_url: str = ""  # the URL the app under test is given (through the proxy with --trips)
    postmaster: int | None = None  # the throw-away cluster's: its processes' CPU is the database's
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, db_url: str, dbs: Databases, trips: bool, log: Path) -> Probe:
        """The probe of one run's database (from `dbs`); with `trips`, the proxy started; on the
        throw-away cluster, its postmaster, whose processes' CPU the run is charged."""
        server_url = dbs.server_url if dbs.kind == "postgresql" else None
        probe = cls(db_url, server_url, served_url=db_url, postmaster=dbs.server_pid())
        if trips and server_url is not None:
            url = make_url(db_url)
            port = free_port()
            probe.trips = spawn([sys.executable, str(TRIPS_SCRIPT), "--port", str(port),
                                 "--to", f"{url.host or '127.0.0.1'}:{url.port or 5432}"],
                                log=log, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert probe.trips.stdout is not None
            probe.trips.stdout.readline()  # {"listening": port}
            probe.served_url = url.set(port=port).render_as_string(hide_password=False)
        return probe

    def stop(self) -> None:
        if self.trips is not None:
            stop(self.trips)

    def _trips(self) -> int:
        assert self.trips is not None and self.trips.stdin is not None and self.trips.stdout is not None
        self.trips.stdin.write(b"\n")
        self.trips.stdin.flush()
        return int(json.loads(self.trips.stdout.readline())["trips"])

    async def snapshot(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.server_url is not None:
            out.update(await statement_calls(self.server_url, make_url(self.db_url).database or "") or {})
        if self.trips is not None:
            out["trips"] = self._trips()
        if self.postmaster is not None:
            out["db_cpu_us"] = int(tree_cpu(self.postmaster) * 1e6)
        return out

    async def describe(self, before: dict[str, int], after: dict[str, int], events: int) -> str:
        """Batches and, per event and per batch, what the database received between the snapshots."""
        stored, batches = await batches_of(self.db_url)
        parts = [f"{batches:,} batches, {stored / max(batches, 1):.1f} events per batch"]
        for key in ("statements", "transactions", "trips"):
            if key in after:
                n = after[key] - before[key]
                parts.append(f"{n:,} {'round trips' if key == 'trips' else key} = {n / events:.1f} per event, "
                             f"{n / max(batches, 1):.1f} per batch")
        if "db_cpu_us" in after:
            parts.append(f"the database's CPU {(after['db_cpu_us'] - before['db_cpu_us']) / events:,.0f} µs/event")
        if self.server_url is not None and "statements" not in after:
            parts.append("statements not counted: pg_stat_statements is not loaded (use the throw-away cluster)")
        return "; ".join(parts)


async def top_statements(server_url: str, db_url: str, n: int = 5) -> list[str]:
    """The `n` statements the database spent most time on since it was made (pg_stat_statements;
    none when it is not loaded): a fresh database per run, so these are the run's, seeding aside."""
    import asyncpg
    conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        if await statement_calls(server_url, make_url(db_url).database or "") is None:
            return []
        rows = await conn.fetch(
            "SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g') AS query"
            " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) ORDER BY total_exec_time DESC LIMIT $2",
            make_url(db_url).database, n)
    finally:
        await conn.close()
    return [f"{r['total_exec_time'] / 1000:.2f} s in {r['calls']:,} calls ({r['total_exec_time'] / r['calls']:.3f} ms "
            f"each, {r['rows'] / r['calls']:.1f} rows): {r['query'][:110]}" for r in rows]


def summary(r: dict[str, Any]) -> str:
    """An event run's figures, as every line of orders.py prints them."""
    lat = r["latency_ms"]
    return (f"{r['events']:,} in {r['seconds']:.1f} s = {r['rate']:,.0f} events/s; server CPU {r['cpu_us']:.0f} "
            f"µs/event ({r['cores'] * 100:.0f}% of a core); latency ms p50 {lat['p50']:.1f} p90 {lat['p90']:.1f} "
            f"p99 {lat['p99']:.1f} max {lat['max']:.0f}; non-200: {r['errors'] or 'none'}; cores busy: client "
            f"{r['client']:.2f}, the rest of the machine {r['rest']:.2f} (PostgreSQL's included)")
