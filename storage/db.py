"""Engine and sessions: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL (asyncpg).

The async engine serves migrations, PostgreSQL's units and reads (storage.writer, storage.reader),
and `Writer.session()` (the shared access token). SQLite's units and reads have engines of their own.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Table, delete, event, select
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Execution options for a connection that only reads: on SQLite its transaction takes no write lock.
READ_ONLY = {"read_only": True}


def is_postgres(conn: Connection | Session | AsyncSession) -> bool:
    bind = conn if isinstance(conn, Connection) else conn.get_bind()
    return bind.dialect.name == "postgresql"


def dialect_insert(conn: Connection | Session | AsyncSession, table: Any) -> Any:
    """INSERT with ON CONFLICT support for the connection's dialect (a Table or a model)."""
    return (pg_insert if is_postgres(conn) else sqlite_insert)(table)


def adding_upsert(session: Session, table: Table, key: str | tuple[str, ...], counters: tuple[str, ...]) -> Any:
    """`INSERT ... ON CONFLICT (key) DO UPDATE SET c = c + excluded.c` for each counter column:
    a batch's additions to counter rows (balances, daily totals, distributors' totals) in one
    executemany, the rows created when missing. `key`: a column, or the columns of a composite
    key. Built once per table and dialect."""
    return _adding_upsert(session.get_bind().dialect.name, table, key, counters)


@functools.cache
def _adding_upsert(dialect: str, table: Table, key: str | tuple[str, ...], counters: tuple[str, ...]) -> Any:
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
    keys = [key] if isinstance(key, str) else list(key)
    return stmt.on_conflict_do_update(index_elements=keys, set_={c: table.c[c] + stmt.excluded[c] for c in counters})


# Rows a prune deletes per unit of work: a backlog of old rows never holds the write lock for long.
PRUNE_CHUNK = 5000


def delete_chunk(session: Session, table: Table, *where: Any) -> int:
    """Delete up to PRUNE_CHUNK rows matching `where`, in primary key order (oldest ids first);
    how many went."""
    (key,) = table.primary_key.columns
    some = select(key).where(*where).order_by(key).limit(PRUNE_CHUNK)
    return session.connection().execute(delete(table).where(key.in_(some.scalar_subquery()))).rowcount


def json_text(value: Any) -> str:
    """JSON as text, UTF-8 as it is (not \\u escapes): the JSON columns' and the API's answers.
    orjson takes a tenth of json.dumps's time, and each order event and message writes some."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# Every engine's JSON columns.
_JSON = {"json_serializer": json_text, "json_deserializer": orjson.loads}


def create_engine(url: str) -> AsyncEngine:
    # hide_parameters: database errors get logged, and their parameters hold phone numbers.
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, hide_parameters=True, **_JSON,
                                     connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        tune_sqlite(engine.sync_engine)
        return engine
    # asyncpg prepares each statement once per connection and keeps 100 by default; a batch's
    # `IN (...)` lists make one statement per list length, so the order and webhook batches alone
    # use several hundred, and a miss costs a round trip (and the server's planning) again.
    engine = create_async_engine(url, pool_size=10, max_overflow=10, hide_parameters=True, **_JSON,
                                 connect_args={"prepared_statement_cache_size": 500})
    _ping_after_idle(engine.sync_engine)
    return engine


# A pooled PostgreSQL connection idle this long is pinged before use. SQLAlchemy's pool_pre_ping
# pings at every checkout, and asyncpg's ping is three round trips (BEGIN, a query, ROLLBACK): more
# than a batch of order events spends on some of its statements. A connection in steady use is
# not pinged; one that dies in use fails its unit, and the pool then replaces all its connections.
PING_AFTER_IDLE_SECONDS = 2.0


def _ping_after_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn, record):  # noqa: ANN001
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, proxy):  # noqa: ANN001
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:  # the pool connects afresh and tries again
            raise DisconnectionError("the connection did not answer its ping") from e


def sqlite_pragmas(dbapi_conn: Any) -> None:
    """Every SQLite connection of ours: WAL, a busy timeout, foreign keys."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The file of a SQLite engine; None on PostgreSQL or for a database in memory."""
    url = engine.url
    return url.database if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") else None


def sqlite_file_engine(path: str, *, begin: str, pragmas: tuple[str, ...], **pool: Any) -> Engine:
    """A synchronous engine on a SQLite file (the standard sqlite3 driver), the Writer's and the
    Reader's: our pragmas and `pragmas` on each connection, `begin` starting each transaction that
    was not begun already (the Writer begins on the loop itself)."""
    engine = create_sync_engine(f"sqlite:///{path}", hide_parameters=True, **pool, **_JSON,
                                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we send BEGIN ourselves
        sqlite_pragmas(dbapi_conn)
        for pragma in pragmas:
            dbapi_conn.execute(pragma)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        if not conn.connection.driver_connection.in_transaction:
            conn.exec_driver_sql(begin)
    return engine


def tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Take transaction control from the driver so that we can BEGIN IMMEDIATE: every
        # transaction takes the write lock up front, so a read-then-write never fails half way
        # with SQLITE_BUSY when another connection (or process) wrote in between.
        dbapi_conn.isolation_level = None
        sqlite_pragmas(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # Read-only work (a poll, a health check) takes no write lock.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read_only") else "BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

