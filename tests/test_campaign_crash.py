"""A campaign sent by real `distbot serve` processes: each recipient gets it once when the sender
is killed with kill -9 between two sends and started again, and when two processes send one
campaign together (PostgreSQL); a mass send killed between WeChat's taking it and distbot's record
of it ends done with WeChat's report, which reached the restarted process first."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sandbox.mass_send import finish_event, month_of
from sandbox.platform import Platform, PlatformError
from storage.db import create_engine
from storage.migrate import upgrade
from storage.tables import DISTRIBUTORS
from tests.conftest import ADMIN_TOKEN
from tests.eventually import eventually
from tests.serve_support import Served
from tests.test_campaign_mass import accepted_job

RECIPIENTS = 40
TEXT = "年终大促今晚八点开始"


async def seed(db_url: str, platform: Platform, n: int) -> list[str]:
    """n active distributors, each a subscribed follower who talked to the account just now."""
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        now = datetime.now(UTC)
        openids = [f"oCrash{i:05d}" for i in range(n)]
        async with engine.begin() as conn:
            await conn.execute(DISTRIBUTORS.insert(), [
                {"code": f"C{i:05d}", "openid": o, "phone": f"139{i:08d}", "name": "测试", "rank": "junior",
                 "status": "active", "registered_at": now, "weekly_report": True} for i, o in enumerate(openids)])
    finally:
        await engine.dispose()
    for o in openids:
        user = platform.user(o)
        user.subscribed, user.last_interaction = True, platform.clock()
    return openids


def config(tmp_path: Path, db_url: str, wechat: TestServer, rate: int) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(f"""
[database]
url = "{db_url}"
[admin]
token = "{ADMIN_TOKEN}"
[wechat]
api_base_url = "{wechat.make_url('/cgi-bin/')}"
template_id = "tmpl-notice"
[outbox]
rate_per_second = {rate}
batch_size = 5
lease_seconds = 5
""", encoding="utf-8")
    return p


def deliveries(platform: Platform) -> Counter[str]:
    return Counter(body["touser"] for name, body in platform.calls
                   if name == "message/custom/send" and body["text"]["content"] == TEXT)


def busy_until_killed(platform: Platform) -> None:
    """Every customer-service send answers -1 (system busy) and changes nothing, until the test
    deletes this instance attribute again."""
    def busy(body: dict[str, Any]) -> None:
        raise PlatformError(-1)
    platform.custom_send = busy  # type: ignore[method-assign]


async def wait_done(served: Served, cid: int, timeout: float = 60) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status, body = await served.api("GET", f"/campaigns/{cid}")
        return body if status == 200 and body["status"] == "done" else None
    return await eventually(done, timeout, what=f"campaign {cid} is done")


async def test_kill_9_between_sends_and_a_restart_send_each_recipient_once(
        db_url: str, tmp_path: Path, platform: Platform, wechat_server: TestServer) -> None:
    openids = await seed(db_url, platform, RECIPIENTS)
    cfg = config(tmp_path, db_url, wechat_server, rate=25)
    first = await Served(cfg, tmp_path).start()
    try:
        status, created = await first.api("POST", "/campaigns", json={"title": "年终大促", "kind": "notice", "text": TEXT})
        assert status == 201 and created["total"] == RECIPIENTS
        while sum(deliveries(platform).values()) < RECIPIENTS // 3:
            await asyncio.sleep(0.01)
        # Kill between two sends, after one has landed and its mark is committed (a kill between a
        # send and its mark may repeat that one: WeChat's customer-service call has no idempotency
        # key; test_outbox covers the lease). The mark is read back, not assumed to take less than
        # some time, and WeChat answers "system busy" from then until the kill, so that no send can
        # land between the check and the kill however loaded the machine is.
        for _ in range(2000):
            seen = sum(deliveries(platform).values())
            status, progress = await first.api("GET", f"/campaigns/{created['id']}")
            if status == 200 and progress["sent"] == seen == sum(deliveries(platform).values()):
                busy_until_killed(platform)
                break
            await asyncio.sleep(0.002)
        await first.kill()
    finally:
        await first.kill()
        vars(platform).pop("custom_send", None)
    at_kill = deliveries(platform)
    assert 0 < sum(at_kill.values()) < RECIPIENTS
    second = await Served(cfg, tmp_path).start()
    try:
        done = await wait_done(second, created["id"])
    finally:
        await second.stop()
    got = deliveries(platform)
    assert set(got) == set(openids) and set(got.values()) == {1}, got.most_common(3)
    assert (done["total"], done["sent"], done["failed"]) == (RECIPIENTS, RECIPIENTS, 0)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # several processes share PostgreSQL only
async def test_two_processes_send_one_campaign_each_recipient_once(
        db_url: str, tmp_path: Path, platform: Platform, wechat_server: TestServer) -> None:
    openids = await seed(db_url, platform, RECIPIENTS * 2)
    cfg = config(tmp_path, db_url, wechat_server, rate=10)  # 8 s of sending: time enough for both to claim under load
    a, b = Served(cfg, tmp_path), Served(cfg, tmp_path)
    try:
        await asyncio.gather(a.start(), b.start())  # in the try: one that failed to start leaves no other behind
        status, created = await b.api("POST", "/campaigns", json={"title": "年终大促", "kind": "notice", "text": TEXT})
        assert status == 201
        done = await wait_done(a, created["id"])
        sent_by = []
        for served in (a, b):
            async with aiohttp.ClientSession() as http, http.get(served.url + "/metrics") as resp:
                metrics = await resp.text()
            line = next((x for x in metrics.splitlines()
                         if x.startswith('distbot_campaign_sends_total{channel="custom",result="sent"}')), "")
            sent_by.append(float(line.split()[-1]) if line else 0.0)
    finally:
        await asyncio.gather(a.stop(), b.stop())
    got = deliveries(platform)
    assert set(got) == set(openids) and set(got.values()) == {1}
    assert done["sent"] == RECIPIENTS * 2
    assert all(n > 0 for n in sent_by) and sum(sent_by) == RECIPIENTS * 2, sent_by  # both processes sent


async def test_a_mass_send_killed_before_its_record_ends_done_with_the_report_that_came_first(
        db_url: str, tmp_path: Path, platform: Platform, wechat_server: TestServer) -> None:
    openids = await seed(db_url, platform, 3)
    platform.mass_received[(openids[1], month_of(platform.clock()))] = 4  # over their 4 a month: skipped
    platform.mass_finish_delay = 3600  # WeChat's report goes to the restarted process, below
    answer = platform.held_answers["message/mass/send"] = asyncio.Event()
    cfg = config(tmp_path, db_url, wechat_server, rate=10)
    first = await Served(cfg, tmp_path).start()
    try:
        status, created = await first.api("POST", "/campaigns", json={
            "title": "年终大促", "kind": "notice", "text": TEXT, "channel": "mass"})
        assert status == 201
        job = await accepted_job(platform)
        await first.kill()  # WeChat took the call; its answer (the msg_id) never reached the process
    finally:
        await first.kill()
    platform.clock = lambda: time.time() + 61  # the repeat comes after WeChat's minute (45065, not 45066)
    second = await Served(cfg, tmp_path).start()
    try:
        platform.webhook_url = second.url + "/wechat"
        async with aiohttp.ClientSession() as http:  # the report, before the repeat's answer names the send
            assert await platform.post(http, finish_event(platform, job)) is not None
        answer.set()
        done = await wait_done(second, created["id"])
    finally:
        await second.stop()
    assert (done["total"], done["sent"], done["failed"], done["skipped"], done["pending"]) == (3, 2, 0, 1, 0)
    assert list(platform.mass_jobs) == [job["msg_id"]]  # the repeat was refused (45065), not sent again
    for openid in openids:
        assert len([m for m in platform.users[openid].timeline if m.get("via") == "mass"]) == (openid != openids[1])
