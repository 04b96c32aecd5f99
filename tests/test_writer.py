"""The writer on SQLite (storage.writer): a unit of work runs on the event loop when the write lock
is free, in the writer's thread when another connection holds it, and never waits on the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import text

from sandbox.platform import Platform
from storage.db import create_engine
from storage.writer import Writer
from tests.conftest import Harness, make_config
from tests.db_support import migrated_sqlite


def _where(session: Any) -> tuple[int, bool]:
    """(the thread that ran a statement, whether it ran inside the transaction)."""
    raw = session.connection().connection.driver_connection
    raw.create_function("thread_id", 0, threading.get_ident)
    return session.execute(text("SELECT thread_id()")).scalar_one(), raw.in_transaction


async def test_a_unit_runs_on_the_loop_when_the_lock_is_free_and_in_the_thread_when_not(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/writer.db")
    writer = Writer(engine)
    loop_thread = threading.get_ident()
    other = sqlite3.connect(tmp_path / "writer.db", isolation_level=None)
    try:
        assert await writer.run(_where) == (loop_thread, True)
        other.execute("BEGIN IMMEDIATE")
        waiting = asyncio.create_task(writer.run(_where))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # it waits for the lock, in its thread
        other.execute("COMMIT")
        thread, in_transaction = await asyncio.wait_for(waiting, 5)
        assert thread != loop_thread and in_transaction
    finally:
        other.close()
        await writer.close()
        await engine.dispose()


async def test_a_slow_unit_runs_in_the_thread_even_when_the_lock_is_free(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/writer.db")
    writer = Writer(engine)
    try:
        thread, in_transaction = await writer.run(_where, slow=True)
        assert thread != threading.get_ident() and in_transaction
    finally:
        await writer.close()
        await engine.dispose()


async def test_a_unit_that_raises_leaves_nothing(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/writer.db")
    writer = Writer(engine)
    try:
        await writer.run(lambda s: s.execute(text("CREATE TABLE t (x INTEGER)")))

        def half(session: Any) -> None:
            session.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError("half way")
        with pytest.raises(RuntimeError):
            await writer.run(half)
        assert await writer.run(lambda s: s.execute(text("SELECT count(*) FROM t")).scalar()) == 0
    finally:
        await writer.close()
        await engine.dispose()


@pytest.fixture
async def sqlite_harness(tmp_path: Path, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    async with Harness(make_config(migrated_sqlite(tmp_path)), platform, wechat_server) as h:
        yield h


async def test_a_batch_waits_for_another_writer_without_holding_up_the_loop(sqlite_harness: Harness,
                                                                             tmp_path: Path) -> None:
    h = sqlite_harness
    user = h.user()
    await h.follow(user)
    other = sqlite3.connect(tmp_path / "distbot.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writes for a while
        reply = asyncio.create_task(h.say(user, "帮助"))
        started = time.monotonic()
        await asyncio.sleep(0.3)
        # The loop was not held up for the busy timeout (10 s); a loaded machine may pause it a second or two.
        assert time.monotonic() - started < 5
        assert not reply.done()  # the batch waits for the write lock...
        assert h.http is not None
        for _ in range(3):  # ...and the loop goes on serving meanwhile
            async with h.http.get(h.url + "/healthz") as resp:
                assert resp.status == 200
        other.execute("COMMIT")
        assert "分销员助手" in await asyncio.wait_for(reply, 5)
    finally:
        other.close()


async def test_under_steady_writes_the_wal_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Units written back to back, never idle: each checkpoint copies its last frames with units
    held back, so the WAL starts over instead of growing by every unit's pages."""
    monkeypatch.setattr("storage.writer.CHECKPOINT_EVERY", 20)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/writer.db")
    writer = Writer(engine)
    blob = b"x" * 16_384  # four pages a unit

    def unit(session: Any) -> None:
        session.execute(text("INSERT INTO t (b) VALUES (:b)"), {"b": blob})
        time.sleep(0.002)  # the unit's own work, on the loop as ever
    try:
        await writer.run(lambda s: s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")))

        async def lane() -> None:  # a writer that sends its next unit as soon as the last is done
            for _ in range(100):
                await writer.run(unit)
                await asyncio.sleep(0)  # as a group commit's next batch does
        await asyncio.gather(*(lane() for _ in range(4)))
        wal = (tmp_path / "writer.db-wal").stat().st_size
        written = 400 * len(blob)
        # A few checkpoints' worth, not everything written (it was 10 MB, more than the 6.5 MB written).
        assert wal < written / 2, (wal, written)
        assert await writer.run(lambda s: s.execute(text("SELECT count(*) FROM t")).scalar_one()) == 400
    finally:
        await writer.close()
        await engine.dispose()
