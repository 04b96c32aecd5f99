"""Periodic jobs: plain async functions of the app with stable names, safe to run twice.

A feature declares one with `@feature.job(name, trigger, **trigger_args)` (kit.feature), in
Asia/Shanghai time:

    @feature.job("weekly-report", "cron", day_of_week="mon", hour=9)
    async def weekly_report(app: web.Application) -> None: ...

    @feature.job("unfreeze", "interval", minutes=1)
    async def unfreeze(app: web.Application) -> None: ...

The app holds every job in one `Jobs` (app[JOBS]), in every process, workers or not: it runs a job
now in the background (a tick of the schedule, or POST /api/jobs/{name}/run) and records each run
in `job_runs`, in the metrics and in one log line. Only the leader (kit.leader) runs the schedule;
when it starts, a job that missed a fire time since its last recorded run (no process led then,
e.g. the weekly report due Monday 09:00 while the process was down) runs at once. Interval jobs
fire on a fixed grid (every minute on the minute), so every process knows their next run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kit.leader import lead
from kit.logs import mask_phones
from kit.app_keys import CLOCK, CONFIG, ENGINE, METRICS, READER, WRITER
from domain.alerts import JobStatus
from domain.config import Config
from domain.formats import CHINA
from domain.jobs import JobRef
from storage.db import dialect_insert
from storage.models import JobRun
from storage.reader import Reader

log = logging.getLogger(__name__)
# Interval jobs fire on a grid counted from here (every minute on the minute, every hour on the
# hour), so that every process computes the same next_run_at as the leader's scheduler.
GRID_START = datetime(2000, 1, 3, tzinfo=CHINA)
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Job:
    id: str
    run: Callable[[web.Application], Awaitable[Any]]
    trigger: str  # "interval" or "cron"
    args: tuple[tuple[str, Any], ...]  # the trigger's arguments, e.g. (("minutes", 5),)
    # Whether the schedule runs it under this config (it always runs when asked for through the API).
    scheduled_if: Callable[[Config], bool] | None = None
    # The trigger's arguments taken from the config instead (the backup's cron line, [backup] schedule).
    trigger_from: Callable[[Config], dict[str, Any]] | None = None

    def scheduled(self, config: Config) -> bool:
        return self.scheduled_if is None or self.scheduled_if(config)

    def under(self, config: Config) -> Job:
        """This job with its trigger's arguments from `config` when they come from there."""
        if self.trigger_from is None:
            return self
        return replace(self, args=tuple(self.trigger_from(config).items()), trigger_from=None)

    def __post_init__(self) -> None:
        self.make_trigger()  # a bad trigger stops start-up, not the first run

    def make_trigger(self) -> BaseTrigger:
        """The APScheduler trigger, in Asia/Shanghai time."""
        args = dict(self.args)
        if self.trigger == "cron":
            return CronTrigger(timezone=CHINA, **args)
        if self.trigger == "interval":
            return IntervalTrigger(timezone=CHINA, **{"start_date": GRID_START, **args})
        raise ValueError(f"job {self.id!r}: trigger {self.trigger!r} is neither 'cron' nor 'interval'")

    def next_run_at(self, now: datetime) -> datetime | None:
        """The next time the schedule runs it, as the leader's scheduler computes it."""
        return self.make_trigger().get_next_fire_time(None, now)

    def missed(self, last_run_at: datetime | None, now: datetime) -> bool:
        """Whether one of its fire times passed since its last recorded run (no process led then:
        the leader runs it at once as it starts). A job that never ran waits for its first time."""
        due = self.due_after(last_run_at)
        return due is not None and due <= now

    def due_after(self, last_run_at: datetime | None) -> datetime | None:
        """Its first fire time after its last recorded run (None: it never ran, or never fires again)."""
        if last_run_at is None:
            return None
        return self.make_trigger().get_next_fire_time(None, last_run_at + timedelta(microseconds=1))

    def overdue_seconds(self, last_run_at: datetime | None, now: datetime) -> float:
        """How long past that fire time it is without a run since (0: on time, or it never ran)."""
        due = self.due_after(last_run_at)
        return 0.0 if due is None or due >= now else (now - due).total_seconds()


class Jobs:
    """The jobs of the app, by name, and their runs in this process: one run of a job at a time."""

    def __init__(self, app: web.Application, jobs: Iterable[Job]):
        self.app = app
        self.by_name = {j.id: j.under(app[CONFIG]) for j in jobs}
        self.leading = False  # this process runs the schedule (set by schedule())
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __iter__(self) -> Iterator[Job]:
        return iter(self.by_name.values())

    def start(self, handle: Job | JobRef, cause: str, *, wait: bool = False,
              run: Callable[[web.Application], Awaitable[Any]] | None = None) -> bool:
        """Run the job now, in the background: `handle` is the `Job` a feature declared or a
        `JobRef` (domain.jobs), never its name as a string. A run already under way in this process
        makes this one wait for it (`wait`, a request of an admin) or skip (a tick of the schedule;
        the next tick comes). `run` does this run's work instead of the job's own (the job asked
        for with arguments: the team bonus of a given month), recorded as a run of the job.
        Whether a run was started or queued."""
        name = handle.id
        job = self.by_name[name] if run is None else dataclasses.replace(self.by_name[name], run=run)
        lock = self._locks.setdefault(name, asyncio.Lock())
        if self._closed:
            return False
        if lock.locked() and not wait:
            log.info("job %s is still running: this %s run is skipped", name, cause, extra={"job": name})
            return False
        task = asyncio.get_running_loop().create_task(self._run(job, lock, cause), name=f"job {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, job: Job, lock: asyncio.Lock, cause: str) -> None:
        async with lock:
            writer, metrics = self.app[WRITER], self.app[METRICS]
            started = self.app[CLOCK].now()
            try:
                await writer.run(lambda session: _mark_running(session, job.id, started))
            except Exception:
                log.exception("job %s: cannot record its start; not run", job.id, extra={"job": job.id})
                return
            clock = time.monotonic()
            failure: Exception | None = None
            result: Any = None
            try:
                result = await job.run(self.app)
            except Exception as e:  # a job's failure is recorded and logged; the next run tries again
                failure = e
            seconds = time.monotonic() - clock
            status = "ok" if failure is None else "error"
            error = None if failure is None else mask_phones(f"{type(failure).__name__}: {failure}")[:MAX_ERROR_CHARS]
            metrics.child(metrics.job_runs, job.id, status).inc()
            metrics.child(metrics.job_seconds, job.id).observe(seconds)
            # A run that found nothing to do (a job returns what it did) is only worth a debug line:
            # the minute jobs would fill the log.
            level = logging.ERROR if failure else logging.INFO if result or cause != "schedule" else logging.DEBUG
            log.log(level, "job %s: %s", job.id, status,
                    exc_info=failure, extra={"job": job.id, "status": status, "cause": cause,
                                             "duration_ms": round(seconds * 1000)})
            try:
                await writer.run(lambda session: _record(session, job.id, started, status, error,
                                                         round(seconds * 1000)))
            except Exception:
                log.exception("job %s: cannot record its run", job.id, extra={"job": job.id})

    async def close(self) -> None:
        """Stop the runs under way (a job is safe to run again) and wait for them to end."""
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


JOBS = web.AppKey("jobs", Jobs)


# ---- job_runs ------------------------------------------------------------------------------------
def _mark_running(session: Session, name: str, started: datetime) -> None:
    stmt = dialect_insert(session, JobRun).values(name=name, running_since=started, runs=0)
    session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"running_since": started}))


def _record(session: Session, name: str, started: datetime, status: str, error: str | None,
            duration_ms: int) -> None:
    session.execute(update(JobRun).where(JobRun.name == name).values(
        last_run_at=started, last_status=status, last_error=error, last_duration_ms=duration_ms,
        running_since=None, runs=JobRun.runs + 1))


async def last_runs(reader: Reader) -> dict[str, JobRun]:
    """The recorded runs of every job that ran, by name (shared by every process)."""
    return await reader.run(runs_by_name)


def runs_by_name(session: Session) -> dict[str, JobRun]:
    return {r.name: r for r in session.scalars(select(JobRun))}


def job_statuses(jobs: Iterable[Job], config: Config, runs: dict[str, JobRun], now: datetime) -> list[JobStatus]:
    """Each job the schedule runs under `config`, as its recorded runs show it (domain.alerts:
    the /metrics gauges and the built-in alerts)."""
    found = []
    for job in (j for j in jobs if j.scheduled(config)):
        run = runs.get(job.id)
        last_run_at = run.last_run_at if run is not None else None
        error = (run.last_error or "error") if run is not None and run.last_status == "error" else None
        found.append(JobStatus(job.id, job.overdue_seconds(last_run_at, now), last_run_at is not None, error))
    return found


# ---- the schedule --------------------------------------------------------------------------------
async def run_scheduler(app: web.Application) -> None:
    """Run the schedule whenever this process leads, until cancelled."""
    await lead(app[ENGINE], lambda: schedule(app[JOBS]))


async def schedule(jobs: Jobs) -> None:
    """The leader's APScheduler, until cancelled. It only keeps time: each fire starts a run
    through `jobs` (the debug executor calls it on the loop), which owns the runs."""
    now = jobs.app[CLOCK].now().astimezone(CHINA)
    last = await last_runs(jobs.app[READER])
    scheduler = AsyncIOScheduler(timezone=CHINA, executors={"default": DebugExecutor()})
    for job in (j for j in jobs if j.scheduled(jobs.app[CONFIG])):
        last_run_at = last[job.id].last_run_at if job.id in last else None
        first: dict[str, datetime] = {}
        if job.missed(last_run_at, now):
            first["next_run_time"] = now
            log.info("job %s missed a run since %s: it runs now", job.id, last_run_at, extra={"job": job.id})
        scheduler.add_job(jobs.start, job.make_trigger(), args=(job, "schedule"), id=job.id, coalesce=True,
                          misfire_grace_time=None, **first)
    scheduler.start()
    jobs.leading = True
    try:
        await asyncio.Event().wait()
    finally:
        jobs.leading = False
        scheduler.shutdown(wait=False)
