"""The outbox spends WeChat's customer-service quota (CONTRACT §7): answers to a user's own request
first, service notices as template messages when it is spent, the rest kept for the user's next
message; only a follower's message, follow, scan or click opens it. Through the webhook, the
outbox worker and the sandbox emulator, which enforces the same quota."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from sandbox.platform import Platform, SimUser
from kit.app_keys import CLOCK, SESSIONMAKER, WRITER
from wechat.wechat_keys import DISPATCHER
from domain.messages import Text
from domain.outbox_rows import NO_TEMPLATE, Queued, enqueue_many
from domain.quota import Due, Grant, GrantKind, Rank, Route, choose
from storage.models import Follower, OutboxMessage
from tests.conftest import Harness, make_config
from tests.eventually import eventually
from tests.money_support import pay, seed


@pytest.fixture
async def idle(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    """No outbox worker until the test starts one."""
    async with Harness(make_config(db_url), platform, wechat_server, reply_deadline=3.0, workers=False) as h:
        yield h


async def start_workers(h: Harness) -> None:
    await h.stop()
    h.app_kwargs["workers"] = True
    await h.start()


async def queue(h: Harness, user: SimUser, *items: tuple[str, str, bool]) -> None:
    """Notices (key, text, with a template) in one unit, in order."""
    await h.app[WRITER].run(lambda s: enqueue_many(s, [
        Queued(key, user.openid, Text(text), None if templated else NO_TEMPLATE) for key, text, templated in items], now=h.app[CLOCK].now()))


async def rows(h: Harness, openid: str) -> dict[str, OutboxMessage]:
    async with h.app[SESSIONMAKER]() as session:
        return {r.key: r for r in await session.scalars(select(OutboxMessage).where(OutboxMessage.openid == openid))}


async def settled(h: Harness, openid: str, n: int, timeout: float = 8.0) -> dict[str, OutboxMessage]:
    """The user's rows once n of them are sent, failed or kept."""
    async def done() -> dict[str, OutboxMessage] | None:
        found = await rows(h, openid)
        return found if sum(r.status in ("sent", "failed", "kept") for r in found.values()) >= n else None
    return await eventually(done, timeout, what=f"{n} rows of {openid} sent, failed or kept")


async def outcomes(h: Harness) -> dict[str, float]:
    assert h.http is not None
    async with h.http.get(h.url + "/metrics") as resp:
        text = await resp.text()
    return {m[1]: float(m[2]) for m in re.finditer(r'distbot_outbox_outcomes_total\{outcome="([^"]+)"\} (\S+)', text)}


def received(user: SimUser, via: str) -> list[str]:
    return [str(m.get("content") or m["data"]["first"]["value"]) for m in user.timeline
            if m.get("from") == "bot" and m.get("via") == via]


async def test_six_notices_after_a_follow_three_as_messages_the_rest_as_templates_or_kept(harness: Harness) -> None:
    h, user = harness, harness.user()
    await h.follow(user)
    notices = [(f"n{i}", f"新佣金入账 {i}", i != 5) for i in range(6)]  # n5 has no template message
    await queue(h, user, *notices)
    found = await settled(h, user.openid, 6)
    assert {k: (r.status, r.channel) for k, r in found.items()} == {
        "n0": ("sent", "custom"), "n1": ("sent", "custom"), "n2": ("sent", "custom"),
        "n3": ("sent", "template"), "n4": ("sent", "template"), "n5": ("kept", None)}
    assert received(user, "custom") == ["新佣金入账 0", "新佣金入账 1", "新佣金入账 2"]
    assert sorted(received(user, "template")) == ["新佣金入账 3", "新佣金入账 4"]
    seen = await outcomes(h)
    assert (seen.get("custom"), seen.get("template"), seen.get("kept")) == (3, 2, 1)
    assert "45047" not in seen and "45015" not in seen  # WeChat never had to refuse one
    await h.say(user, "你好")  # the kept notice goes with the user's next message
    item = await h.platform.wait_for(user.openid, lambda m: m.get("content") == "新佣金入账 5")
    assert item["via"] == "custom"
    await marked(h, user.openid, "n5", "sent")  # WeChat got it: the worker's mark follows


async def marked(h: Harness, openid: str, key: str, status: str, timeout: float = 8.0) -> None:
    """Wait until the user's row `key` has `status` (a send lands before the worker records it)."""
    async def reached() -> bool:
        return (await rows(h, openid))[key].status == status
    await eventually(reached, timeout, what=f"{key} is {status}")


async def test_a_late_answer_to_the_users_request_goes_before_queued_notices(idle: Harness) -> None:
    h = idle
    me, user = await seed(h)
    await pay(h, "SO-Q1", 12900, me)
    await h.app[WRITER].run(lambda s: s.execute(delete(OutboxMessage)))  # its notices are not this test's
    await queue(h, user, *[(f"n{i}", f"团队通知 {i}", True) for i in range(5)])
    reply = await h.say(user, "收益")  # five messages allowed; the chart follows through the outbox
    assert "近 30 天收益图马上发给您" in reply
    await h.app[DISPATCHER].drain()
    [answer] = [k for k, r in (await rows(h, user.openid)).items() if r.payload.get("answer")]
    await start_workers(h)
    found = await settled(h, user.openid, 6)
    assert (found[answer].status, found[answer].channel) == ("sent", "custom")  # queued last, sent first
    assert [found[f"n{i}"].channel for i in range(5)] == ["custom", "custom", "custom", "custom", "template"]
    assert [m["type"] for m in user.timeline if m.get("via") == "custom"].count("image") == 1


async def test_view_location_and_job_reports_open_no_quota(harness: Harness) -> None:
    h, user = harness, harness.user()
    await h.follow(user)
    a_while_ago = datetime.now(UTC) - timedelta(minutes=2)
    await h.app[WRITER].run(lambda s: s.execute(update(Follower).where(Follower.openid == user.openid)
                                                .values(last_interaction_at=a_while_ago)))
    h.platform.users[user.openid].quota.opened_at -= 120  # the follow was two minutes ago for WeChat too
    await h.send(user, "view", key="https://shop.example.com/")
    await h.send(user, "location")
    assert h.http is not None
    report = {"ToUserName": h.platform.account, "FromUserName": user.openid, "CreateTime": str(int(h.platform.clock())),
              "MsgType": "event", "Event": "TEMPLATESENDJOBFINISH", "MsgID": "200163836", "Status": "success"}
    assert await h.platform.post(h.http, report) is not None
    async with h.app[SESSIONMAKER]() as session:
        follower = await session.get(Follower, user.openid)
    assert follower is not None and follower.last_interaction_at == a_while_ago
    await queue(h, user, ("after-view", "佣金已解冻", True))
    found = await settled(h, user.openid, 1)
    assert (found["after-view"].status, found["after-view"].channel) == ("sent", "template")
    assert "45015" not in await outcomes(h)  # decided from our record, not by trying


async def test_a_refusal_from_wechat_corrects_the_record(harness: Harness) -> None:
    """Our record can be wrong (another process spent the quota): WeChat's 45047 is the truth."""
    h, user = harness, harness.user()
    await h.follow(user)
    h.platform.users[user.openid].quota.used = 3  # spent elsewhere
    await queue(h, user, ("a", "通知一", True))
    await settled(h, user.openid, 1)
    await queue(h, user, ("b", "通知二", True))
    found = await settled(h, user.openid, 2)
    assert [found[k].channel for k in "ab"] == ["template", "template"]
    seen = await outcomes(h)
    assert seen.get("45047") == 1 and seen.get("template") == 2  # the second was not tried
    async with h.app[SESSIONMAKER]() as session:
        follower = await session.get(Follower, user.openid)
    assert follower is not None and follower.grant_used >= 3


# ---- the choice alone ----------------------------------------------------------------------------------
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
GRANTS = {"fresh-message": Grant(GrantKind.MESSAGE, NOW - timedelta(hours=1), 1),
          "old-message": Grant(GrantKind.MESSAGE, NOW - timedelta(hours=48)),
          "fresh-action": Grant(GrantKind.ACTION, NOW - timedelta(seconds=59), 2),
          "old-action": Grant(GrantKind.ACTION, NOW - timedelta(seconds=60)),
          "never": Grant(GrantKind.MESSAGE, None)}


@given(st.lists(st.tuples(st.sampled_from([*GRANTS, "stranger"]), st.sampled_from(list(Rank)), st.booleans()),
                max_size=25), st.booleans())
def test_the_choice_keeps_to_each_quota_and_serves_answers_first(
        rows: list[tuple[str, Rank, bool]], templates: bool) -> None:
    due = [Due(i, openid, rank, template) for i, (openid, rank, template) in enumerate(rows)]
    choices, spent = choose(due, GRANTS, NOW, templates)
    left = {"fresh-message": 4, "old-message": 0, "fresh-action": 1, "old-action": 0, "never": 0}
    for openid, n in left.items():
        mine = [d for d in due if d.openid == openid]
        custom = [d for d in mine if choices[d.id].route == Route.CUSTOM]
        assert len(custom) == spent[openid] == min(n, len(mine))
        # Nobody waits behind a row of lower rank, nor behind a later row of the same rank.
        worst = max(((d.rank, d.id) for d in custom), default=None)
        assert all((d.rank, d.id) > worst for d in mine if d not in custom) if worst else True
        for d in mine:
            c = choices[d.id]
            if c.route != Route.CUSTOM:
                assert c.errcode == (45047 if n else 45015)  # spent, or closed
                expected = (Route.TEMPLATE if d.template and templates
                            else Route.DROP if d.rank == Rank.BROADCAST else Route.KEEP)
                assert c.route == expected
    # An openid we have no record of: WeChat decides (tried as a customer-service message, nothing spent).
    assert all(choices[d.id].route == Route.CUSTOM for d in due if d.openid == "stranger")
    assert spent["stranger"] == 0
