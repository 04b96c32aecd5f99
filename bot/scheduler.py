"""Periodic jobs on APScheduler. Jobs are plain async functions with stable ids, safe to run twice.

With several processes on PostgreSQL, only the holder of an advisory lock runs the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text

from bot.typedefs import ENGINE

log = logging.getLogger(__name__)
_LEADER_LOCK = 0x64697375
LEADER_RETRY_SECONDS = 30


@dataclass(frozen=True)
class Job:
    id: str
    run: Callable[[web.Application], Awaitable[Any]]
    trigger: str  # "interval" or "cron"
    args: tuple[tuple[str, Any], ...]  # trigger arguments, e.g. (("minutes", 5),)


async def run_scheduler(app: web.Application, jobs: list[Job]) -> None:
    """Wait for leadership (PostgreSQL) then run the jobs until cancelled."""
    engine = app[ENGINE]
    conn = None
    try:
        if engine.dialect.name == "postgresql":
            conn = await engine.connect()
            while not await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LEADER_LOCK}):
                await conn.commit()
                await asyncio.sleep(LEADER_RETRY_SECONDS)
            await conn.commit()
        scheduler = AsyncIOScheduler(timezone="Asia/Shanghai")
        for j in jobs:
            scheduler.add_job(_guarded(j, app), j.trigger, id=j.id, replace_existing=True,
                              coalesce=True, max_instances=1, misfire_grace_time=None, **dict(j.args))
        scheduler.start()
        try:
            await asyncio.Event().wait()
        finally:
            scheduler.shutdown(wait=False)
    finally:
        if conn is not None:
            await conn.close()


def _guarded(j: Job, app: web.Application) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await j.run(app)
        except Exception:
            log.exception("job failed", extra={"job": j.id})
    return run
