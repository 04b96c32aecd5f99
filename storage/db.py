"""Engine and sessions: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL (asyncpg)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite

import asyncio
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Execution options for a connection that only reads: on SQLite its transaction takes no write lock.
READ_ONLY = {"read_only": True}
# A short write transaction on the hot path: on SQLite its statements run on the event loop.
INLINE = {"inline": True}


class _OneHopCursor(aiosqlite.Cursor):
    """Executes and fetches in one trip to the connection's thread (aiosqlite takes four:
    cursor, execute, fetchall, close), or none in an INLINE transaction; each trip costs more CPU
    than a small query itself. A transaction's deferred BEGIN rides along with its first statement.
    Relies on aiosqlite's Connection._execute and Cursor._cursor (pinned in pyproject.toml)."""

    _conn: _OneHopConnection
    _rows: list[Any] | None = None

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> _OneHopCursor:
        cursor, params = self._cursor, parameters if parameters is not None else ()

        def run() -> list[Any] | None:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None

        self._rows = await self._conn.run(run)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _OneHopCursor:
        cursor = self._cursor
        await self._conn.run(lambda: cursor.executemany(sql, parameters))
        return self

    async def fetchall(self) -> Iterable[Any]:
        rows, self._rows = self._rows, None
        return rows if rows is not None else await super().fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _CursorNow:
    """What Connection.cursor() returns: usable with `await` and `async with`, no thread trip."""

    def __init__(self, cursor: _OneHopCursor):
        self.cursor = cursor

    async def __aenter__(self) -> _OneHopCursor:
        return self.cursor

    async def __aexit__(self, *exc: object) -> None:
        await self.cursor.close()

    def __await__(self):  # noqa: ANN204
        return self.__aenter__().__await__()


class _OneHopConnection(aiosqlite.Connection):
    """aiosqlite with fewer trips to its thread: BEGIN is sent with the transaction's first
    statement, and COMMIT or ROLLBACK only when a transaction is open.

    A transaction begun with the INLINE execution option runs its statements on the event loop
    itself once it holds the write lock. A short indexed statement costs less than a trip to the
    thread, and while the loop is busy each of the driver's GIL releases in the thread (one per
    row) waits for the loop to let go. Nothing inline waits for a lock: BEGIN IMMEDIATE is tried
    without the busy timeout and, when another connection writes, waits in the thread; in WAL
    mode the lock holder's statements do not wait. COMMIT goes to the thread (it may checkpoint).
    Only for transactions of short statements: a long one would hold up the whole loop."""

    _begin: str | None = None
    _inline_next = False
    _inline = False

    def cursor(self) -> _CursorNow:  # type: ignore[override]
        return _CursorNow(_OneHopCursor(self, self._conn.cursor()))

    def defer_begin(self, sql: str, *, inline: bool = False) -> None:
        self._begin, self._inline_next = sql, inline

    async def run(self, work: Callable[[], Any]) -> Any:
        """`work` with the deferred BEGIN first: on the loop in an inline transaction, otherwise
        in one trip to the thread."""
        begin, self._begin = self._begin, None
        if begin and self._inline_next:
            self._inline_next = False
            if not self._begin_now(begin):
                await self._execute(self._conn.execute, begin)  # wait for the lock in the thread
            self._inline, begin = True, None  # the write lock is ours: nothing below waits on it
        if self._inline:
            return work()
        if not begin:
            return await self._execute(work)

        def begin_then_work() -> Any:
            self._conn.execute(begin)
            return work()
        return await self._execute(begin_then_work)

    def _begin_now(self, begin: str) -> bool:
        """BEGIN on the loop if the lock is free right now; False when it would have to wait."""
        conn = self._conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute(begin)
            return True
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")

    async def commit(self) -> None:
        self._begin, self._inline = None, False
        if self._conn.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        self._begin, self._inline = None, False
        if self._conn.in_transaction:
            await super().rollback()


def is_postgres(conn: Connection | AsyncSession) -> bool:
    bind = conn.bind if isinstance(conn, AsyncSession) else conn
    return bind.dialect.name == "postgresql"


def dialect_insert(conn: Connection | AsyncSession, table: Any) -> Any:
    """INSERT with ON CONFLICT support for the connection's dialect (a Table or a model)."""
    return (pg_insert if is_postgres(conn) else sqlite_insert)(table)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    # hide_parameters: database errors get logged, and their parameters hold phone numbers.
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        database = parsed.database or ":memory:"

        async def connect() -> aiosqlite.Connection:
            return await _OneHopConnection(partial(sqlite3.connect, database, check_same_thread=False,
                                                   timeout=SQLITE_BUSY_TIMEOUT_MS / 1000), 64)

        engine = create_async_engine(url, async_creator=connect, hide_parameters=True)
        tune_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True)


def tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Take transaction control from the driver so that we can BEGIN IMMEDIATE: every
        # transaction takes the write lock up front, so a read-then-write never fails half way
        # with SQLITE_BUSY when another connection (or process) wrote in between.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # Read-only work (a poll, a health check) takes no write lock.
        options = conn.get_execution_options()
        begin = "BEGIN" if options.get("read_only") else "BEGIN IMMEDIATE"
        driver = conn.connection.driver_connection
        if isinstance(driver, _OneHopConnection):
            # Sent with the first statement, in the same thread trip (or on the loop: INLINE).
            driver.defer_begin(begin, inline=bool(options.get("inline")))
        else:
            conn.exec_driver_sql(begin)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class SqliteWriter:
    """A synchronous engine on the app's SQLite file, used from one dedicated thread: a whole
    batch of writes runs there in one hop, instead of a few hops to aiosqlite's thread per
    statement (BEGIN IMMEDIATE serialises it with the app's own connections)."""

    def __init__(self, url: str):
        self.engine = create_sync_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                                         hide_parameters=True)
        # The same connection set-up as the app's engine (WAL, busy timeout, BEGIN IMMEDIATE).
        tune_sqlite(self.engine)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="order-events")

    @classmethod
    def for_url(cls, url: str) -> SqliteWriter | None:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return None
        return cls(str(parsed.set(drivername="sqlite+pysqlite")))

    async def run(self, work: Callable[[Connection], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.thread, self._transaction, work)

    def _transaction(self, work: Callable[[Connection], Any]) -> Any:
        with self.engine.begin() as conn:
            return work(conn)

    def close(self) -> None:
        try:
            self.thread.submit(self.engine.dispose)  # its connection lives in that thread
        except RuntimeError:  # the interpreter is exiting and has stopped the thread already
            return
        self.thread.shutdown(wait=False)
