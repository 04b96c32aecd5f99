"""Which process leads (runs the scheduled jobs). SQLite: the one process. PostgreSQL: the holder
of a session advisory lock, taken on a connection kept for it alone; the other processes try
again every POLL_SECONDS, so when the leader dies (its session ends and the lock with it) one
of them takes over within that time. The leader checks its connection every HEARTBEAT_SECONDS
and steps down when it broke, then tries again like the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)
LOCK_KEY = 0x64697375
POLL_SECONDS = 3.0  # one advisory-lock try per process: jobs resume within 3 s of a leader's death
HEARTBEAT_SECONDS = 30.0
# The server ends the leader's session after this long without a word from it (a host that
# vanished without closing its sockets), which frees the lock. The heartbeat keeps it alive.
IDLE_SESSION_TIMEOUT = "75s"


async def lead(engine: AsyncEngine, work: Callable[[], Awaitable[None]], *, poll: float = POLL_SECONDS,
               heartbeat: float = HEARTBEAT_SECONDS) -> None:
    """Run `work()` (which runs until cancelled) whenever this process leads, until cancelled.
    When `work` fails or leadership is lost, it is cancelled and tried again `poll` seconds later."""
    shared = engine.dialect.name == "postgresql"
    while True:
        conn = await _acquire(engine, poll) if shared else None
        try:
            log.info("this process leads: it runs the scheduled jobs")
            await _hold(conn, work, heartbeat)
        except Exception:
            log.exception("this process stops leading; it tries again in %s s", poll)
        finally:
            if conn is not None:
                await _release(conn)
        await asyncio.sleep(poll)


async def _acquire(engine: AsyncEngine, poll: float) -> AsyncConnection:
    """A connection that holds the lock, once it is free."""
    while True:
        try:
            conn = await engine.connect()
            try:
                got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY})
                if got and conn.dialect.server_version_info >= (14,):
                    await conn.execute(text(f"SET idle_session_timeout = '{IDLE_SESSION_TIMEOUT}'"))
                await conn.commit()  # the lock is the session's; no transaction stays open
            except BaseException:
                await _release(conn)
                raise
            if got:
                return conn
            await conn.close()  # back to the pool: it holds no lock
        except Exception:  # the database is unreachable for now: keep trying
            log.warning("cannot try for leadership; again in %s s", poll, exc_info=True)
        await asyncio.sleep(poll)


async def _hold(conn: AsyncConnection | None, work: Callable[[], Awaitable[None]], heartbeat: float) -> None:
    """Run `work` while the connection that holds the lock answers."""
    task = asyncio.ensure_future(work())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=None if conn is None else heartbeat)
            if done:
                task.result()  # its failure, if any
                return
            assert conn is not None
            await asyncio.wait_for(_ping(conn), heartbeat)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _ping(conn: AsyncConnection) -> None:
    await conn.scalar(text("SELECT 1"))
    await conn.commit()


async def _release(conn: AsyncConnection) -> None:
    """Close the connection itself, never back to the pool: ending the session frees the lock."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.invalidate(), 5)
    with contextlib.suppress(Exception):
        await conn.close()
