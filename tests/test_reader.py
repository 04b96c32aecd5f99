"""storage.reader: every read of the product goes through one Reader, which never takes SQLite's
write lock (so no read pushes the Writer onto its slow path) and never writes."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from storage import db
from storage.db import create_engine, create_sessionmaker
from storage.migrate import upgrade
from storage.models import JobRun
from storage.reader import Reader
from storage.writer import Writer
from tests.conftest import require_pg
from tests.db_support import pg_database

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def storage(db_url: str) -> AsyncIterator[tuple[str, Reader, Writer]]:
    async for parts in _storage(db_url):
        yield parts


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[tuple[str, Reader, Writer]]:
    """SQLite alone: its write lock is what these tests are about."""
    async for parts in _storage(f"sqlite+aiosqlite:///{tmp_path}/distbot.db"):
        yield parts


async def _storage(db_url: str) -> AsyncIterator[tuple[str, Reader, Writer]]:
    engine = create_engine(db_url)
    await upgrade(engine)
    reader, writer = Reader(engine), Writer(engine)
    yield db_url, reader, writer
    await reader.close()
    await writer.close()
    await engine.dispose()


def _add_run(name: str):  # noqa: ANN202
    return lambda s: s.execute(JobRun.__table__.insert().values(name=name, runs=0))


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(JobRun)) or 0


async def test_a_read_sees_what_was_committed(storage: tuple[str, Reader, Writer]) -> None:
    _, reader, writer = storage
    assert await reader.run(_count) == 0
    await writer.run(_add_run("one"))
    assert await reader.run(_count) == 1


async def test_a_read_that_writes_fails_and_leaves_nothing(storage: tuple[str, Reader, Writer]) -> None:
    _, reader, _ = storage
    with pytest.raises(DBAPIError):
        await reader.run(_add_run("stray"))
    assert await reader.run(_count) == 0


def _sqlite_path(db_url: str) -> str:
    return db_url.split(":///", 1)[1]


def _lock_free_now(path: str) -> bool:
    """Another process's view: can it take the write lock at once (no busy wait)?"""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


async def test_sqlite_a_read_in_progress_takes_no_write_lock(sqlite_storage: tuple[str, Reader, Writer]) -> None:
    db_url, reader, writer = sqlite_storage
    path, inside, release = _sqlite_path(db_url), threading.Event(), threading.Event()

    def long_read(session: Session) -> int:
        n = _count(session)  # the read's snapshot is open from here on
        inside.set()
        assert release.wait(10)
        return n

    reading = asyncio.ensure_future(reader.run(long_read, slow=True))  # a thread: it blocks
    assert await asyncio.to_thread(inside.wait, 10)
    assert await asyncio.to_thread(_lock_free_now, path)  # another process may write meanwhile
    await writer.run(_add_run("during"))  # and so may our Writer, on its fast path
    assert writer.lock_waits == 0
    release.set()
    assert await reading == 0  # the read kept its snapshot
    assert await reader.run(_count) == 1


async def test_sqlite_a_bare_session_took_the_lock(sqlite_storage: tuple[str, Reader, Writer]) -> None:
    """What the Reader replaced: a bare AsyncSession's first read began BEGIN IMMEDIATE, so the
    Writer's next unit found the lock taken and went to its thread (counted in lock_waits)."""
    db_url, _, writer = sqlite_storage
    engine = create_engine(db_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await session.execute(text("SELECT 1"))
            assert not await asyncio.to_thread(_lock_free_now, _sqlite_path(db_url))
            writing = asyncio.ensure_future(writer.run(_add_run("blocked")))
            while writer.lock_waits == 0:
                await asyncio.sleep(0.001)
            await session.rollback()
        await writing
    finally:
        await engine.dispose()


def test_nothing_outside_storage_touches_a_sessionmaker() -> None:
    """The product reads through READER and writes through WRITER; app[SESSIONMAKER] exists for
    the tests' own assertions (published once by the app factory, read by no product module)."""
    allowed = {"kit/app_keys.py": 1, "app/factory.py": 1}  # the key's definition, its publication
    found: dict[str, int] = {}
    for package in ("app", "kit", "wechat", "sandbox", "handlers", "content", "domain"):
        for path in (ROOT / package).rglob("*.py"):
            src = path.read_text(encoding="utf-8")
            hits = len(re.findall(r"sessionmaker\(|SESSIONMAKER\]|run_read\(|READ_ONLY", src))
            hits += len(re.findall(r"^SESSIONMAKER = ", src, re.M))
            if hits:
                found[str(path.relative_to(ROOT))] = hits
    assert found == allowed


async def test_postgresql_a_pooled_connection_that_died_while_idle_is_replaced(
        pg_server_url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ping at every checkout (three round trips on asyncpg): a connection idle for a while is
    pinged, and one that died meanwhile (a restart, a proxy's timeout) is replaced, unseen."""
    async with pg_database(require_pg(pg_server_url), migrated=False) as url:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            killer = create_engine(url)
            async with killer.connect() as conn:
                assert (await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar_one()
            await killer.dispose()
            monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
        finally:
            await engine.dispose()
