"""The tests' databases: migrated once into a template, copied for each test.

Migrating a fresh database costs far more than copying a migrated one, and almost every test
wants a migrated one. A template's name carries a digest of storage/migrations, so a new
migration builds a new template and an old template is never used by mistake. The app still runs
its migration check as it starts (create_app(migrate=True)) and finds nothing to do.

- SQLite: one migrated file per migration history under the system's temp folder, built once (a
  file lock keeps the xdist workers from building it together) and copied for each test.
- PostgreSQL: a template database `distbot_tmpl_<digest>` on the test server, built once under an
  advisory lock the workers share and marked IS_TEMPLATE when complete; each test's database is
  `CREATE DATABASE ... TEMPLATE` of it (nobody connects to a template once it is marked).

Tests of the migrations themselves ask for an empty database (`migrated=False`).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import hashlib
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import asyncpg

import storage.schema  # noqa: F401  (every table in Base.metadata)
from storage.db import create_engine
from storage.migrate import MIGRATIONS, upgrade
from storage.models import Base

# The workers build the PostgreSQL template one at a time (a key of its own: "tpl").
_TEMPLATE_LOCK = 0x74706C
SQLITE_TEMPLATES = Path(tempfile.gettempdir()) / "distbot-test-templates"
# What this process (one xdist worker) knows of each test server: the template's name once built,
# the copies of it that are free for the next test, the statements that empty a copy.
_pg_templates: dict[str, str] = {}
_pg_pools: dict[str, list[str]] = {}
_reset_scripts: dict[str, str] = {}
_TABLES = "SELECT {} AS t FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"


@functools.cache
def migrations_digest() -> str:
    """A digest of every migration file: templates are named after it."""
    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".mako"):
            digest.update(str(path.relative_to(MIGRATIONS)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


async def migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def run_apart(work: Coroutine[Any, Any, None]) -> None:
    """`work` on an event loop of its own, in a thread of its own: callable from sync code and from
    a coroutine alike (the caller's loop, if any, waits)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


def sqlite_template() -> Path:
    """The migrated SQLite file of today's migrations, built on first use."""
    SQLITE_TEMPLATES.mkdir(exist_ok=True)
    path = SQLITE_TEMPLATES / f"{migrations_digest()}.db"
    if path.exists():
        return path
    with (SQLITE_TEMPLATES / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            build = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.building")
            run_apart(migrate(f"sqlite+aiosqlite:///{build}"))
            with closing(sqlite3.connect(build)) as conn:  # the file alone holds everything
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            os.replace(build, path)
    return path


def migrated_sqlite(folder: Path, name: str = "distbot.db") -> str:
    """The URL of a migrated SQLite database at folder/name (a copy of the template)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sqlite_template(), folder / name)
    return f"sqlite+aiosqlite:///{folder / name}"


def _database_url(server_url: str, name: str) -> str:
    base, _, query = server_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (("?" + query) if query else "")


def _asyncpg_url(server_url: str) -> str:
    return server_url.replace("postgresql+asyncpg://", "postgresql://")


async def pg_template(server_url: str) -> str:
    """The name of the migrated template database on the server, built on first use."""
    if server_url in _pg_templates:
        return _pg_templates[server_url]
    name = f"distbot_tmpl_{migrations_digest()}"
    conn = await asyncpg.connect(_asyncpg_url(server_url))
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _TEMPLATE_LOCK)
        if not await conn.fetchval("SELECT datistemplate FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # a build that died half way
            await conn.execute(f'CREATE DATABASE "{name}"')
            await migrate(_database_url(server_url, name))
            await conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true')
    finally:
        await conn.close()  # and with it the advisory lock
    _pg_templates[server_url] = name
    return name


@asynccontextmanager
async def pg_database(server_url: str, *, migrated: bool = True) -> AsyncIterator[str]:
    """A database of the test's own on the server: a copy of the template (from this worker's
    pool), or an empty one (dropped afterwards)."""
    pool = _pg_pools.setdefault(server_url, [])
    name = pool.pop() if migrated and pool else await _create(server_url, migrated)
    try:
        yield _database_url(server_url, name)
    finally:
        if migrated and await _reset(server_url, name):
            pool.append(name)
        else:
            await _drop(server_url, name)


async def drop_pools(server_url: str) -> None:
    """At the end of the session: this worker's pooled databases go."""
    for name in _pg_pools.pop(server_url, []):
        await _drop(server_url, name)


async def _create(server_url: str, migrated: bool) -> str:
    template = f' TEMPLATE "{await pg_template(server_url)}"' if migrated else ""
    name = "t_" + uuid.uuid4().hex[:16]
    conn = await asyncpg.connect(_asyncpg_url(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"{template}')
    finally:
        await conn.close()
    return name


async def _drop(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_asyncpg_url(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _reset(server_url: str, name: str) -> bool:
    """The test's database back to the template's state, for the next test: whatever still holds
    a connection to it cut off, every row gone (the migrations leave none but alembic_version's),
    every sequence back at its start. Far cheaper than DROP DATABASE, which waits for a checkpoint
    of the whole server. False when that fails (the caller drops the database)."""
    try:
        conn = await asyncpg.connect(_asyncpg_url(_database_url(server_url, name)))
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        # A table a test made of its own (not the migrations') is dropped: the next test's is new.
        extra = {r["t"] for r in await conn.fetch(_TABLES.format("tablename"))} - {"alembic_version", *Base.metadata.tables}
        if extra:
            await conn.execute(f"DROP TABLE {', '.join(sorted(extra))} CASCADE")
        await conn.execute(await _reset_script(server_url, conn))
        return True
    except asyncpg.PostgresError:
        return False
    finally:
        await conn.close()


async def _reset_script(server_url: str, conn: asyncpg.Connection) -> str:
    """The statements that empty a copy of the template (read once from its catalog: every copy
    has the same tables). Foreign keys are not checked meanwhile (replica role): any order works."""
    if server_url not in _reset_scripts:
        tables = await conn.fetch(_TABLES.format("quote_ident(tablename)"))
        sequences = await conn.fetch("SELECT quote_ident(sequencename) AS s, start_value FROM pg_sequences "
                                     "WHERE schemaname = 'public'")
        _reset_scripts[server_url] = "".join([
            "BEGIN; SET LOCAL session_replication_role = replica; ",
            *(f"DELETE FROM {r['t']}; " for r in tables),
            *(f"SELECT setval('{r['s']}', {r['start_value']}, false); " for r in sequences),
            "COMMIT;"])
    return _reset_scripts[server_url]
