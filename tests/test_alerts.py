"""The built-in alerts (CONTRACT §9) through the real interfaces, on both databases: an outbox that
backs up raises one 告警 (a template message to admin.notify_openids, one alert.raised webhook),
is not told again within repeat_s (nor after a restart), is told again after it, and one 恢复
(alert.resolved) follows when it clears; /metrics shows the figures the rules in
deploy/prometheus/alerts.yml watch. The conditions of jobs are checked without a database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select
from sqlalchemy import text as text_sql
from sqlalchemy.exc import DBAPIError

from sandbox.platform import Platform
from domain.alerts import Figures, JobStatus, conditions
from domain.clock import FakeClock
from domain.config_sections import AlertsConfig
from kit.app_keys import READER, SESSIONMAKER, WEBHOOKS
from kit.scheduler import Job, job_statuses
from kit.webhook_sender import signature
from storage.models import JobRun
from storage.tables import ALERTS, OUTBOX, WEBHOOK_DELIVERIES
from tests.conftest import Harness, make_config
from tests.eventually import eventually
from tests.test_jobs import run_job
from tests.test_ops import get, sample
from tests.test_webhooks import SECRET, serving
from wechat.wechat_keys import OUTBOX as OUTBOX_WORKER

STAFF = "oAlertStaff000000000000001"


class Receiver:
    """An endpoint that checks our signature (the Standard Webhooks one also checks the timestamp
    against real time, which this test moves on)."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("X-Distbot-Signature") != signature(SECRET, body):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.accepted.append(json.loads(body))
        return web.Response(status=204)


async def delivered(h: Harness) -> bool:
    async with h.app[SESSIONMAKER]() as session:
        return not (await session.execute(select(WEBHOOK_DELIVERIES.c.id).where(
            WEBHOOK_DELIVERIES.c.status != "sent"))).first()


def said(h: Harness, word: str) -> list[dict[str, Any]]:
    """The template messages staff got whose text has `word`."""
    return [m for m in h.platform.users[STAFF].timeline if m.get("via") == "template" and word in str(m["data"])]


async def stale_message(h: Harness, openid: str, age: timedelta) -> None:
    """A message due `age` ago that no worker sent (none runs: workers=False)."""
    at = h.clock.now() - age
    async with h.app[SESSIONMAKER]() as session:
        await session.execute(OUTBOX.insert().values(key="stale", openid=openid, payload={"type": "text", "content": "迟到"},
                                                     status="pending", attempts=0, next_attempt_at=at, created_at=at))
        await session.commit()


async def test_a_backed_up_outbox_is_told_once_repeated_and_resolved(db_url: str, platform: Platform,
                                                                      wechat_server: TestServer) -> None:
    r = Receiver()
    async with serving(r) as server:
        config = make_config(db_url, admin={"notify_openids": [STAFF]}, alerts={"enabled": True},
                             webhooks=[{"url": str(server.make_url("/hook")), "secret": SECRET,
                                        "events": ["alert.raised", "alert.resolved"]}])
        platform.user(STAFF).subscribed = True  # never wrote to the account: no customer-service quota
        user = platform.user()
        user.subscribed = True
        async with Harness(config, platform, wechat_server, workers=False, clock=FakeClock()) as h:
            h.clock.freeze()
            await stale_message(h, user.openid, timedelta(minutes=6))
            with pytest.raises(DBAPIError):  # counted on the Reader's engine too (SQLite's is its own)
                await h.app[READER].run(lambda s: s.execute(text_sql("SELECT nothing FROM no_such_table")))
            _, _, text = await get(h, "/metrics")
            assert sample(text, "distbot_outbox_oldest_pending_seconds") == 360
            assert sample(text, "distbot_database_up") == 1 and sample(text, "distbot_database_errors_total") == 1

            assert await run_job(h, "alerts") == 1  # raised
            sender = asyncio.create_task(h.app[WEBHOOKS].run())  # else its own backlog is the next alert
            try:
                await eventually(lambda: delivered(h), what="alert.raised delivered and marked")
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            assert r.accepted[0]["type"] == "alert.raised" and r.accepted[0]["data"]["alert"] == "outbox"
            h.clock.move(minutes=30)
            assert await run_job(h, "alerts") == 0  # within repeat_s: nothing
            await h.restart()  # the state is the database's: a new process does not tell again
            assert await run_job(h, "alerts") == 0
            h.clock.move(minutes=31)
            assert await run_job(h, "alerts") == 1  # an hour on: told again, no second webhook
            async with h.app[SESSIONMAKER]() as session:
                [alert] = (await session.execute(select(ALERTS))).all()
            assert (alert.key, alert.sends, alert.resolved_at) == ("outbox", 2, None)

            workers = [asyncio.create_task(h.app[OUTBOX_WORKER].run()), asyncio.create_task(h.app[WEBHOOKS].run())]
            try:
                await h.settled()  # the stale message goes too: the condition clears
                told = said(h, "告警")
                assert len(told) == 2 and "消息发送积压" in str(told[0]["data"]) and "仍未解决" in str(told[1]["data"])
                assert len(r.accepted) == 1

                assert await run_job(h, "alerts") == 1  # resolved
                assert await run_job(h, "alerts") == 0
                await h.settled()
                await eventually(lambda: delivered(h), what="alert.resolved delivered and marked")
                [resolved] = said(h, "恢复")
                assert "告警" not in str(resolved["data"]) and "消息发送积压" in str(resolved["data"])
                assert len(said(h, "告警")) == 2
                assert [e["type"] for e in r.accepted] == ["alert.raised", "alert.resolved"]
                assert r.accepted[1]["data"]["alert"] == "outbox" and r.bad_signatures == 0
                _, _, text = await get(h, "/metrics")
                assert sample(text, "distbot_outbox_oldest_pending_seconds") == 0
                assert sample(text, "distbot_wechat_token_refreshes_total", result="ok") == 1  # this process's sends
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)


def test_jobs_late_or_failed_are_conditions() -> None:
    """A job's lateness counts from its first fire time after its last run; a job that never ran is
    not late; a failed last run is a condition of its own; the limits are [alerts]'."""
    at = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)  # 09:00 in China

    async def nothing(app: Any) -> None: ...
    hourly = Job("hourly", nothing, "interval", (("hours", 1),))
    weekly = Job("weekly", nothing, "cron", (("day_of_week", "mon"), ("hour", 9)))
    off = Job("off", nothing, "interval", (("minutes", 1),), scheduled_if=lambda c: False)
    runs = {"hourly": JobRun(name="hourly", last_run_at=at - timedelta(hours=3), last_status="error",
                             last_error="OperationalError: disk I/O error"),
            "off": JobRun(name="off", last_run_at=at - timedelta(days=9), last_status="ok")}
    statuses = job_statuses([hourly, weekly, off], make_config("sqlite+aiosqlite:///x.db"), runs, at)
    assert statuses == [JobStatus("hourly", 7200.0, True, "OperationalError: disk I/O error"),
                        JobStatus("weekly", 0.0, False, None)]
    quiet = Figures(outbox_oldest_s=300, webhook_oldest_s=900, risk_flags_stale=3, payouts_failed=1)
    found = conditions(quiet, statuses, AlertsConfig(job_late_s=3600))
    assert [c.key for c in found] == ["job-late:hourly", "job-failed:hourly"]
    assert "2 小时" in found[0].text and "disk I/O error" in found[1].text
    assert conditions(quiet, statuses, AlertsConfig(job_late_s=7200)) == found[1:]
    loud = Figures(outbox_oldest_s=301, webhook_oldest_s=901, risk_flags_stale=0, payouts_failed=0)
    assert [c.key for c in conditions(loud, [], AlertsConfig())] == ["outbox", "webhooks"]
