"""The outbox: rows written in a transaction are sent once, across restarts and dead workers, with
back-off on busy answers and the template message outside the 48-hour window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update

from wechat import client as wechat_api
from wechat.outbox import Outbox
from domain.messages import Text
from domain.outbox_rows import enqueue as queue_message
from sandbox.platform import Platform, SimUser
from kit.app_keys import CLOCK, METRICS, READER, SESSIONMAKER, WRITER
from wechat.wechat_keys import WECHAT
from storage.durable_queue import Backoff
from storage.models import OutboxMessage
from tests.conftest import Harness, make_config
from tests.eventually import eventually


@pytest.fixture(autouse=True)
def _quick_busy_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wechat_api, "BUSY", Backoff(0.01, factor=1, tries=3))


@pytest.fixture
async def idle(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    """The app without its outbox worker and scheduler, so rows stay put until a test says."""
    async with Harness(make_config(db_url), platform, wechat_server, reply_deadline=2.0, workers=False) as h:
        yield h


async def follower(h: Harness) -> SimUser:
    user = h.user()
    await h.follow(user)
    return user


async def enqueue(h: Harness, key: str, openid: str, text: str, **kw: Any) -> None:
    await h.app[WRITER].run(lambda session: queue_message(session, key, openid, Text(text),
                                                                           now=h.app[CLOCK].now(), **kw))


async def row(h: Harness, key: str) -> OutboxMessage:
    async with h.app[SESSIONMAKER]() as session:
        r = await session.scalar(select(OutboxMessage).where(OutboxMessage.key == key))
        assert r is not None
        return r


def sends(h: Harness, endpoint: str = "message/custom/send", openid: str | None = None) -> list[dict[str, Any]]:
    return [body for name, body in h.platform.calls if name == endpoint and openid in (None, body.get("touser"))]


async def settle(h: Harness, key: str, timeout: float = 8.0, until: tuple[str, ...] = ("sent", "failed")
                 ) -> OutboxMessage:
    """Wait until the row is sent or failed for good (or in one of the statuses `until`)."""
    async def settled() -> OutboxMessage | None:
        r = await row(h, key)
        return r if r.status in until else None
    return await eventually(settled, timeout, what=f"{key} is {' or '.join(until)}")


async def with_workers(h: Harness) -> None:
    await h.stop()
    h.app_kwargs["workers"] = True
    await h.start()


async def test_a_row_written_before_a_stop_is_sent_once_after_the_start(idle: Harness) -> None:
    h = idle
    user = await follower(h)
    await enqueue(h, "notice:1", user.openid, "您有一笔新佣金")
    assert sends(h) == []  # no worker in this app
    await with_workers(h)
    item = await h.platform.wait_for(user.openid, lambda i: i.get("via") == "custom")
    assert item["content"] == "您有一笔新佣金"
    await h.restart()
    # A later row sent after the restart: the worker has been past the first one, which stays sent.
    await enqueue(h, "notice:2", user.openid, "又一笔新佣金")
    await settle(h, "notice:2")
    assert [b["text"]["content"] for b in sends(h, openid=user.openid)] == ["您有一笔新佣金", "又一笔新佣金"]
    r = await row(h, "notice:1")
    assert (r.status, r.channel, r.attempts) == ("sent", "custom", 1)


async def test_the_same_key_is_enqueued_once(idle: Harness) -> None:
    h = idle
    user = await follower(h)
    await enqueue(h, "campaign:1:" + user.openid, user.openid, "第一次")
    await enqueue(h, "campaign:1:" + user.openid, user.openid, "第二次")
    await with_workers(h)
    await settle(h, "campaign:1:" + user.openid)
    await h.settled()
    assert [b["text"]["content"] for b in sends(h, openid=user.openid)] == ["第一次"]


async def test_a_claim_whose_worker_died_is_recovered_and_sent_once(idle: Harness) -> None:
    h = idle
    user = await follower(h)
    await enqueue(h, "dead", user.openid, "被遗忘的消息")
    await enqueue(h, "busy", user.openid, "别人正在发的消息")
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    async with h.app[SESSIONMAKER]() as session, session.begin():
        await session.execute(update(OutboxMessage).where(OutboxMessage.key == "dead")
                              .values(status="sending", claimed_at=long_ago))
        # A claim inside its lease belongs to a live worker elsewhere: hands off.
        await session.execute(update(OutboxMessage).where(OutboxMessage.key == "busy")
                              .values(status="sending", claimed_at=datetime.now(UTC)))
    await with_workers(h)
    r = await settle(h, "dead")
    assert r.status == "sent"
    await h.settled()  # the worker looked at both claims as it started (recover, then claim)
    assert [b["text"]["content"] for b in sends(h, openid=user.openid)] == ["被遗忘的消息"]
    assert (await row(h, "busy")).status == "sending"


async def test_a_busy_answer_is_retried_within_the_call(harness: Harness) -> None:
    user = await follower(harness)
    harness.platform.fail_next["message/custom/send"] = [-1]
    await enqueue(harness, "busy-once", user.openid, "系统繁忙后送达")
    r = await settle(harness, "busy-once")
    assert (r.status, r.attempts) == ("sent", 1)
    assert len(sends(harness, openid=user.openid)) == 1


async def test_a_busy_platform_is_retried_later_with_back_off(harness: Harness) -> None:
    user = await follower(harness)
    harness.platform.fail_next["message/custom/send"] = [-1, -1, -1]  # more than one call absorbs
    await enqueue(harness, "busy-long", user.openid, "稍后送达")
    async def tried() -> OutboxMessage | None:
        r = await row(harness, "busy-long")
        return r if r.attempts else None
    r = await eventually(tried, 5, what="busy-long is tried")
    assert (r.status, r.errcode) == ("pending", -1)
    assert r.next_attempt_at - datetime.now(UTC) > timedelta(seconds=0.5)  # backed off, not hammering
    r = await settle(harness, "busy-long")
    assert (r.status, r.attempts, r.channel) == ("sent", 2, "custom")
    assert len(sends(harness, openid=user.openid)) == 1


async def test_outside_the_window_the_template_message_is_sent(harness: Harness) -> None:
    user = await follower(harness)
    user.last_interaction = harness.platform.clock() - 49 * 3600
    await enqueue(harness, "late-notice", user.openid, "本月推广之星评选开始\n快来参加")
    r = await settle(harness, "late-notice")
    assert (r.status, r.channel) == ("sent", "template")
    assert sends(harness, openid=user.openid) == []
    [body] = sends(harness, "message/template/send", openid=user.openid)
    assert body["template_id"] == "tmpl-notice"
    assert "本月推广之星评选开始" in str(body["data"])
    item = await harness.platform.wait_for(user.openid, lambda i: i.get("via") == "template")
    assert item["template_id"] == "tmpl-notice"


async def test_the_rows_own_template_data_is_used(harness: Harness) -> None:
    user = await follower(harness)
    user.last_interaction = harness.platform.clock() - 49 * 3600
    data = {"first": {"value": "培训通知"}, "keyword1": {"value": "新人第一课"}}
    await enqueue(harness, "training", user.openid, "培训通知", template=data)
    await settle(harness, "training")
    [body] = sends(harness, "message/template/send", openid=user.openid)
    assert body["data"] == data


async def test_outside_the_window_without_a_template_the_row_is_kept_for_the_next_message(
        db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    # CONTRACT §7 (issue 20): kept for the user's next message, no longer failed on 45015.
    h = Harness(make_config(db_url, wechat={"template_id": ""}), platform, wechat_server)
    await h.start()
    try:
        user = await follower(h)
        user.last_interaction = platform.clock() - 49 * 3600  # WeChat knows better than our record
        await enqueue(h, "no-template", user.openid, "收不到")
        r = await settle(h, "no-template", until=("kept", "sent", "failed"))
        assert (r.status, r.errcode, r.attempts) == ("kept", 45015, 0)
        assert sends(h, "message/template/send") == [] and sends(h) == []
        assert h.http is not None
        async with h.http.get(h.url + "/metrics") as resp:
            metrics = await resp.text()
        assert 'distbot_outbox_outcomes_total{outcome="45015"} 1.0' in metrics
        assert 'distbot_outbox_outcomes_total{outcome="kept"} 1.0' in metrics
        await h.say(user, "在吗")
        r = await settle(h, "no-template")
        assert (r.status, r.channel, r.attempts) == ("sent", "custom", 1)
        assert [b["text"]["content"] for b in sends(h)] == ["收不到"]
    finally:
        await h.close()


async def test_a_user_who_does_not_follow_is_not_retried(harness: Harness) -> None:
    user = await follower(harness)
    user.subscribed = False  # WeChat answers 43004
    await enqueue(harness, "gone", user.openid, "取关了")
    r = await settle(harness, "gone")
    assert (r.status, r.errcode, r.attempts) == ("failed", 43004, 1)
    await asyncio.sleep(1.3)  # longer than the first back-off
    r = await row(harness, "gone")
    assert (r.status, r.attempts) == ("failed", 1)


async def test_two_workers_never_send_a_row_twice(idle: Harness) -> None:
    h = idle
    users = [await follower(h) for _ in range(3)]
    for i in range(24):
        await enqueue(h, f"fanout:{i}", users[i % 3].openid, f"消息{i}")
    # On a loaded machine a follow's welcome can miss WeChat's 5 s and be queued too: count the rows.
    async with h.app[SESSIONMAKER]() as session:
        queued = len((await session.execute(select(OutboxMessage.id))).all())
    assert queued >= 24
    app = h.app
    workers = [Outbox(h.config, app[READER], app[WRITER], app[WECHAT], app[METRICS]) for _ in range(3)]
    results = await asyncio.gather(*(w.drain_once() for w in workers for _ in range(2)))
    # A worker that finds a follower's quota held by another gives that user's rows back for a moment.
    deadline = asyncio.get_running_loop().time() + 5
    while sum(results) < queued and asyncio.get_running_loop().time() < deadline:
        results.append(await workers[0].drain_once())
        await asyncio.sleep(0.05)
    assert sum(results) == queued
    # Each follow allows three customer-service messages, however many workers spend them; the
    # other notices go as template messages (CONTRACT §7).
    custom = [b["text"]["content"] for b in sends(h)]
    for user in users:
        assert len(sends(h, openid=user.openid)) == 3
    texts = sorted(t for t in custom + [b["data"]["first"]["value"] for b in sends(h, "message/template/send")]
                   if t.startswith("消息"))
    assert texts == sorted(f"消息{i}" for i in range(24))


async def test_a_stop_during_a_send_keeps_its_mark_and_gives_untried_claims_back(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox import routes as views
    from sandbox.routes import create_sandbox_app
    entered = asyncio.Event()
    original = views._custom

    async def slow_custom(p: Platform, request: Any, body: dict[str, Any]) -> None:
        entered.set()
        await asyncio.sleep(0.5)
        return await original(p, request, body)

    monkeypatch.setattr(views, "_custom", slow_custom)
    platform = Platform(app_id="wxsandbox0000000000", app_secret="sandbox-secret", token="sandbox-token")
    server = TestServer(create_sandbox_app(platform))
    await server.start_server()
    # One send a second: when the first is on the wire the others wait their turn.
    h = Harness(make_config(db_url, outbox={"rate_per_second": 1}), platform, server, workers=False)
    await h.start()
    try:
        user = await follower(h)
        for i in range(3):
            await enqueue(h, f"stop:{i}", user.openid, f"消息{i}")
        await with_workers(h)
        await asyncio.wait_for(entered.wait(), 5)
        await h.stop()  # a deploy, say: the first send is on the wire, the other two are claimed
        assert [b["text"]["content"] for b in sends(h)] == ["消息0"]
        h.app_kwargs["workers"] = False
        await h.start()
        first, second, third = [await row(h, f"stop:{i}") for i in range(3)]
        assert (first.status, first.attempts) == ("sent", 1)  # not left "sending", to go out again later
        assert (second.status, second.claimed_at) == ("pending", None)
        assert (third.status, third.claimed_at) == ("pending", None)
    finally:
        await h.close()
        await server.close()
