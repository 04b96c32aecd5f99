"""SQLite's inline transactions (storage.db.INLINE): the dispatcher's batch runs its statements on
the event loop once it holds the write lock, and never waits for the lock on the loop."""

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

from bot.sandbox.platform import Platform
from storage.db import INLINE, create_engine, create_sessionmaker
from tests.conftest import Harness, make_config


async def _thread_of_statements(url: str, **options: Any) -> tuple[int, bool]:
    """(the thread that ran a statement, whether it ran inside the transaction)."""
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            conn = await session.connection(execution_options=options)
            raw = (await conn.get_raw_connection()).driver_connection
            raw._conn.create_function("thread_id", 0, threading.get_ident)
            thread = (await conn.execute(text("SELECT thread_id()"))).scalar_one()
            return thread, raw._conn.in_transaction
    finally:
        await engine.dispose()


async def test_inline_transactions_run_on_the_loop_and_others_in_the_thread(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/inline.db"
    loop_thread = threading.get_ident()
    assert await _thread_of_statements(url, **INLINE) == (loop_thread, True)
    thread, in_transaction = await _thread_of_statements(url)
    assert thread != loop_thread and in_transaction


@pytest.fixture
async def sqlite_harness(tmp_path: Path, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    async with Harness(make_config(f"sqlite+aiosqlite:///{tmp_path}/distbot.db"), platform, wechat_server) as h:
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
        assert time.monotonic() - started < 2  # the loop was not held up (the busy timeout is 10 s)
        assert not reply.done()  # the batch waits for the write lock...
        assert h.http is not None
        for _ in range(3):  # ...and the loop goes on serving meanwhile
            async with h.http.get(h.url + "/healthz") as resp:
                assert resp.status == 200
        other.execute("COMMIT")
        assert "分销员助手" in await asyncio.wait_for(reply, 5)
    finally:
        other.close()
