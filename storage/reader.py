"""The one way to read, beside storage.writer's one way to write: `await reader.run(work)`, where
`work(session)` is a synchronous function of a Session that only reads. Every read of the
product uses it: /api GETs, console and public pages, jobs' scans, the outbox's look for due rows.

- SQLite: a synchronous engine of its own (the standard sqlite3 driver, a pool of connections),
  each read in a deferred transaction (plain BEGIN). In WAL mode such a transaction reads a
  snapshot and never takes the write lock, nor waits for it, so no read ever pushes the Writer
  onto its slow path (its thread, waiting for the lock), however many run at once. As the
  Writer's units, a read runs on the event loop itself (short indexed reads cost less than a trip
  to a thread: the async driver made one per statement), and a long one says so (`slow=True`: an
  export's page, a report's batch, a list without a bound) and runs in one of the reader's threads.
- PostgreSQL: the same function through an AsyncSession's run_sync, in a READ ONLY transaction
  (READ COMMITTED, as every session of ours).

A read that tries to write fails (SQLite: `query_only`; PostgreSQL: a read-only transaction):
writes go through storage.writer. A read sees what was committed before it began and nothing
after: to read what you are about to write, do both in one `Writer.run` unit.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from storage.db import READ_ONLY, create_sessionmaker, sqlite_file, sqlite_file_engine
from storage.writer import T, Work

# Slow reads at once on SQLite (threads; the pool has one more connection, for the loop's reads):
# the machines have two cores, and a read holds the GIL except inside SQLite itself.
SQLITE_READERS = 3


class Reader:
    """Runs reads: on SQLite on its own connections (on the loop, or in its threads when slow), on
    PostgreSQL on the async engine (side by side)."""

    def __init__(self, engine: AsyncEngine):
        path = sqlite_file(engine)
        self._sqlite = _SqliteReads(path) if path is not None else None
        self._sessionmaker = create_sessionmaker(engine)
        # PostgreSQL: BEGIN READ ONLY (no extra trip); SQLite in memory: a deferred BEGIN (storage.db).
        self._options = {"postgresql_readonly": True} if engine.dialect.name == "postgresql" else READ_ONLY

    async def run(self, work: Work[T], *, slow: bool = False) -> T:
        """`work(session)` in one read transaction, which writes nothing.

        `slow`: a read of many rows that must not hold the loop; on SQLite it runs in a thread."""
        if self._sqlite is not None:
            return await self._sqlite.run(work, slow)
        async with self._sessionmaker() as session:
            await session.connection(execution_options=self._options)
            return await session.run_sync(work)

    async def close(self) -> None:
        if self._sqlite is not None:
            await self._sqlite.close()


class _SqliteReads:
    def __init__(self, path: str):
        # A deferred BEGIN: a snapshot to read, never the write lock; query_only: a write fails
        # instead of taking the lock.
        self.engine = sqlite_file_engine(path, begin="BEGIN", pragmas=("PRAGMA query_only=ON",),
                                         pool_size=SQLITE_READERS + 1, max_overflow=0)
        self.threads = ThreadPoolExecutor(max_workers=SQLITE_READERS, thread_name_prefix="sqlite-reader")

    async def run(self, work: Work[T], slow: bool) -> T:
        if not slow:
            return _read(self.engine, work)  # on the loop
        return await asyncio.get_running_loop().run_in_executor(self.threads, _read, self.engine, work)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.threads, self.engine.dispose)
        self.threads.shutdown(wait=True)


def _read(engine: Engine, work: Work[T]) -> T:
    # Closing the session rolls the read's transaction back: a read commits nothing.
    with Session(bind=engine, expire_on_commit=False, autoflush=False) as session:
        return work(session)

