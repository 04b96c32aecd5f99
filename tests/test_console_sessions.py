"""Console sessions belong to their token (CONTRACT §7, issue 20 item 8): a session ends when its
token is removed or replaced in the configuration or its scopes change (the app started again
with the changed config.toml), after 30 idle minutes, and 12 hours after sign-in however active.
Over HTTP on both databases, with the app's clock moved instead of waiting; and in Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from kit.console import IDLE, MAX_AGE
from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER
from storage.tables import CAMPAIGNS, CONSOLE_SESSIONS
from tests.conftest import ON_SQLITE, Harness, make_config
from tests.console_support import csrf_of, post_sign_in, serve, sign_in

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py

OPS = {"name": "ops", "token": "ops-token-0123456789", "scopes": ["ops"]}
# The [[admin.tokens]] the app is started again with, and whether the ops session lives on.
CHANGES: dict[str, tuple[list[dict[str, Any]], bool]] = {
    "removed": ([], False),
    "replaced": ([{**OPS, "token": "ops-token-9876543210"}], False),
    "rescoped": ([{**OPS, "scopes": ["ops", "finance"]}], False),
    "unchanged": ([OPS], True),
}


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    async with Harness(make_config(db_url, admin={"tokens": [OPS]}), platform, wechat_server) as harness:
        yield harness


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


async def signed_in(http: aiohttp.ClientSession, base: str, cookie: str) -> bool:
    """Whether the cookie opens a page that needs a session (live.js: cheap), else the sign-in."""
    async with http.get(base + "/admin/live.js", cookies={"distbot_admin": cookie}, allow_redirects=False) as resp:
        assert resp.status in (200, 303), resp.status
        return resp.status == 200


async def sessions(h: Harness) -> int:
    async with h.app[SESSIONMAKER]() as s:
        return (await s.execute(select(func.count()).select_from(CONSOLE_SESSIONS))).scalar_one()


async def campaigns(h: Harness) -> int:
    async with h.app[SESSIONMAKER]() as s:
        return (await s.execute(select(func.count()).select_from(CAMPAIGNS))).scalar_one()


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_session_ends_when_its_token_changes(h: Harness, http: aiohttp.ClientSession, db_url: str,
                                                    change: str) -> None:
    status, _, cookie, _ = await post_sign_in(http, h.url, OPS["token"])
    assert status == 303 and cookie
    async with http.get(h.url + "/admin/campaigns", cookies={"distbot_admin": cookie}) as resp:
        assert resp.status == 200
        csrf = csrf_of(await resp.text())
    tokens, lives = CHANGES[change]
    h.config = make_config(db_url, admin={"tokens": tokens})
    await h.restart()

    async with http.get(h.url + "/admin/", cookies={"distbot_admin": cookie}) as resp:
        page = await resp.text()
    assert ("管理令牌" in page) is not lives and ("退出登录" in page) is lives
    async with http.get(h.url + "/admin/campaigns", cookies={"distbot_admin": cookie}, allow_redirects=False) as resp:
        assert resp.status == (200 if lives else 303)
    form = {"csrf_token": csrf, "title": "换令牌之后", "text": "一条通知", "kind": "notice", "audience": "all",
            "send_at": ""}
    async with http.post(h.url + "/admin/campaigns", data=form, cookies={"distbot_admin": cookie},
                         allow_redirects=False) as resp:
        assert resp.status == (303 if lives else 403), await resp.text()
    assert await campaigns(h) == (1 if lives else 0)
    assert await sessions(h) == (1 if lives else 0)  # an ended session's row is gone
    if change == "replaced":  # the new value signs in
        status, _, fresh, _ = await post_sign_in(http, h.url, "ops-token-9876543210")
        assert status == 303 and fresh and await signed_in(http, h.url, fresh)


async def test_a_session_ends_after_30_idle_minutes(h: Harness, http: aiohttp.ClientSession) -> None:
    clock = h.clock
    clock.freeze()
    _, _, cookie, _ = await post_sign_in(http, h.url)
    assert cookie
    clock.move(IDLE - timedelta(minutes=1))
    assert await signed_in(http, h.url, cookie)  # a request: idle from here again
    clock.move(IDLE - timedelta(seconds=1))
    assert await signed_in(http, h.url, cookie)
    clock.move(IDLE + timedelta(seconds=1))
    assert not await signed_in(http, h.url, cookie)
    assert await sessions(h) == 0
    clock.move(-IDLE)  # the row is gone: even a clock set back does not bring the session back
    assert not await signed_in(http, h.url, cookie)


async def test_a_session_ends_12_hours_after_sign_in_however_active(h: Harness, http: aiohttp.ClientSession) -> None:
    clock = h.clock
    start = clock.freeze()
    _, _, cookie, _ = await post_sign_in(http, h.url, OPS["token"])
    assert cookie
    step = IDLE - timedelta(minutes=1)
    while clock.now() + step - start <= MAX_AGE:
        clock.move(step)
        assert await signed_in(http, h.url, cookie), clock.now() - start
    clock.move(step)
    assert clock.now() - start > MAX_AGE and clock.now() - start < MAX_AGE + IDLE
    assert not await signed_in(http, h.url, cookie)
    async with http.get(h.url + "/admin/", cookies={"distbot_admin": cookie}) as resp:
        assert "管理令牌" in await resp.text()
    _, _, fresh, _ = await post_sign_in(http, h.url, OPS["token"])  # signing in again starts a new 12 hours
    assert fresh and await signed_in(http, h.url, fresh)


async def test_a_replaced_token_signs_the_browser_out(tmp_path: Path, page: Any) -> None:
    from playwright.async_api import expect
    async with serve(tmp_path, admin={"tokens": [OPS]}) as (base, _):
        await sign_in(page, base, OPS["token"])
        await expect(page.get_by_role("link", name="活动", exact=True)).to_be_visible()
    async with serve(tmp_path, admin={"tokens": [{**OPS, "token": "ops-token-9876543210"}]}) as (base, _):
        response = await page.goto(base + "/admin/campaigns")
        assert response is not None and response.url == base + "/admin/"
        await expect(page.get_by_label("管理令牌")).to_be_visible()
        await expect(page.get_by_role("link", name="活动", exact=True)).to_have_count(0)
        await sign_in(page, base, "ops-token-9876543210")
        await expect(page.get_by_role("link", name="活动", exact=True)).to_be_visible()
