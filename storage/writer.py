"""The one way to write: a unit of work is a synchronous function of a Session, run in one
transaction, in one trip, on either database. Every writer uses it: the webhook's and the order
events' group commits (storage.group_commit), admin decisions, jobs, the content store.

This module is where distbot's database speed work lives, with public APIs only:

- SQLite: one connection of a synchronous engine (the standard sqlite3 driver). A unit runs on
  the event loop itself when the write lock is free at once (BEGIN IMMEDIATE tried without the
  busy timeout): its statements are short and indexed, and cost less than a trip to a thread
  (whose every GIL hand-over waits for the busy loop). When another connection or process holds
  the lock, the unit runs in the writer's own thread instead, which waits with the busy timeout.
  The connection never checkpoints the WAL on COMMIT; the thread does that now and then, so
  nothing on the loop waits for the disk but the last few frames of each checkpoint: those are
  copied with no unit writing, so that the next unit starts the WAL over (under steady load a
  WAL that is only ever copied while units append to it grows without end: 800 MB in 20 s of
  order events).
- PostgreSQL: the same function through an AsyncSession's run_sync: its statements are awaited
  on asyncpg through SQLAlchemy's greenlet bridge.

A unit must be short (indexed reads, a few writes): on SQLite it holds the loop while it runs.
A long one says so (`slow=True`) and runs in the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from storage.db import SQLITE_BUSY_TIMEOUT_MS, create_sessionmaker, sqlite_file, sqlite_file_engine

log = logging.getLogger(__name__)
T = TypeVar("T")
Work = Callable[[Session], T]
# After this many commits the thread checkpoints the WAL (SQLite's own default is ~1,000 pages).
CHECKPOINT_EVERY = 200
# A checkpoint copies while units go on until this few frames are left (or after this many
# rounds), then copies the rest with units held back: a pause of a few milliseconds.
CHECKPOINT_LAST_FRAMES = 1_000
CHECKPOINT_ROUNDS = 4
# After the WAL starts over its file is cut back to this size (the default keeps its largest).
WAL_SIZE_LIMIT = 64 * 1024 * 1024
WRITER_CACHE_KIB = 16 * 1024


class UnitHook(Protocol):
    """Something a task adds to each unit of work it runs (`hooked`): `in_unit(session, result)`
    runs inside the transaction after the work, `committed()` after that transaction committed.
    A kind of hook may also have a class method `in_units(session, [(hook, result), ...])`: a
    group commit's batch then runs its hooks of that kind in one call (one statement for all)."""

    def in_unit(self, session: Session, result: Any) -> None: ...

    def committed(self) -> None: ...


def run_hooks(session: Session, pairs: list[tuple[UnitHook, Any]]) -> None:
    """Several tasks' hooks in one unit (a group commit's batch): together where their kind can."""
    kinds: dict[type, list[tuple[UnitHook, Any]]] = {}
    for hook, result in pairs:
        kinds.setdefault(type(hook), []).append((hook, result))
    for kind, group in kinds.items():
        together = getattr(kind, "in_units", None)
        if together is not None:
            together(session, group)
        else:
            for hook, result in group:
                hook.in_unit(session, result)


# The hook and the task that set it: tasks started meanwhile inherit the context (asyncio copies
# it), not the hook; a job started by a request runs without it, and a group commit's batch runs
# the hooks its items were submitted with (storage.group_commit).
_HOOK: ContextVar[tuple[asyncio.Task[Any] | None, UnitHook] | None] = ContextVar("unit_hook", default=None)


@contextlib.contextmanager
def hooked(hook: UnitHook) -> Iterator[None]:
    """Run `hook` in every unit of work the current task runs inside the block (e.g. the audit row
    of the request whose change the unit makes, kit.auditing)."""
    token = _HOOK.set((asyncio.current_task(), hook))
    try:
        yield
    finally:
        _HOOK.reset(token)


def task_hook() -> UnitHook | None:
    """The hook the current task set, if any (a group commit carries its submitters' hooks)."""
    bound = _HOOK.get()
    return bound[1] if bound is not None and bound[0] is asyncio.current_task() else None


def _with_hook(work: Work[T], hook: UnitHook) -> Work[T]:
    def unit(session: Session) -> T:
        result = work(session)
        hook.in_unit(session, result)
        return result
    return unit


class Writer:
    """Runs units of work: on SQLite one at a time, on PostgreSQL side by side (its row locks
    serialise only what conflicts).

    `on_commit(info)` is called after each commit with the unit's `session.info`, e.g. to wake
    the outbox worker when the unit queued a message."""

    def __init__(self, engine: AsyncEngine, on_commit: Callable[[dict[str, Any]], None] | None = None):
        self.on_commit = on_commit
        self._sqlite: _SqliteFile | None = None
        # AsyncSessions on the engine: PostgreSQL's units, `session()`, and the tests' own look
        # at the database (app[SESSIONMAKER]); the product reads through storage.reader.
        self.sessions = create_sessionmaker(engine)
        if (path := sqlite_file(engine)) is not None:
            self._sqlite = _SqliteFile(path)

    @property
    def lock_waits(self) -> int:
        """SQLite: units that found the write lock taken by another connection and went to the
        thread to wait for it (the slow path); a read through storage.reader never causes one."""
        return self._sqlite.lock_waits if self._sqlite is not None else 0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """An AsyncSession in a write transaction of its own (BEGIN IMMEDIATE on SQLite), committed
        when the block ends: only for a writer that must await inside its transaction (the shared
        access token is fetched from WeChat while its row is locked). Everything else: `run`."""
        async with self.sessions() as session, session.begin():
            yield session

    async def run(self, work: Work[T], *, slow: bool = False) -> T:
        """`work(session)` in one transaction, committed when it returns, rolled back when it raises.

        `slow`: a unit that writes much (a content pack, a job's chunk) and must not hold the
        loop; on SQLite it runs in the writer's thread whatever the lock. A hook the task set
        (`hooked`) runs inside the unit, after `work`."""
        hook = task_hook()
        if hook is not None:
            work = _with_hook(work, hook)
        if self._sqlite is not None:
            result, info = await self._sqlite.run(work, slow)
        else:
            async with self.sessions() as session:
                async with session.begin():
                    result = await session.run_sync(work)
                info = session.sync_session.info
        if hook is not None:
            hook.committed()
        if self.on_commit is not None and info:
            self.on_commit(info)
        return result

    async def close(self) -> None:
        if self._sqlite is not None:
            await self._sqlite.close()


class _SqliteFile:
    def __init__(self, path: str):
        # The thread checkpoints the WAL, never the loop (wal_autocheckpoint=0). A unit's SAVEPOINTs
        # keep their statement journal in memory: in a temporary file (SQLite's default) each one
        # costs file system calls, a sixth of a batch of order events' time. The pages the units
        # keep coming back to stay in the connection's cache (16 MiB, 2 MiB by default): an order
        # event read five pages from the file system, now a tenth of that.
        self.engine = sqlite_file_engine(path, begin="BEGIN IMMEDIATE", poolclass=StaticPool,
                                         pragmas=("PRAGMA wal_autocheckpoint=0", "PRAGMA temp_store=MEMORY",
                                                  f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}",
                                                  f"PRAGMA cache_size=-{WRITER_CACHE_KIB}"))
        self.lock = asyncio.Lock()  # one connection, one unit at a time (they queue for SQLite's lock anyway)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._path = path
        self._checkpointer: sqlite3.Connection | None = None  # its own connection, used in the thread only
        self._commits = 0
        self.lock_waits = 0
        self._checkpointing: asyncio.Future[None] | None = None

    async def run(self, work: Work[T], slow: bool) -> tuple[T, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        async with self.lock:
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert isinstance(raw, sqlite3.Connection)
                if not slow and _begin_now(raw):
                    result = _unit(conn, work)  # on the loop: the write lock is ours
                else:
                    if not slow:
                        self.lock_waits += 1  # another connection holds the lock: wait in the thread
                    result = await loop.run_in_executor(self.thread, _unit, conn, work)
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and (self._checkpointing is None or self._checkpointing.done()):
            self._commits = 0
            self._checkpointing = asyncio.ensure_future(self._checkpoint_all())
        return result

    async def _checkpoint_all(self) -> None:
        """Copy the WAL into the database file in the thread while units go on, round after round
        while that leaves many frames; then the rest with units held back, so that the next unit
        starts the WAL over (a reader still on an older snapshot may keep it from doing so: then
        the next checkpoint tries again)."""
        loop = asyncio.get_running_loop()
        for _ in range(CHECKPOINT_ROUNDS):
            if await loop.run_in_executor(self.thread, self._checkpoint) <= CHECKPOINT_LAST_FRAMES:
                break
        async with self.lock:
            await loop.run_in_executor(self.thread, self._checkpoint)

    def _checkpoint(self) -> int:
        """Copy the WAL into the database file as far as readers allow (PASSIVE never waits); the
        frames left to copy."""
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self._path, check_same_thread=False)
            _, frames, copied = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return max(frames - copied, 0)
        except sqlite3.Error:
            log.warning("WAL checkpoint failed; the next one will catch up", exc_info=True)
            return 0

    async def close(self) -> None:
        if self._checkpointing is not None:
            await self._checkpointing
        await asyncio.get_running_loop().run_in_executor(self.thread, self._dispose)
        self.thread.shutdown(wait=True)

    def _dispose(self) -> None:
        self.engine.dispose()
        if self._checkpointer is not None:
            self._checkpointer.close()


def _unit(conn: Any, work: Work[T]) -> tuple[T, dict[str, Any]]:
    with Session(bind=conn, expire_on_commit=False, autoflush=False) as session:
        with session.begin():
            result = work(session)
        return result, session.info


def _begin_now(raw: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE if the write lock is free right now; False when it would have to wait."""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        raw.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError as e:
        if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
            raise
        return False
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")

