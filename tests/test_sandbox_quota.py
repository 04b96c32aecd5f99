"""The sandbox enforces WeChat's customer-service quota (CONTRACT §7): 5 messages within 48 hours of
a user's message, 3 within a minute of a follow, click or scan; 45047 beyond, 45015 outside; VIEW,
LOCATION and WeChat's own events open nothing. Through the product's WeChat client and webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from sandbox.platform import Platform, SimUser
from wechat.wechat_keys import WECHAT
from wechat.client import WeChatError
from domain.messages import Text
from tests.conftest import ON_SQLITE, Harness, make_config

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    """The app without its outbox worker: only the test's own calls spend the quota."""
    async with Harness(make_config(db_url), platform, wechat_server, reply_deadline=3.0, workers=False) as harness:
        yield harness


async def answers(h: Harness, user: SimUser, n: int) -> list[int]:
    """Send n customer-service messages; WeChat's errcode for each (0: delivered)."""
    codes = []
    for i in range(n):
        try:
            await h.app[WECHAT].send_reply(user.openid, Text(f"客服消息{i}"))
            codes.append(0)
        except WeChatError as e:
            codes.append(e.errcode)
    return codes


async def age(h: Harness, user: SimUser, seconds: float) -> None:
    assert h.http is not None
    async with h.http.post(str(h.wechat_server.make_url("/sim/age")),
                           json={"openid": user.openid, "seconds": seconds}) as resp:
        assert resp.status == 200


async def test_a_follow_allows_three_messages_within_a_minute(h: Harness) -> None:
    user = h.user()
    await h.follow(user)
    assert await answers(h, user, 4) == [0, 0, 0, 45047]
    delivered = [m["content"] for m in user.timeline if m.get("via") == "custom"]
    assert delivered == ["客服消息0", "客服消息1", "客服消息2"]
    await age(h, user, 61)
    assert await answers(h, user, 1) == [45015]


async def test_a_message_allows_five_within_48_hours(h: Harness) -> None:
    user = h.user()
    await h.follow(user)
    await h.say(user, "你好")
    assert await answers(h, user, 6) == [0, 0, 0, 0, 0, 45047]
    await age(h, user, 47 * 3600)
    assert await answers(h, user, 1) == [45047]  # still inside, still spent
    await h.say(user, "在吗")  # a new message: a fresh grant of five
    assert await answers(h, user, 1) == [0]
    await age(h, user, 48 * 3600 + 1)
    assert await answers(h, user, 1) == [45015]


async def test_a_click_only_user_gets_three_then_45015_after_a_minute(h: Harness) -> None:
    user = h.user()
    user.subscribed = True  # followed long ago
    assert await answers(h, user, 1) == [45015]
    await h.click(user, "EARNINGS")
    await age(h, user, 59)
    assert await answers(h, user, 1) == [0]
    await age(h, user, 60)
    assert await answers(h, user, 1) == [45015]


async def test_a_new_grant_replaces_the_last_one(h: Harness) -> None:
    user = h.user()
    await h.follow(user)
    await h.say(user, "你好")
    await h.click(user, "EARNINGS")  # quotas do not add up: the click's three replace the five
    assert await answers(h, user, 4) == [0, 0, 0, 45047]


async def test_view_location_and_unfollow_open_nothing(h: Harness) -> None:
    user = h.user()
    user.subscribed = True
    await h.send(user, "view", key="https://example.com/menu")
    await h.send(user, "location")
    assert await answers(h, user, 1) == [45015]
    await h.follow(user)
    await h.send(user, "unsubscribe")
    await h.send(user, "subscribe")
    await age(h, user, 61)
    await h.send(user, "view", key="https://example.com/menu")
    assert await answers(h, user, 1) == [45015]


async def test_the_sandbox_page_sees_the_quota_left(h: Harness) -> None:
    user = h.user()
    await h.follow(user)
    await answers(h, user, 1)
    assert h.http is not None
    async with h.http.get(str(h.wechat_server.make_url("/sim/state"))) as resp:
        [state] = [u for u in (await resp.json())["users"] if u["openid"] == user.openid]
    assert state["quota"]["left"] == 2 and 0 < state["quota"]["seconds"] <= 60
