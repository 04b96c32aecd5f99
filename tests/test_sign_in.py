"""Sign-in throttling that refuses (CONTRACT §7, issue 20 item 9): after 10 tries of one client
within 10 minutes further tries answer 429 with Retry-After and their token is not compared; a try
counts from when it starts, so parallel tries check no more than 10 tokens; the client behind a
trusted proxy is read from X-Forwarded-For, behind any other peer that header means nothing; every
failed sign-in is in the audit trail and in a warning log line, never the token tried. Over HTTP,
on both databases, with the console's clock moved instead of waiting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from sandbox.platform import Platform
from kit.sign_in import LIMIT, WINDOW
from kit.app_keys import SESSIONMAKER, WRITER
from domain.clock import FakeClock
from domain.config import ConfigError, load_config
from storage.tables import SIGN_IN_TRIES
from tests.conftest import ADMIN_TOKEN, Harness, make_config
from tests.console_support import post_sign_in
from tests.test_jobs import until_runs

WRONG = "wrong-token-S3CRET"
Start = Callable[..., Harness]


@pytest.fixture
def start(db_url: str, platform: Platform, wechat_server: TestServer) -> Start:
    """The app with the given [server] settings."""
    return lambda **server: Harness(make_config(db_url, server=server), platform, wechat_server)


def still(h: Harness) -> FakeClock:
    """The app's clock, standing still until the test moves it."""
    h.clock.freeze()
    return h.clock


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


async def failures(h: Harness) -> list[dict[str, Any]]:
    """The audit trail's failed sign-ins, newest first."""
    status, body = await h.api("GET", "/audit?page=1")
    assert status == 200, body
    return [e for e in body["entries"] if e["path"] == "/admin/login" and e["status"] != 303]


async def test_ten_failures_then_even_the_right_token_is_refused(
        start: Start, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    async with start() as h:
        clock = still(h)
        with caplog.at_level(logging.WARNING, logger="kit.sign_in"):
            for _ in range(LIMIT):
                status, _, cookie, _ = await post_sign_in(http, h.url, WRONG)
                assert (status, cookie) == (401, None)
        clock.move(minutes=4)
        status, headers, cookie, _ = await post_sign_in(http, h.url, ADMIN_TOKEN)
        assert (status, cookie) == (429, None)  # not compared: the right token does not sign in
        assert headers["Retry-After"] == str(int((WINDOW - timedelta(minutes=4)).total_seconds()))
        lines = [r.getMessage() for r in caplog.records if r.name == "kit.sign_in"]
        assert len(lines) == LIMIT and all("127.0.0.1" in line and WRONG not in line for line in lines)

        entries = await failures(h)
        assert len(entries) == LIMIT  # the 429 is not in the trail
        assert {(e["status"], e["token_name"], e["actor"], e["summary"], e["method"]) for e in entries} == {
            (401, "-", "client:127.0.0.1", "登录失败", "POST")}
        assert WRONG not in str(entries) and ADMIN_TOKEN not in str(entries)

        clock.move(WINDOW)  # 14 minutes after the failures: checked again
        status, _, cookie, _ = await post_sign_in(http, h.url, ADMIN_TOKEN)
        assert status == 303 and cookie


async def test_the_429_page_says_when_in_chinese(start: Start, http: aiohttp.ClientSession) -> None:
    async with start() as h:
        still(h)
        for _ in range(LIMIT):
            await post_sign_in(http, h.url, WRONG)
        answer = await post_sign_in(http, h.url, WRONG)
        assert (answer.status, answer.headers["Retry-After"]) == (429, "600")
        assert "登录失败次数过多，请 10 分钟后再试" in answer.page and 'name="token"' in answer.page


async def test_parallel_tries_check_at_most_ten_tokens(start: Start, http: aiohttp.ClientSession) -> None:
    async with start() as h:
        answers = await asyncio.gather(*(post_sign_in(http, h.url, WRONG) for _ in range(2 * LIMIT)))
        statuses = sorted(answer.status for answer in answers)
        assert statuses == [401] * LIMIT + [429] * LIMIT
        assert len(await failures(h)) == LIMIT


async def test_a_sign_in_does_not_clear_the_clients_failures(start: Start, http: aiohttp.ClientSession) -> None:
    async with start() as h:
        for _ in range(LIMIT - 1):
            assert (await post_sign_in(http, h.url, WRONG)).status == 401
        assert (await post_sign_in(http, h.url, ADMIN_TOKEN)).status == 303  # does not count, clears nothing
        assert (await post_sign_in(http, h.url, WRONG)).status == 401
        assert (await post_sign_in(http, h.url, ADMIN_TOKEN)).status == 429


async def test_behind_a_trusted_proxy_each_forwarded_client_counts_apart(
        start: Start, http: aiohttp.ClientSession) -> None:
    async with start(trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"]) as h:
        for _ in range(LIMIT):
            assert (await post_sign_in(http, h.url, WRONG, **{"X-Forwarded-For": "203.0.113.5"})).status == 401
        assert (await post_sign_in(http, h.url, ADMIN_TOKEN, **{"X-Forwarded-For": "203.0.113.5"})).status == 429
        # Through a second proxy of ours the client is the same, and an address it made up in front
        # of its own (proxies append) does not make it another client.
        for chain in ("203.0.113.5, 10.1.2.3", "198.51.100.99, 203.0.113.5"):
            assert (await post_sign_in(http, h.url, ADMIN_TOKEN, **{"X-Forwarded-For": chain})).status == 429
        status, _, cookie, _ = await post_sign_in(http, h.url, ADMIN_TOKEN, **{"X-Forwarded-For": "203.0.113.6"})
        assert status == 303 and cookie
        assert (await post_sign_in(http, h.url, WRONG, **{"X-Forwarded-For": "203.0.113.6"})).status == 401
        assert {e["actor"] for e in await failures(h)} == {"client:203.0.113.5", "client:203.0.113.6"}


async def test_an_untrusted_peers_forwarded_for_is_ignored(start: Start, http: aiohttp.ClientSession) -> None:
    async with start(trusted_proxies=["10.0.0.0/8"]) as h:
        for i in range(LIMIT):
            assert (await post_sign_in(http, h.url, WRONG, **{"X-Forwarded-For": f"203.0.113.{i}"})).status == 401
        assert (await post_sign_in(http, h.url, ADMIN_TOKEN, **{"X-Forwarded-For": "198.51.100.1"})).status == 429
        assert {e["actor"] for e in await failures(h)} == {"client:127.0.0.1"}


async def test_tries_that_stopped_counting_are_pruned(start: Start) -> None:
    async with start() as h:
        now = datetime.now(UTC)
        ages = {"old-a": WINDOW + timedelta(seconds=1), "old-b": 2 * WINDOW, "recent": WINDOW - timedelta(minutes=1)}
        await h.app[WRITER].run(lambda s: s.execute(SIGN_IN_TRIES.insert(), [
            {"client": client, "at": now - age} for client, age in ages.items()]))
        status, body = await h.api("POST", "/jobs/prune-sign-in-tries/run")
        assert (status, body["status"]) == (202, "started")
        await until_runs(h, "prune-sign-in-tries", 1)
        async with h.app[SESSIONMAKER]() as session:
            assert (await session.scalars(select(SIGN_IN_TRIES.c.client))).all() == ["recent"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_trusted_proxies_are_addresses_or_networks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(write(tmp_path, "")).server.trusted_proxies == ()  # the socket's address only
    config = load_config(write(tmp_path, '[server]\ntrusted_proxies = ["10.0.0.0/8", "127.0.0.1", "::1"]\n'))
    assert [str(n) for n in config.server.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    monkeypatch.setenv("DISTBOT_SERVER__TRUSTED_PROXIES", '["192.168.0.0/16"]')
    assert [str(n) for n in load_config(write(tmp_path, "")).server.trusted_proxies] == ["192.168.0.0/16"]


@pytest.mark.parametrize("entry", ["proxy.internal", "10.0.0.1/8", "300.1.1.1", ""])
def test_a_bad_trusted_proxy_stops_start_up(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
        load_config(write(tmp_path, f'[server]\ntrusted_proxies = ["127.0.0.1", "{entry}"]\n'))
