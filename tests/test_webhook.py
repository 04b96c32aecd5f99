"""POST/GET /wechat through the app built by create_app: verification, plain and safe (AES) mode,
and hostile deliveries, each of which must leave nothing stored."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import xmltodict
from wechatpy.crypto import PrpCrypto

from tests.conftest import ON_SQLITE, Harness
from tests.webhook_support import (  # noqa: F401 (safe_harness: a fixture)
    AES_KEY, APP_ID, NOTHING, TOKEN, plain_query, post, safe_envelope, safe_harness, sign, stored, text_fields,
    to_xml,
)

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py


# ---- GET verification ---------------------------------------------------------------------------
async def test_get_verification_echoes_echostr(harness: Harness) -> None:
    assert harness.http is not None
    query = {**plain_query(), "echostr": "8261471526842738619"}
    async with harness.http.get(harness.url + "/wechat", params=query) as resp:
        assert resp.status == 200
        assert await resp.text() == "8261471526842738619"


@pytest.mark.parametrize("query", [
    {"echostr": "x"},
    {**plain_query(), "signature": "0" * 40, "echostr": "x"},
    {**plain_query(token="other-token"), "echostr": "x"},
    {"timestamp": "123", "nonce": "n", "signature": sign(TOKEN, "123", "n"), "echostr": "x"},  # stale
], ids=["no-signature", "zero-signature", "other-token", "stale"])
@ON_SQLITE
async def test_get_verification_refuses_bad_signature(harness: Harness, query: dict[str, str]) -> None:
    assert harness.http is not None
    async with harness.http.get(harness.url + "/wechat", params=query) as resp:
        assert resp.status == 403
        assert "x" != await resp.text()


# ---- plain and safe mode ------------------------------------------------------------------------
async def test_plain_mode_text_gets_a_passive_reply(harness: Harness) -> None:
    status, body = await post(harness, plain_query(), to_xml(text_fields(content="帮助")))
    assert status == 200
    reply = xmltodict.parse(body)["xml"]
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] == "oHostile0000000000000000000"
    assert "分销员助手" in reply["Content"]
    counts = await stored(harness)
    assert counts["processed_messages"] == 1 and counts["followers"] == 1


async def test_safe_mode_round_trip(safe_harness: Harness) -> None:
    user = safe_harness.user()
    reply = await safe_harness.send(user, "text", content="帮助")
    assert reply is not None and "分销员助手" in reply["content"]
    # The encrypted reply is signed the way WeChat checks it.
    query, body = safe_envelope(to_xml(text_fields(content="help", msg_id="7000000000000000009")))
    status, raw = await post(safe_harness, query, body)
    assert status == 200
    envelope = xmltodict.parse(raw)["xml"]
    assert envelope["MsgSignature"] == sign(TOKEN, envelope["TimeStamp"], envelope["Nonce"], envelope["Encrypt"])
    assert envelope["Nonce"] == query["nonce"]
    inner = xmltodict.parse(PrpCrypto(base64.b64decode(AES_KEY + "=")).decrypt(envelope["Encrypt"], APP_ID))["xml"]
    assert "分销员助手" in inner["Content"]


async def test_safe_mode_registration_through_chat(safe_harness: Harness) -> None:
    code = await safe_harness.register(safe_harness.user(), "13700137000", "王五")
    status, body = await safe_harness.api("GET", f"/distributors/{code}")
    assert status == 200 and body["name"] == "王五"


async def test_safe_mode_event_without_reply_answers_success(safe_harness: Harness) -> None:
    user = safe_harness.user()
    await safe_harness.follow(user)
    query, body = safe_envelope(to_xml({"ToUserName": "gh_sandbox000001", "FromUserName": user.openid,
                                        "CreateTime": str(int(time.time()) + 7), "MsgType": "event",
                                        "Event": "unsubscribe"}))
    status, raw = await post(safe_harness, query, body)
    assert (status, raw) == (200, b"success")


async def test_chunked_body_arriving_in_pieces_is_read_whole(harness: Harness) -> None:
    body = to_xml(text_fields(content="帮助"))

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 16):
            yield body[i:i + 16]
            await asyncio.sleep(0.005)

    status, raw = await post(harness, plain_query(), pieces())
    assert status == 200, raw
    assert "分销员助手" in xmltodict.parse(raw)["xml"]["Content"]


# ---- hostile deliveries: refused, nothing stored ----------------------------------------------
def _now() -> int:
    return int(time.time())


BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%s;" % (str(i - 1).encode() if i > 1
                                                                                   else b"") for _ in range(10)))
                             for i in range(1, 10))
                  + b']><xml><ToUserName>gh</ToUserName><FromUserName>oHostile</FromUserName>'
                  + b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol9;</Content>"
                  + b"<MsgId>1</MsgId></xml>")
EXTERNAL_ENTITY = (b'<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                   b"<xml><ToUserName>gh</ToUserName><FromUserName>oHostile</FromUserName>"
                   b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&xxe;</Content>"
                   b"<MsgId>1</MsgId></xml>")
UTF16_ENTITY = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY e "boom">]>'
                "<xml><ToUserName>gh</ToUserName><FromUserName>oHostile</FromUserName>"
                "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&e;</Content>"
                "<MsgId>1</MsgId></xml>").encode("utf-16")


def _without(name: str) -> bytes:
    f = text_fields()
    del f[name]
    return to_xml(f)


def _with(**changes: Any) -> bytes:
    return to_xml({**text_fields(), **changes})


PLAIN_CASES: list[tuple[str, Any, int]] = [
    ("forged-signature", lambda: ({**plain_query(), "signature": sign("guess", "1", "2")}, to_xml(text_fields())), 403),
    ("no-signature", lambda: ({"timestamp": str(_now()), "nonce": "n"}, to_xml(text_fields())), 403),
    ("no-timestamp", lambda: ({"nonce": "n", "signature": sign(TOKEN, "", "n")}, to_xml(text_fields())), 403),
    ("no-params", lambda: ({}, to_xml(text_fields())), 403),
    ("stale-past", lambda: (plain_query(_now() - 301), to_xml(text_fields())), 403),
    # (the future one has room: a request that waits on a loaded machine comes closer to the window)
    ("stale-future", lambda: (plain_query(_now() + 330), to_xml(text_fields())), 403),
    ("timestamp-not-a-number", lambda: ({"timestamp": "abc", "nonce": "n", "signature": sign(TOKEN, "abc", "n")},
                                        to_xml(text_fields())), 403),
    ("huge-timestamp", lambda: ({"timestamp": "9" * 400, "nonce": "n", "signature": sign(TOKEN, "9" * 400, "n")},
                                to_xml(text_fields())), 403),
    ("oversized", lambda: (plain_query(), b"<xml>" + b"a" * (256 * 1024) + b"</xml>"), 400),
    ("billion-laughs", lambda: (plain_query(), BILLION_LAUGHS), 400),
    ("external-entity", lambda: (plain_query(), EXTERNAL_ENTITY), 400),
    ("utf16-entity", lambda: (plain_query(), UTF16_ENTITY), 400),
    ("garbage", lambda: (plain_query(), bytes(range(256)) * 8), 400),
    ("empty", lambda: (plain_query(), b""), 400),
    ("not-xml-root", lambda: (plain_query(), b"<foo><FromUserName>o</FromUserName></foo>"), 400),
    ("non-utf8", lambda: (plain_query(), _with(Content="注册").replace("注册".encode(), "注册".encode("gbk"))), 400),
    ("no-FromUserName", lambda: (plain_query(), _without("FromUserName")), 400),
    ("no-MsgType", lambda: (plain_query(), _without("MsgType")), 400),
    ("no-MsgId", lambda: (plain_query(), _without("MsgId")), 400),
    ("no-CreateTime", lambda: (plain_query(), _without("CreateTime")), 400),
    ("nested-FromUserName", lambda: (plain_query(), _with(FromUserName={"a": "b"})), 400),
    ("nested-Content", lambda: (plain_query(), _with(Content={"a": "b"})), 400),
    ("unicode-digit-MsgId", lambda: (plain_query(), _with(MsgId="²³")), 400),
    ("huge-MsgId", lambda: (plain_query(), _with(MsgId="9" * 5000)), 400),
    ("huge-CreateTime", lambda: (plain_query(), _with(CreateTime="9" * 5000)), 400),
    ("overlong-FromUserName", lambda: (plain_query(), _with(FromUserName="o" * 65)), 400),
    ("event-without-Event", lambda: (plain_query(), to_xml({"ToUserName": "gh", "FromUserName": "oHostile",
                                                            "CreateTime": "1", "MsgType": "event"})), 400),
]


async def assert_refused(h: Harness, query: dict[str, str], body: bytes, status: int) -> None:
    """The delivery gets `status` and leaves no trace, now or a moment later."""
    got, raw = await post(h, query, body)
    assert got == status, raw
    assert await stored(h) == NOTHING
    await asyncio.sleep(0.05)  # nothing trickles in afterwards either
    assert await stored(h) == NOTHING


@ON_SQLITE
@pytest.mark.parametrize("make,status", [(m, s) for _, m, s in PLAIN_CASES], ids=[n for n, _, _ in PLAIN_CASES])
async def test_hostile_plain_delivery_is_refused_and_nothing_stored(harness: Harness, make: Any,
                                                                     status: int) -> None:
    await assert_refused(harness, *make(), status)


async def test_oversized_chunked_body_is_refused(harness: Harness) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"<xml><Content>"
        for _ in range(80):
            yield b"a" * 4096
            await asyncio.sleep(0)
        yield b"</Content></xml>"

    status, _ = await post(harness, plain_query(), pieces())
    assert status == 400  # CONTRACT §7: oversized XML is a 400 like any XML refused
    assert await stored(harness) == NOTHING


async def test_stale_timestamp_inside_the_window_is_accepted(harness: Harness) -> None:
    status, _ = await post(harness, plain_query(_now() - 290), to_xml(text_fields(content="帮助")))
    assert status == 200
    assert (await stored(harness))["processed_messages"] == 1


def _truncate(enc: str) -> str:
    return enc[: len(enc) // 2]


SAFE_CASES: list[tuple[str, Any, int]] = [
    ("forged-msg_signature", lambda: _forge_msg_signature(), 403),
    ("missing-msg_signature", lambda: _drop_msg_signature(), 403),
    ("forged-signature", lambda: _forge_plain_signature(), 403),
    ("stale", lambda: safe_envelope(to_xml(text_fields()), timestamp=_now() - 400), 403),
    ("wrong-appid", lambda: safe_envelope(to_xml(text_fields()), app_id="wxattacker000000000"), 400),
    ("wrong-key", lambda: safe_envelope(to_xml(text_fields()),
                                        key=base64.b64encode(b"k" * 32).decode().rstrip("=")), 400),
    ("truncated-ciphertext", lambda: safe_envelope(to_xml(text_fields()), mangle=_truncate), 400),
    ("not-base64", lambda: safe_envelope(to_xml(text_fields()), mangle=lambda e: "!!" + e[2:]), 400),
    ("plain-body", lambda: ({**plain_query(), "encrypt_type": "aes", "msg_signature": "x"},
                            to_xml(text_fields())), 400),
    ("entity-inside", lambda: safe_envelope(EXTERNAL_ENTITY), 400),
    ("missing-field-inside", lambda: safe_envelope(_without("FromUserName")), 400),
    ("garbage-inside", lambda: safe_envelope(b"<xml><unclosed></xml>"), 400),
]


def _forge_msg_signature() -> tuple[dict[str, str], bytes]:
    query, body = safe_envelope(to_xml(text_fields()))
    return {**query, "msg_signature": sign("guess", query["timestamp"], query["nonce"])}, body


def _drop_msg_signature() -> tuple[dict[str, str], bytes]:
    query, body = safe_envelope(to_xml(text_fields()))
    del query["msg_signature"]
    return query, body


def _forge_plain_signature() -> tuple[dict[str, str], bytes]:
    query, body = safe_envelope(to_xml(text_fields()))
    return {**query, "signature": "f" * 40}, body


@ON_SQLITE
@pytest.mark.parametrize("make,status", [(m, s) for _, m, s in SAFE_CASES], ids=[n for n, _, _ in SAFE_CASES])
async def test_hostile_safe_mode_delivery_is_refused_and_nothing_stored(safe_harness: Harness, make: Any,
                                                                         status: int) -> None:
    await assert_refused(safe_harness, *make(), status)


async def test_safe_mode_accepts_the_untampered_version_of_the_same_message(safe_harness: Harness) -> None:
    # The control for the cases above: the same message, encrypted and signed correctly, is processed.
    query, body = safe_envelope(to_xml(text_fields()))
    status, raw = await post(safe_harness, query, body)
    assert status == 200 and b"Encrypt" in raw
    counts = await stored(safe_harness)
    assert counts["processed_messages"] == 1 and counts["conversation_states"] == 1


async def test_non_text_message_gets_the_help_text(harness: Harness) -> None:
    fields = {**text_fields(), "MsgType": "image", "PicUrl": "http://example.invalid/a.jpg", "MediaId": "m1"}
    del fields["Content"]
    status, raw = await post(harness, plain_query(), to_xml(fields))
    assert status == 200
    assert "文字" in xmltodict.parse(raw)["xml"]["Content"]


@ON_SQLITE
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_undecodable_signature_bytes_are_403(harness: Harness, method: str) -> None:
    from yarl import URL
    assert harness.http is not None
    ts = str(_now())
    url = URL(f"{harness.url}/wechat?timestamp={ts}&nonce=n&signature=%FF%FE%C3&echostr=x", encoded=True)
    async with harness.http.request(method, url, data=to_xml(text_fields()) if method == "POST" else None) as resp:
        assert resp.status == 403
    assert await stored(harness) == NOTHING


async def test_safe_mode_get_verification_is_the_plain_signature(safe_harness: Harness) -> None:
    assert safe_harness.http is not None
    async with safe_harness.http.get(safe_harness.url + "/wechat", params={**plain_query(), "echostr": "e1"}) as r:
        assert (r.status, await r.text()) == (200, "e1")
    async with safe_harness.http.get(safe_harness.url + "/wechat",
                                     params={**plain_query(token="x"), "echostr": "e1"}) as r:
        assert r.status == 403
