"""`distbot restore`: a backup of storage.backup back into the configured database.

The database must be empty: it has no tables at all (a file not yet made or just made, a database
just created with createdb; not one that `distbot serve` or `db upgrade` has touched, which has
the schema). Restoring brings the backup's own schema with its rows, at its migration; the next
start upgrades it. Anything else is refused before a byte changes: tables found, a backup of the
other database kind, a damaged file (checked whole first). SQLite is copied back through the
online backup API, PostgreSQL by pg_restore in one transaction (all or nothing).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import text

from storage.backup import BackupError, pg_connection, pg_tool, run_tool, sqlite_file, verify
from storage.db import create_engine

KINDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


class NotEmpty(BackupError):
    """The configured database has tables: a restore would mix two databases."""


async def restore(url: str, path: Path) -> str:
    """Restore the backup at `path` into the empty database of `url`; what was restored, in one line."""
    target = sqlite_file(url)
    kind = await verify(path)  # the whole file is read before anything is touched
    wanted = "sqlite" if target is not None else "postgresql"
    if kind != wanted:
        raise BackupError(f"{path} is a {KINDS[kind]} backup but the configured database is {KINDS[wanted]}")
    if target is not None:
        await asyncio.to_thread(_sqlite_restore, path, target)
        return f"restored {path} into {target}"
    tables = await _pg_tables(url)
    if tables:
        raise NotEmpty(f"the configured database is not empty ({tables} tables), so nothing was changed: "
                       "restore into a new, empty database (createdb)")
    dsn, env = pg_connection(url)
    await run_tool(pg_tool("pg_restore"), "--single-transaction", "--exit-on-error", "--no-owner",
                   "--no-privileges", "--dbname", dsn, str(path), env=env)
    return f"restored {path} into the PostgreSQL database {dsn.rsplit('/', 1)[-1]}"


def _sqlite_restore(path: Path, target: Path) -> None:
    wal = target.with_name(target.name + "-wal")
    if wal.is_file() and wal.stat().st_size:  # never opened here: closing would checkpoint it into the file
        if target.is_file() and target.stat().st_size:
            raise NotEmpty(f"the configured database {target} is not empty (it is in use), so nothing was "
                           "changed: restore into an empty database")
        raise NotEmpty(f"{wal} is left from an earlier database, so nothing was changed: move it aside too")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = sqlite3.connect(target)
    except sqlite3.Error as e:
        raise BackupError(f"cannot open the database {target}: {e}") from None
    try:
        try:
            tables = out.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise BackupError(f"{target} is not a SQLite database ({e}); nothing was changed") from None
        if tables:
            raise NotEmpty(f"the configured database {target} is not empty ({tables} tables), so nothing was "
                           "changed: restore into an empty database (move this file aside first)")
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            source.backup(out)
        finally:
            source.close()
    finally:
        out.close()


async def _pg_tables(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(text(
                "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")))
    finally:
        await engine.dispose()
