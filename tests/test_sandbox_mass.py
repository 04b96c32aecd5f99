"""Mass messages (message/mass/send) in the sandbox WeChat API, over real HTTP: WeChat's checks, the
clientmsgid guard, 4 a month per follower, 60 calls a minute, and the MASSSENDJOBFINISH event."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
import xmltodict
from aiohttp import web
from aiohttp.test_utils import TestServer
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import check_signature

from sandbox.platform import ERRMSG, Platform, SimUser
from tests.eventually import eventually

APP_ID, SECRET, TOKEN = "wxsandbox0000000000", "sandbox-secret", "sandbox-token"
AES_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")
CHINA = timezone(timedelta(hours=8))
# 2026-03-31 23:00 in China: an hour before April there, while UTC is still on March 31 15:00.
START = datetime(2026, 3, 31, 23, 0, tzinfo=CHINA).timestamp()


class Clock:
    def __init__(self, now: float = START):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(platform: Platform) -> Clock:
    platform.clock = clock = Clock()
    return clock


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class WeChat:
    """The server API as the bot calls it: a fresh access token for each call (the tests move the
    clock by days, past any token's life)."""

    def __init__(self, http: aiohttp.ClientSession, server: TestServer):
        self.http, self.server = http, server

    async def call(self, name: str, **kw: Any) -> dict[str, Any]:
        async with self.http.get(self.server.make_url("/cgi-bin/token"), params={
                "grant_type": "client_credential", "appid": APP_ID, "secret": SECRET}) as r:
            token = (await r.json())["access_token"]
        async with self.http.post(self.server.make_url("/cgi-bin/" + name),
                                  params={"access_token": token, **kw.pop("params", {})}, **kw) as r:
            assert r.status == 200
            return await r.json(content_type=None)

    async def mass(self, touser: list[Any], content: str = "本周新品", **extra: Any) -> dict[str, Any]:
        return await self.call("message/mass/send", json={
            "touser": touser, "msgtype": "text", "text": {"content": content}, "send_ignore_reprint": 0, **extra})


@pytest.fixture
def wechat(http: aiohttp.ClientSession, wechat_server: TestServer) -> WeChat:
    return WeChat(http, wechat_server)


def followers(platform: Platform, n: int) -> list[SimUser]:
    users = [platform.user() for _ in range(n)]
    for u in users:
        u.subscribed = True
    return users


def mass_items(user: SimUser) -> list[dict[str, Any]]:
    return [i for i in user.timeline if i["via"] == "mass"]


def mass_calls(platform: Platform) -> int:
    return sum(1 for name, _ in platform.calls if name == "message/mass/send")


# ---- the call -----------------------------------------------------------------------------------
async def test_a_mass_message_reaches_each_listed_follower_once(platform: Platform, wechat: WeChat) -> None:
    a, b, c = followers(platform, 3)
    gone = platform.user()  # known, not following
    answer = await wechat.mass([a.openid, b.openid, a.openid, gone.openid, "o-nobody"], "春季上新")
    assert answer["errcode"] == 0 and answer["errmsg"] == "send job submission success"
    assert isinstance(answer["msg_id"], int) and isinstance(answer["msg_data_id"], int)
    for user in (a, b):
        [item] = mass_items(user)
        assert (item["from"], item["type"], item["content"]) == ("bot", "text", "春季上新")
    assert c.timeline == [] and gone.timeline == []
    job = platform.mass_jobs[answer["msg_id"]]
    assert (job["total_count"], job["filter_count"], job["sent_count"], job["error_count"]) == (5, 4, 2, 2)
    assert job["clientmsgid"] is None and job["sent"] == [a.openid, b.openid]
    assert mass_calls(platform) == 1

    again = await wechat.mass([b.openid, c.openid], "第二条")
    assert again["errcode"] == 0 and again["msg_id"] != answer["msg_id"]
    assert [i["content"] for i in mass_items(b)] == ["春季上新", "第二条"]
    assert [i["content"] for i in mass_items(c)] == ["第二条"]


async def test_an_image_goes_out_too(platform: Platform, wechat: WeChat) -> None:
    a, b = followers(platform, 2)
    media_id = platform.upload_media("image", b"\x89PNG\r\n\x1a\nrest", "image/png")["media_id"]
    answer = await wechat.call("message/mass/send", json={
        "touser": [a.openid, b.openid], "msgtype": "image", "image": {"media_id": media_id}})
    assert answer["errcode"] == 0
    assert [(i["type"], i["media_id"]) for i in mass_items(a)] == [("image", media_id)]


def too_many(platform: Platform) -> list[Any]:
    a, b = followers(platform, 2)
    return [a.openid, b.openid] + [f"o-unknown-{i}" for i in range(9_999)]


@pytest.mark.parametrize(("case", "errcode"), [
    ("one openid", 40130), ("10,001 openids", 40130), ("not a list", 40130), ("a number in the list", 40130),
    ("empty content", 47001), ("voice", 40008), ("unknown media", 40007),
    ("clientmsgid of 65 bytes", 45067), ("clientmsgid of 22 Chinese characters (66 bytes)", 45067),
])
async def test_what_wechat_refuses(platform: Platform, wechat: WeChat, case: str, errcode: int) -> None:
    a, b = followers(platform, 2)
    pair = [a.openid, b.openid]
    body: dict[str, Any] = {"touser": pair, "msgtype": "text", "text": {"content": "x"}}
    match case:
        case "one openid":
            body["touser"] = [a.openid]
        case "10,001 openids":
            body["touser"] = too_many(platform)
        case "not a list":
            body["touser"] = a.openid
        case "a number in the list":
            body["touser"] = [a.openid, 42]
        case "empty content":
            body["text"] = {"content": ""}
        case "voice":
            body = {"touser": pair, "msgtype": "voice", "voice": {"media_id": "x"}}
        case "unknown media":
            body = {"touser": pair, "msgtype": "image", "image": {"media_id": "nope"}}
        case "clientmsgid of 65 bytes":
            body["clientmsgid"] = "x" * 65
        case _:
            body["clientmsgid"] = "群" * 22
    answer = await wechat.call("message/mass/send", json=body)
    assert answer["errcode"] == errcode, answer
    assert "msg_id" not in answer
    assert mass_items(a) == [] and platform.mass_jobs == {} and mass_calls(platform) == 0


async def test_the_limits_themselves_are_allowed(platform: Platform, wechat: WeChat) -> None:
    """10,000 openids, and a clientmsgid of exactly 64 bytes."""
    touser = too_many(platform)[:-1]
    assert len(touser) == 10_000
    answer = await wechat.mass(touser, clientmsgid="群" * 21 + "x")
    assert answer["errcode"] == 0, answer
    job = platform.mass_jobs[answer["msg_id"]]
    assert (job["total_count"], job["sent_count"], job["error_count"]) == (10_000, 2, 9_998)


# ---- clientmsgid: a resend after a crash does not reach anyone twice ----------------------------
async def test_a_repeat_within_a_minute_is_refused_then_answered_with_the_first_job(
        platform: Platform, wechat: WeChat, clock: Clock) -> None:
    a, b = followers(platform, 2)
    first = await wechat.mass([a.openid, b.openid], clientmsgid="promo-2026-04")
    assert first["errcode"] == 0

    clock.now += 59
    too_soon = await wechat.mass([a.openid, b.openid], clientmsgid="promo-2026-04")
    assert too_soon["errcode"] == 45066 and "1分钟" in too_soon["errmsg"]
    assert "msg_id" not in too_soon

    clock.now += 2
    repeat = await wechat.mass([a.openid, b.openid], clientmsgid="promo-2026-04")
    assert repeat["errcode"] == 45065 and repeat["msg_id"] == first["msg_id"], repeat
    assert len(mass_items(a)) == len(mass_items(b)) == 1
    assert list(platform.mass_jobs) == [first["msg_id"]] and mass_calls(platform) == 1

    other = await wechat.mass([a.openid, b.openid], clientmsgid="promo-2026-04-b")
    assert other["errcode"] == 0 and len(mass_items(a)) == 2

    clock.now += 24 * 3600  # a day later the clientmsgid is free again
    fresh = await wechat.mass([a.openid, b.openid], clientmsgid="promo-2026-04")
    assert fresh["errcode"] == 0 and fresh["msg_id"] not in (first["msg_id"], other["msg_id"])
    assert len(mass_items(a)) == 3


# ---- 4 a month per follower; 60 calls a minute ---------------------------------------------------
async def test_the_fifth_in_a_month_is_left_out_and_the_next_month_arrives(
        platform: Platform, wechat: WeChat, clock: Clock) -> None:
    a, b = followers(platform, 2)
    clock.now = START - 10 * 86400  # March 21
    for n in range(4):
        assert (await wechat.mass([a.openid, b.openid], f"三月第{n + 1}条"))["errcode"] == 0
        clock.now += 86400
    fifth = await wechat.mass([a.openid, b.openid], "三月第5条")
    assert fifth["errcode"] == 0  # not an error for the call: the followers are silently left out
    job = platform.mass_jobs[fifth["msg_id"]]
    assert (job["total_count"], job["filter_count"], job["sent_count"], job["error_count"]) == (2, 0, 0, 0)
    assert [i["content"] for i in mass_items(a)] == [f"三月第{n}条" for n in range(1, 5)]

    late, = followers(platform, 1)  # a new follower still has all four
    job = platform.mass_jobs[(await wechat.mass([a.openid, late.openid], "三月第6条"))["msg_id"]]
    assert (job["total_count"], job["filter_count"], job["sent_count"]) == (2, 1, 1)
    assert len(mass_items(a)) == 4 and [i["content"] for i in mass_items(late)] == ["三月第6条"]

    clock.now = START + 30 * 60  # 23:30 in China: still March there
    await wechat.mass([a.openid, b.openid], "还是三月")
    assert len(mass_items(a)) == 4
    clock.now = START + 90 * 60  # 00:30 on April 1 in China (still March 31 in UTC)
    april = await wechat.mass([a.openid, b.openid], "四月第1条")
    assert platform.mass_jobs[april["msg_id"]]["sent_count"] == 2
    assert mass_items(a)[-1]["content"] == "四月第1条" and len(mass_items(b)) == 5
    assert platform.mass_received[(a.openid, "2026-03")] == 4 and platform.mass_received[(a.openid, "2026-04")] == 1


async def test_the_61st_call_in_a_minute_is_refused(platform: Platform, wechat: WeChat, clock: Clock) -> None:
    a, b = followers(platform, 2)
    for n in range(60):
        clock.now += 0.5
        assert (await wechat.mass([a.openid, b.openid], f"第{n}条"))["errcode"] == 0
    over = await wechat.mass([a.openid, b.openid], "第61条")
    assert over["errcode"] == 45009 and mass_calls(platform) == 60
    clock.now += 30.5  # the first call is now a minute old
    assert (await wechat.mass([a.openid, b.openid], "一分钟后"))["errcode"] == 0
    assert (await wechat.mass([a.openid, b.openid], "又满了"))["errcode"] == 45009


async def test_latency_delays_every_call(platform: Platform, wechat: WeChat) -> None:
    a, b = followers(platform, 2)
    platform.latency = 0.15
    started = time.monotonic()
    assert (await wechat.mass([a.openid, b.openid]))["errcode"] == 0
    assert time.monotonic() - started >= 0.3  # the token call and the mass call


async def test_a_held_answer_leaves_once_released_the_call_done_before(platform: Platform, wechat: WeChat,
                                                                      clock: Clock) -> None:
    a, b = followers(platform, 2)
    release = platform.held_answers["message/mass/send"] = asyncio.Event()
    first = asyncio.ensure_future(wechat.mass([a.openid, b.openid], clientmsgid="held-1"))
    async with asyncio.timeout(5):
        while not platform.mass_jobs:
            await asyncio.sleep(0.01)
    assert len(mass_items(a)) == len(mass_items(b)) == 1  # done, while its answer waits
    clock.now += 61
    repeat = asyncio.ensure_future(wechat.mass([a.openid, b.openid], clientmsgid="held-1"))
    async with asyncio.timeout(5):
        while platform.mass_calls[-1] != clock.now:  # the repeat has been refused, its answer waits too
            await asyncio.sleep(0.01)
    assert not first.done() and not repeat.done()
    release.set()
    [msg_id] = platform.mass_jobs
    assert (await first)["msg_id"] == msg_id
    assert await repeat == {"errcode": 45065, "errmsg": ERRMSG[45065], "msg_id": msg_id}


# ---- MASSSENDJOBFINISH ---------------------------------------------------------------------------
class Webhook:
    """A stand-in for the bot's webhook that records what WeChat posts. The first `drop` requests
    lose their connection, the way a crashed or restarting bot would."""

    def __init__(self, drop: int = 0):
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.drop, self.dropped = drop, 0

    async def receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.dropped < self.drop:
            self.dropped += 1
            assert request.transport is not None
            request.transport.close()
            return web.Response(text="")
        self.posts.append((dict(request.query), body))
        return web.Response(text="success")

    async def wait_for(self, n: int) -> None:
        await eventually(lambda: len(self.posts) >= n, 5, what=f"{n} posts")


@pytest.fixture
async def webhook(platform: Platform) -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/wechat", hook.receive)
    server = TestServer(app)
    await server.start_server()
    platform.webhook_url = str(server.make_url("/wechat"))
    yield hook
    await server.close()


def read_event(query: dict[str, str], body: bytes, safe_mode: bool) -> dict[str, Any]:
    """What the bot would do: check the signature; in safe mode check msg_signature and decrypt."""
    assert check_signature(TOKEN, query["signature"], query["timestamp"], query["nonce"]) is None
    if safe_mode:
        assert query["encrypt_type"] == "aes"
        body = WeChatCrypto(TOKEN, AES_KEY, APP_ID).decrypt_message(
            body, query["msg_signature"], query["timestamp"], query["nonce"]).encode()
    return xmltodict.parse(body)["xml"]


@pytest.mark.parametrize("safe_mode", [False, True], ids=["plain", "safe-mode"])
async def test_the_outcome_reaches_the_webhook_later(platform: Platform, webhook: Webhook, wechat: WeChat,
                                                     safe_mode: bool) -> None:
    if safe_mode:
        platform.aes_key = base64.b64decode(AES_KEY + "=")
    a, b, full = followers(platform, 3)
    for n in range(4):  # `full` has had this month's four already
        assert (await wechat.mass([full.openid, platform.user().openid], f"旧{n}"))["errcode"] == 0
    await webhook.wait_for(4)
    webhook.posts.clear()

    answer = await wechat.mass([a.openid, b.openid, full.openid, "o-nobody"], clientmsgid="job-1")
    assert answer["errcode"] == 0
    assert webhook.posts == []  # the outcome comes later (mass_finish_delay), not with the answer
    await webhook.wait_for(1)
    await asyncio.sleep(0.05)  # and only once
    [(query, body)] = webhook.posts
    assert (b"<Encrypt>" in body) == safe_mode and (b"MASSSENDJOBFINISH" in body) != safe_mode
    event = read_event(query, body, safe_mode)
    assert event["ToUserName"] == platform.account and event["FromUserName"] == "mphelper"
    assert (event["MsgType"], event["Event"], event["MsgID"]) == ("event", "MASSSENDJOBFINISH", str(answer["msg_id"]))
    assert event["Status"] == "send success"
    counts = {k: int(event[k]) for k in ("TotalCount", "FilterCount", "SentCount", "ErrorCount")}
    assert counts == {"TotalCount": 4, "FilterCount": 3, "SentCount": 2, "ErrorCount": 1}
    assert abs(int(event["CreateTime"]) - time.time()) < 5


async def test_the_outcome_is_retried_when_the_webhook_drops_the_connection(
        platform: Platform, webhook: Webhook, wechat: WeChat) -> None:
    webhook.drop = 2
    platform.mass_finish_delay = 0.0
    answer = await wechat.mass(["o-nobody", "o-nobody-2"])
    await webhook.wait_for(1)
    assert webhook.dropped == 2
    [(query, body)] = webhook.posts
    event = read_event(query, body, safe_mode=False)
    assert event["MsgID"] == str(answer["msg_id"]) and event["Status"] == "send fail"
    assert (event["FilterCount"], event["SentCount"], event["ErrorCount"]) == ("2", "0", "2")
