"""Consistent online backups and their checks: SQLite's backup API, or pg_dump for PostgreSQL.

Every backup is written under a temporary name beside its destination (`.NAME.partial`), checked
(`PRAGMA integrity_check` on the copy; pg_restore reading the whole archive), and only then renamed
to its name: a process killed half way leaves a `.partial` file, never one that looks good. The
`backup` job's folder holds `distbot-YYYYmmdd-HHMMSS.db|.dump` files (China time), the newest
`keep` of them kept (`scheduled_backup`). storage.restore brings one back.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"  # pg_dump's custom format
BACKUP_NAME = re.compile(r"^distbot-\d{8}-\d{6}\.(db|dump)$")
PARTIAL = ".partial"
STALE_PARTIAL_SECONDS = 3600  # a .partial this much older than a fresh backup is a killed run's


class BackupError(Exception):
    """A backup that cannot be made or read, told in one sentence."""


# ---- the database and its tools -------------------------------------------------------------------
def sqlite_file(url: str) -> Path | None:
    """The SQLite database file of `url`, or None for PostgreSQL."""
    parsed = make_url(url)
    return Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None


def pg_connection(url: str) -> tuple[str, dict[str, str]]:
    """libpq's connection string for `url` and the environment carrying its password (kept off
    the command line, where `ps` shows it)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def pg_tool(name: str) -> str:
    """pg_dump, pg_restore, ...: on PATH, else the newest of /usr/lib/postgresql/*/bin (Debian)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   key=_version, reverse=True)), None)
    if found is None:
        raise BackupError(f"{name} is not installed; install the PostgreSQL client (postgresql-client) "
                          "to back up or restore PostgreSQL")
    return found


def _version(path: str) -> tuple[int, ...]:
    folder = Path(path).parent.parent.name
    return tuple(int(p) for p in folder.split(".") if p.isdigit())


async def run_tool(*args: str, env: dict[str, str] | None = None) -> str:
    """Run a PostgreSQL tool; its last line of error output as a BackupError when it fails."""
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    _, err = await proc.communicate()
    lines = err.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return "\n".join(lines)


# ---- one backup -----------------------------------------------------------------------------------
async def backup(url: str, dest: Path) -> None:
    """A consistent copy of the database at `dest` (a new file), checked before it gets its name."""
    if dest.exists():
        raise BackupError(f"{dest} already exists; choose a new file")
    source = sqlite_file(url)
    if source is not None and not source.is_file():
        raise BackupError(f"no database at {source}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}{PARTIAL}")
    try:
        if source is not None:
            await asyncio.to_thread(_sqlite_backup, source, partial)
        else:
            dsn, env = pg_connection(url)
            await run_tool(pg_tool("pg_dump"), "--format=custom", "--file", str(partial), dsn, env=env)
        await verify(partial)
        await asyncio.to_thread(_settle, partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def _sqlite_backup(source: Path, dest: Path) -> None:
    # The online backup API copies a consistent snapshot while the service keeps writing.
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
            # The copy has the source's WAL mode in its header: one self-contained file instead,
            # which opening read-only (the check, a restore) leaves without -wal and -shm files.
            out.execute("PRAGMA journal_mode=DELETE")
        finally:
            out.close()
    finally:
        src.close()


def _settle(partial: Path, dest: Path) -> None:
    """The checked copy on disk under its name: its bytes flushed before the rename, the rename
    flushed with its folder."""
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial, dest)
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def kind_of(path: Path) -> str:
    """"sqlite" or "postgresql", from the file's first bytes; BackupError when it is neither."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise BackupError(f"no backup at {path}") from None
    except IsADirectoryError:
        raise BackupError(f"{path} is a folder, not a backup file") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_MAGIC):
        return "postgresql"
    raise BackupError(f"{path} is neither a SQLite database nor a pg_dump archive")


async def verify(path: Path) -> str:
    """Check a backup whole: a SQLite copy passes `PRAGMA integrity_check` and holds distbot's
    schema; a pg_dump archive is read to its end by pg_restore (its table of contents and every
    table's data). Its kind; BackupError saying what is wrong."""
    kind = kind_of(path)
    if kind == "sqlite":
        await asyncio.to_thread(_check_sqlite, path)
    else:
        try:
            await run_tool(pg_tool("pg_restore"), "--file", os.devnull, str(path))
        except BackupError as e:
            raise BackupError(f"{path} is damaged ({e})") from None
    return kind


def _check_sqlite(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            schema = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise BackupError(f"{path} is damaged ({e})") from None
    if problems != ["ok"]:
        raise BackupError(f"{path} is damaged (integrity check: {problems[0]})")
    if schema is None:
        raise BackupError(f"{path} is a SQLite database but not a distbot backup (no alembic_version table)")


# ---- the backup job's folder ----------------------------------------------------------------------
@dataclass(frozen=True)
class Made:
    """What a scheduled backup made: the new file (None: one of this second was there already),
    and the files pruned."""

    path: Path | None
    pruned: tuple[str, ...]


async def scheduled_backup(url: str, folder: Path, local_now: datetime, keep: int) -> Made:
    """A checked backup in `folder` named after `local_now` (China time), then only the newest
    `keep` backups kept, with what killed runs left."""
    name = f"distbot-{local_now:%Y%m%d-%H%M%S}.{'db' if sqlite_file(url) is not None else 'dump'}"
    path = folder / name
    if path.exists():  # this instant's backup is made: running twice does the work once
        return Made(None, ())
    await backup(url, path)
    return Made(path, await asyncio.to_thread(prune, folder, keep, path))


def prune(folder: Path, keep: int, fresh: Path) -> tuple[str, ...]:
    """Delete all but the newest `keep` backups (by name, their time) and the .partial files of
    runs killed at least an hour before `fresh` was made; the names deleted."""
    backups = sorted((p for p in folder.iterdir() if BACKUP_NAME.match(p.name)), key=lambda p: p.name, reverse=True)
    made_at = fresh.stat().st_mtime
    stale = [p for p in folder.iterdir() if p.name.endswith(PARTIAL)
             and p.stat().st_mtime < made_at - STALE_PARTIAL_SECONDS]
    for p in [*backups[keep:], *stale]:
        p.unlink(missing_ok=True)
    return tuple(p.name for p in [*backups[keep:], *stale])


def newest(folder: Path) -> os.stat_result | None:
    """The file status of the newest backup in `folder` (None: none yet)."""
    if not folder.is_dir():
        return None
    found = max((p for p in folder.iterdir() if BACKUP_NAME.match(p.name)), key=lambda p: p.name, default=None)
    return found.stat() if found is not None else None
