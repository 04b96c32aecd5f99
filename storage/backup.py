"""Consistent online backups: SQLite's backup API, or pg_dump for PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(Exception):
    pass


async def backup(url: str, dest: Path) -> None:
    parsed = make_url(url)
    if dest.exists():
        raise BackupError(f"{dest} already exists; choose a new file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        source = Path(parsed.database or "")
        if not source.is_file():
            raise BackupError(f"no database at {source}")
        await asyncio.to_thread(_sqlite_backup, source, dest)
        return
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed; install the PostgreSQL client to back up PostgreSQL")
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    proc = await asyncio.create_subprocess_exec(pg_dump, "--format=custom", "--file", str(dest), dsn,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        dest.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {err.decode(errors='replace').strip().splitlines()[-1:]}")


def _sqlite_backup(source: Path, dest: Path) -> None:
    # The online backup API copies a consistent snapshot while the service keeps writing.
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()
