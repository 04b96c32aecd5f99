"""The async WeChat client against the sandbox WeChat API: one shared token, refresh on 40001/42001,
back-off on -1, typed errors, UTF-8 JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from wechat import client as wechat_api
from domain.messages import Article, News, Text
from sandbox.platform import Platform
from wechat.client import WeChatAPI, WeChatError, WeChatUnreachable
from storage.db import create_engine
from storage.durable_queue import Backoff
from storage.migrate import upgrade
from storage.models import AccessToken
from storage.writer import Writer
from tests.conftest import ON_SQLITE

APP_ID, SECRET = "wxsandbox0000000000", "sandbox-secret"


@pytest.fixture
async def writer(db_url: str) -> AsyncIterator[Writer]:
    engine = create_engine(db_url)
    await upgrade(engine)
    writer = Writer(engine)
    yield writer
    await writer.close()
    await engine.dispose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(base_url: str, writer: Writer, http: aiohttp.ClientSession, secret: str = SECRET) -> WeChatAPI:
    return WeChatAPI(base_url=base_url, app_id=APP_ID, app_secret=secret, writer=writer, http=http)


@pytest.fixture
def api_url(wechat_server: TestServer) -> str:
    return str(wechat_server.make_url("/cgi-bin/"))


def token_calls(platform: Platform) -> int:
    return sum(1 for name, _ in platform.calls if name == "token")


@pytest.fixture
def follower(platform: Platform) -> str:
    user = platform.user()
    user.subscribed = True
    user.last_interaction = platform.clock()
    return user.openid


async def test_the_token_is_fetched_once_and_shared_through_the_database(
        platform: Platform, api_url: str, writer: Any, http: aiohttp.ClientSession, follower: str) -> None:
    one, two = client(api_url, writer, http), client(api_url, writer, http)
    await one.send_reply(follower, Text("一"))
    await two.send_reply(follower, Text("二"))
    await one.send_reply(follower, Text("三"))
    assert token_calls(platform) == 1
    async with writer.sessions() as session:
        stored = await session.scalar(select(AccessToken).where(AccessToken.app_id == APP_ID))
    assert stored is not None and stored.token in platform.tokens


async def test_concurrent_first_calls_fetch_one_token(
        platform: Platform, api_url: str, writer: Any, http: aiohttp.ClientSession, follower: str) -> None:
    apis = [client(api_url, writer, http) for _ in range(4)]
    await asyncio.gather(*(api.send_reply(follower, Text(f"并发{i}")) for i, api in enumerate(apis)))
    assert token_calls(platform) == 1
    assert len(platform.users[follower].timeline) == 4


@pytest.mark.parametrize("how", ["tokens-cleared", "40001", "42001", "40014"])
async def test_a_token_error_refreshes_once_and_retries(
        platform: Platform, api_url: str, writer: Any, http: aiohttp.ClientSession, follower: str,
        how: str) -> None:
    api, other = client(api_url, writer, http), client(api_url, writer, http)
    await api.send_reply(follower, Text("先拿到令牌"))
    if how == "tokens-cleared":
        platform.tokens.clear()
    else:
        platform.fail_next["message/custom/send"] = [int(how)]
    await api.send_reply(follower, Text("令牌失效后"))
    assert token_calls(platform) == 2
    # The other process picks the new token up from the database instead of fetching its own.
    await other.send_reply(follower, Text("另一个进程"))
    assert token_calls(platform) == 2
    texts = [i["content"] for i in platform.users[follower].timeline]
    assert texts == ["先拿到令牌", "令牌失效后", "另一个进程"]


async def test_a_second_token_error_in_a_row_is_raised_not_looped(
        platform: Platform, api_url: str, writer: Any, http: aiohttp.ClientSession, follower: str) -> None:
    api = client(api_url, writer, http)
    await api.access_token()
    platform.fail_next["message/custom/send"] = [40001, 40001, 40001]
    with pytest.raises(WeChatError) as err:
        await api.send_reply(follower, Text("x"))
    assert err.value.errcode == 40001
    assert token_calls(platform) == 2
    assert platform.fail_next["message/custom/send"] == [40001]


@ON_SQLITE  # the client and WeChat's answers: the token row is tested on both above
async def test_busy_is_retried_with_back_off(platform: Platform, api_url: str, writer: Any,
                                             http: aiohttp.ClientSession, follower: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wechat_api, "BUSY", Backoff(0.05, tries=3))
    api = client(api_url, writer, http)
    platform.fail_next["message/custom/send"] = [-1, -1]
    started = asyncio.get_running_loop().time()
    await api.send_reply(follower, Text("终于"))
    assert asyncio.get_running_loop().time() - started >= 0.15
    assert [i["content"] for i in platform.users[follower].timeline] == ["终于"]
    platform.fail_next["message/custom/send"] = [-1, -1, -1]
    with pytest.raises(WeChatError) as err:
        await api.send_reply(follower, Text("放弃"))
    assert err.value.errcode == -1 and err.value.retryable


@pytest.mark.parametrize("errcode,retryable", [(40003, False), (43004, False), (45015, False),
                                               (45047, True), (47001, False)])
@ON_SQLITE  # the client and WeChat's answers: the token row is tested on both above
async def test_other_errcodes_raise_a_typed_error(platform: Platform, api_url: str, writer: Any,
                                                  http: aiohttp.ClientSession, follower: str, errcode: int,
                                                  retryable: bool) -> None:
    api = client(api_url, writer, http)
    platform.fail_next["message/custom/send"] = [errcode]
    with pytest.raises(WeChatError) as err:
        await api.send_reply(follower, Text("x"))
    assert err.value.errcode == errcode and err.value.retryable is retryable
    assert not isinstance(err.value, WeChatUnreachable)
    assert str(errcode) in str(err.value)


@ON_SQLITE  # the client and WeChat's answers: the token row is tested on both above
async def test_real_platform_answers_are_typed_too(platform: Platform, api_url: str, writer: Any,
                                                   http: aiohttp.ClientSession) -> None:
    with pytest.raises(WeChatError) as err:
        await client(api_url, writer, http, secret="wrong").access_token()
    assert err.value.errcode == 40125
    with pytest.raises(WeChatError) as err:
        await client(api_url, writer, http).send_reply("o-nobody", Text("x"))
    assert err.value.errcode == 40003


@ON_SQLITE  # the client and WeChat's answers: the token row is tested on both above
async def test_an_unreachable_host_is_its_own_error(writer: Any, http: aiohttp.ClientSession) -> None:
    api = client("http://127.0.0.1:1/cgi-bin/", writer, http)
    with pytest.raises(WeChatUnreachable) as err:
        await api.send_reply("o", Text("x"))
    assert err.value.retryable


@ON_SQLITE  # the client and WeChat's answers: the token row is tested on both above
async def test_endpoints_and_the_qr_code(platform: Platform, api_url: str, writer: Any,
                                         http: aiohttp.ClientSession, follower: str) -> None:
    api = client(api_url, writer, http)
    qr = await api.create_qrcode("K7QF2M")
    assert qr["url"] and platform.scene_of(qr["url"]) == "K7QF2M"
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    media_id = await api.upload_image(png, "p.png", "image/png")
    assert platform.media[media_id][0] == png
    await api.send_reply(follower, News((Article("标题", "描述", "http://x", "http://y.jpg"), Article("二"))))
    item = platform.users[follower].timeline[-1]
    assert item["type"] == "news" and len(item["articles"]) == 1


# ---- the bytes on the wire ---------------------------------------------------------------------
@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[tuple[str, bytes, str]]]]:
    seen: list[tuple[str, bytes, str]] = []

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "T", "expires_in": 7200})

    async def anything(request: web.Request) -> web.Response:
        seen.append((request.path, await request.read(), request.headers.get("Content-Type", "")))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    app = web.Application()
    app.router.add_get("/cgi-bin/token", token)
    app.router.add_post("/cgi-bin/{tail:.*}", anything)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/cgi-bin/")), seen
    await server.close()


@ON_SQLITE  # the client and WeChat's answers: the token row is tested on both above
async def test_the_json_body_is_utf8_chinese_not_escapes(recorder: Any, writer: Any,
                                                         http: aiohttp.ClientSession) -> None:
    url, seen = recorder
    api = client(url, writer, http)
    await api.send_reply("oUser", Text("收益 ¥1,234.56"))
    await api.send_template("oUser", "tmpl", {"first": {"value": "培训通知"}})
    [(path, raw, ctype), (path2, raw2, _)] = seen
    assert path.endswith("message/custom/send") and path2.endswith("message/template/send")
    assert "收益 ¥1,234.56".encode() in raw and b"\\u" not in raw
    assert "培训通知".encode() in raw2
    assert json.loads(raw.decode("utf-8"))["text"]["content"] == "收益 ¥1,234.56"
    assert "application/json" in ctype and "utf-8" in ctype.lower()
