"""The jobs (CONTRACT §4.8) through HTTP, on both databases: GET /api/jobs, POST
/api/jobs/{name}/run, every run recorded (job_runs, metrics), catching up after downtime, no two
runs of a job at once in a process; and on PostgreSQL, two real `distbot serve` processes of
which one leads, and the other takes over when the leader is killed."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import insert, text

from kit.feature import Feature
from app.features import FEATURES
from kit.leader import lead
from kit.scheduler import JOBS
from sandbox.platform import Platform
from storage.db import create_engine
from storage.migrate import upgrade
from storage.models import JobRun
from tests.conftest import ADMIN_TOKEN, Harness, make_config
from tests.eventually import eventually
from tests.serve_support import Served
from tests.test_config import live

CONTRACT_JOBS = {"unfreeze", "ranks", "contests", "weekly-report", "sla", "payouts"}
RFC3339_CHINA = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$")


class FakeJobs:
    """A feature of test jobs, and what they did."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.active = self.most_active = 0
        self.feature = f = Feature("test-jobs")

        # Cron jobs that never ran: the scheduler leaves them be until their time (04:00).
        @f.job("test-fail", "cron", hour=4)
        async def fail(app: web.Application) -> None:
            raise RuntimeError("boom for 13812345678")

        @f.job("test-slow", "cron", hour=4)
        async def slow(app: web.Application) -> None:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            await asyncio.sleep(0.3)
            self.active -= 1
            self.calls["test-slow"] += 1

        for name, trigger, schedule in (("test-weekly", "cron", {"day_of_week": "mon", "hour": 9}),
                                        ("test-daily", "cron", {"hour": 2}),
                                        ("test-never-run", "cron", {"hour": 3}),
                                        ("test-hourly", "interval", {"hours": 1})):
            f.job(name, trigger, **schedule)(self._counting(name))
        if not any(j.id == "weekly-report" for feature in FEATURES for j in feature.jobs):
            # Until the weekly report's feature is in the list, a stand-in gives the name.
            f.job("weekly-report", "cron", day_of_week="mon", hour=9)(self._counting("weekly-report"))

    def _counting(self, name: str) -> Any:
        async def run(app: web.Application) -> None:
            self.calls[name] += 1
        return run


@pytest.fixture
def fake() -> FakeJobs:
    return FakeJobs()


async def start(db_url: str, platform: Platform, wechat_server: TestServer, fake: FakeJobs,
                workers: bool) -> Harness:
    return await Harness(make_config(db_url), platform, wechat_server, workers=workers,
                         features=(*FEATURES, fake.feature)).start()


@pytest.fixture
async def idle(db_url: str, platform: Platform, wechat_server: TestServer, fake: FakeJobs) -> Any:
    """The app without the scheduler: jobs run only when asked."""
    h = await start(db_url, platform, wechat_server, fake, workers=False)
    yield h
    await h.close()


async def jobs(h: Harness) -> dict[str, dict[str, Any]]:
    status, body = await h.api("GET", "/jobs")
    assert status == 200, body
    return {j["name"]: j for j in body["jobs"]}


async def until_runs(h: Harness, name: str, runs: int) -> dict[str, Any]:
    async def ran() -> dict[str, Any] | None:
        job = (await jobs(h))[name]
        return job if job["runs"] >= runs else None
    return await eventually(ran, what=f"{name} finishes {runs} run(s)")


async def run_job(h: Harness, name: str) -> Any:
    """Run the job `name` once in the test's own task, its result (what POST /api/jobs/{name}/run
    starts in the background, without waiting for it); with the clock moved first, a job that
    acts on time sees what it would see then."""
    return await h.app[JOBS].by_name[name].run(h.app)


async def test_the_contract_jobs_are_listed_with_their_next_run(db_url: str, platform: Platform,
                                                              wechat_server: TestServer, fake: FakeJobs) -> None:
    h = await start(db_url, platform, wechat_server, fake, workers=True)
    try:
        async def leading() -> dict[str, Any] | None:
            status, body = await h.api("GET", "/jobs")
            assert status == 200
            return body if body["leader"] is True else None
        body = await eventually(leading, what="the one process leads as soon as its scheduler is up")
        listed = {j["name"]: j for j in body["jobs"]}
        assert CONTRACT_JOBS | {"prune-processed-messages"} <= set(listed)
        for job in listed.values():
            assert RFC3339_CHINA.match(job["next_run_at"]), job
            assert job["last_run_at"] is None or RFC3339_CHINA.match(job["last_run_at"]), job
        assert listed["ranks"]["next_run_at"].endswith("T02:00:00+08:00")
        assert listed["ranks"]["schedule"] == "cron[hour='2']"
        assert listed["ranks"]["last_run_at"] is None and listed["ranks"]["last_status"] is None  # never ran
        assert datetime.fromisoformat(listed["weekly-report"]["next_run_at"]).strftime("%a %H:%M") == "Mon 09:00"
        sla = datetime.fromisoformat(listed["sla"]["next_run_at"])
        assert sla.second == 0 and sla - datetime.now(UTC) <= timedelta(minutes=1)  # on the minute
        assert datetime.fromisoformat(listed["unfreeze"]["next_run_at"]) - datetime.now(UTC) <= timedelta(seconds=3)
    finally:
        await h.close()


async def test_a_job_runs_now_on_request_and_its_run_is_recorded(idle: Harness) -> None:
    before = (await jobs(idle))["unfreeze"]
    assert before["last_run_at"] is None and before["runs"] == 0 and before["last_status"] is None
    status, body = await idle.api("POST", "/jobs/unfreeze/run")
    assert (status, body) == (202, {"name": "unfreeze", "status": "started"})
    job = await until_runs(idle, "unfreeze", 1)
    assert job["last_status"] == "ok" and job["last_error"] is None and job["running_since"] is None
    assert RFC3339_CHINA.match(job["last_run_at"]) and isinstance(job["last_duration_ms"], int)
    assert (await jobs(idle))["prune-processed-messages"]["runs"] == 0  # nothing scheduled without workers
    assert (await idle.api("GET", "/jobs"))[1]["leader"] is False
    metrics = await (await idle.http.get(idle.url + "/metrics")).text()  # type: ignore[union-attr]
    assert 'distbot_job_runs_total{job="unfreeze",status="ok"} 1.0' in metrics
    assert 'distbot_job_seconds_count{job="unfreeze"} 1.0' in metrics


async def test_an_unknown_job_is_404_and_the_token_is_required(idle: Harness) -> None:
    status, body = await idle.api("POST", "/jobs/no-such-job/run")
    assert status == 404 and body["error"] == "not_found" and "no-such-job" in body["message"]
    assert (await idle.api("GET", "/jobs", token=None))[0] == 401
    assert (await idle.api("POST", "/jobs/unfreeze/run", token="wrong"))[0] == 401
    assert (await jobs(idle))["unfreeze"]["runs"] == 0


async def test_a_failing_job_is_recorded_as_an_error_and_counted(idle: Harness) -> None:
    assert (await idle.api("POST", "/jobs/test-fail/run"))[0] == 202
    job = await until_runs(idle, "test-fail", 1)
    assert job["last_status"] == "error"
    assert job["last_error"] == "RuntimeError: boom for 138****5678"  # phone numbers masked, as in logs
    metrics = await (await idle.http.get(idle.url + "/metrics")).text()  # type: ignore[union-attr]
    assert 'distbot_job_runs_total{job="test-fail",status="error"} 1.0' in metrics
    # The next run tries again.
    assert (await idle.api("POST", "/jobs/test-fail/run"))[0] == 202
    assert (await until_runs(idle, "test-fail", 2))["last_status"] == "error"


async def test_two_requests_for_one_job_never_run_it_twice_at_once(idle: Harness, fake: FakeJobs) -> None:
    answers = await asyncio.gather(*(idle.api("POST", "/jobs/test-slow/run") for _ in range(2)))
    assert [status for status, _ in answers] == [202, 202]
    await until_runs(idle, "test-slow", 2)
    assert fake.calls["test-slow"] == 2 and fake.most_active == 1


async def test_a_job_that_missed_its_time_while_down_runs_at_start(db_url: str, platform: Platform,
                                                                       wechat_server: TestServer,
                                                                       fake: FakeJobs) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # the API's times are to the second
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:  # the state the process left when it went down
            await conn.execute(insert(JobRun), [
                # last ran 8 days ago: a Monday 09:00 has passed since
                {"name": "test-weekly", "last_run_at": now - timedelta(days=8), "last_status": "ok", "runs": 1},
                # ran after its last fire time (02:00): nothing missed
                {"name": "test-daily", "last_run_at": now - timedelta(seconds=1), "last_status": "ok", "runs": 1},
                # an hourly job last run two hours ago: missed too
                {"name": "test-hourly", "last_run_at": now - timedelta(hours=2), "last_status": "ok", "runs": 1},
            ])
    finally:
        await engine.dispose()
    h = await start(db_url, platform, wechat_server, fake, workers=True)
    try:
        job = await until_runs(h, "test-weekly", 2)
        assert job["last_status"] == "ok" and datetime.fromisoformat(job["last_run_at"]) >= now
        await until_runs(h, "test-hourly", 2)
        # Once each; not the job that missed nothing, nor the one that never ran.
        assert fake.calls == {"test-weekly": 1, "test-hourly": 1}
        listed = await jobs(h)
        assert listed["test-daily"]["runs"] == 1 and listed["test-never-run"]["runs"] == 0
    finally:
        await h.close()


# ---- two processes on PostgreSQL ------------------------------------------------------------------
async def state(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/api/jobs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 200
        return await resp.json()


def job(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(j for j in body["jobs"] if j["name"] == name)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_one_process_leads_and_another_takes_over_when_it_is_killed(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    await upgrade(engine)  # here, once, rather than in both processes as they start
    config = tmp_path / "config.toml"
    # live mode, WeChat unreachable: no demo pack, no menu push, nothing to send
    config.write_text(f'[database]\nurl = "{db_url}"\n[admin]\ntoken = "{ADMIN_TOKEN}"\n'
                      + live(api_base_url="http://127.0.0.1:1/cgi-bin/"), encoding="utf-8")
    procs = [Served(config, tmp_path), Served(config, tmp_path)]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        async with aiohttp.ClientSession() as http:
            async def leaders() -> list[bool] | None:
                found = [(await state(http, p.url))["leader"] for p in procs]
                return found if True in found else None
            found = await eventually(leaders, what="one of the processes leads")
            assert found.count(True) == 1, found
            leader, survivor = procs if found[0] else procs[::-1]
            url = survivor.url
            # The daily ranks job last ran two days ago, as if no process had led at 02:00 since.
            # The leader's scheduler looked at that as it started, so it leaves it to 02:00.
            async with engine.begin() as conn:
                await conn.execute(insert(JobRun).values(name="ranks", last_run_at=datetime.now(UTC) - timedelta(days=2),
                                                         last_status="ok", runs=1))
            killed_at = datetime.now(UTC).replace(microsecond=0)
            await leader.kill()  # kill -9: no clean-up, its database session just ends
            async def took_over() -> dict[str, Any] | None:
                body = await state(http, url)
                return body if body["leader"] and job(body, "ranks")["runs"] == 2 else None
            body = await eventually(took_over, 60, what="the survivor leads and catches up with the missed run")
            ranks = job(body, "ranks")
            assert ranks["runs"] == 2 and ranks["last_status"] == "ok", ranks
            assert datetime.fromisoformat(ranks["last_run_at"]) >= killed_at
    finally:
        await asyncio.gather(*(p.stop() for p in procs))
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_one_contender_leads_and_a_broken_leader_connection_steps_down(db_url: str) -> None:
    engine = create_engine(db_url)
    led: list[str] = []

    def work(name: str) -> Any:
        async def run() -> None:
            led.append(name)
            await asyncio.Event().wait()
        return run

    async def until(count: int) -> None:
        await eventually(lambda: len(led) >= count, what=f"{count} leaders")

    contenders = {name: asyncio.create_task(lead(engine, work(name), poll=0.1, heartbeat=0.1)) for name in "ab"}
    try:
        await until(1)
        await asyncio.sleep(0.3)
        assert len(led) == 1  # the other keeps trying, in vain
        # The server ends the leader's session: it notices at its next heartbeat and steps down;
        # someone leads again.
        async with engine.connect() as conn:
            ended = await conn.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"))
        assert ended == 1
        await until(2)
        # The leader stops (its process ends): the other takes over.
        leader = contenders.pop(led[-1])
        leader.cancel()
        await asyncio.gather(leader, return_exceptions=True)
        await until(3)
        assert led[-1] in contenders
    finally:
        for task in contenders.values():
            task.cancel()
        await asyncio.gather(*contenders.values(), return_exceptions=True)
        await engine.dispose()
