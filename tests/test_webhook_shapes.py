"""Pushes shaped the way WeChat's peers accept them (CONTRACT §7): padded values, MsgID, one MsgId
from two users, XML nested too deep, every refusal logged with its reason, and who becomes a follower."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from kit.logs import quiet_client_faults
from tests.conftest import ON_SQLITE, Harness
from tests.eventually import eventually
from tests.webhook_support import plain_query, post, push, sign, stored, text_fields, to_xml

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py


def padded(openid: str, content: str, msg_id: str) -> bytes:
    """A text push with spaces around every value, inside and outside its CDATA."""
    return ("<xml><ToUserName> <![CDATA[gh_sandbox000001]]> </ToUserName>"
            f"<FromUserName> <![CDATA[{openid}]]> </FromUserName><CreateTime> 1700000000 </CreateTime>"
            f"<MsgType> <![CDATA[text]]> </MsgType><Content><![CDATA[  {content} ]]></Content>"
            f"<MsgId> {msg_id} </MsgId></xml>").encode()


async def test_padded_values_are_read_trimmed(harness: Harness) -> None:
    status, reply = await push(harness, padded("oPadded", "注册", "7100000000000000001"))
    assert status == 200
    assert reply["ToUserName"] == "oPadded"
    assert "手机号" in reply["Content"]  # 注册 matched: the registration asks for the number
    assert (await stored(harness))["conversation_states"] == 1


async def test_msgid_spelled_MsgID_is_the_MsgId(harness: Harness) -> None:
    fields = text_fields(openid="oSpelling", content="注册")
    fields["MsgID"] = fields.pop("MsgId")
    first = await push(harness, to_xml(fields))
    again = await push(harness, to_xml(fields))
    assert first[0] == 200 and "手机号" in first[1]["Content"]
    assert again == first
    assert (await stored(harness))["processed_messages"] == 1


async def test_one_msgid_from_two_users_is_two_messages(harness: Harness) -> None:
    for openid in ("oFirstUser", "oSecondUser"):
        status, reply = await push(harness, to_xml(text_fields(openid=openid, content="注册", msg_id="42")))
        assert status == 200 and reply["ToUserName"] == openid and "手机号" in reply["Content"]
    counts = await stored(harness)
    assert counts["processed_messages"] == 2 and counts["conversation_states"] == 2


def nested(levels: int) -> bytes:
    """A text push whose deepest element is at `levels` (<xml> is level 1)."""
    chain = levels - 1
    body = to_xml(text_fields(openid="oDeep", content="帮助"))
    return body.replace(b"</xml>", b"<E>" * chain + b"x" + b"</E>" * chain + b"</xml>")


@pytest.mark.parametrize("levels,status", [(32, 200), (33, 400), (30_000, 400)])
async def test_xml_nested_past_32_levels_is_400(harness: Harness, levels: int, status: int) -> None:
    got, raw = await post(harness, plain_query(), nested(levels))
    assert got == status, raw
    assert (await stored(harness))["processed_messages"] == (status == 200)


REFUSALS: list[tuple[str, Any, int, str]] = [
    ("forged", lambda: ({**plain_query(), "signature": sign("guess", "1", "2")}, to_xml(text_fields())), 403,
     "bad signature"),
    ("stale", lambda: (plain_query(1), to_xml(text_fields())), 403, "stale timestamp"),
    ("malformed", lambda: (plain_query(), b"<xml><unclosed></xml>"), 400, "malformed XML"),
    ("deep", lambda: (plain_query(), nested(40)), 400, "nested deeper than 32 levels"),
    ("oversized", lambda: (plain_query(), b"<xml>" + b"a" * (256 * 1024) + b"</xml>"), 400, "body too large"),
]


@pytest.mark.parametrize("make,status,reason", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
async def test_every_refusal_is_logged_with_its_reason(harness: Harness, caplog: pytest.LogCaptureFixture,
                                                       make: Any, status: int, reason: str) -> None:
    with caplog.at_level(logging.WARNING, logger="wechat.inbound"):
        got, _ = await post(harness, *make())
    assert got == status
    lines = [r for r in caplog.records if r.name == "wechat.inbound" and r.levelno == logging.WARNING]
    assert len(lines) == 1 and reason in lines[0].getMessage() and lines[0].status == status  # type: ignore[attr-defined]


async def test_a_request_that_is_not_http_is_refused_with_a_warning_of_one_line(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A header line without its CR: aiohttp answers 400 and logs an error with a traceback; with
    distbot's logging it is a warning of one line that says why (kit.logs.ClientFaults)."""
    server = logging.getLogger("aiohttp.server")
    kept = list(server.filters)
    quiet_client_faults()
    try:
        with caplog.at_level(logging.WARNING, logger="aiohttp.server"):
            port = int(harness.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /wechat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\n# a comment\r\n\r\n")
            await writer.drain()
            answer = await reader.read(200)
            writer.close()
            await eventually(lambda: any(r.name == "aiohttp.server" for r in caplog.records),
                             what="aiohttp's log line")
    finally:
        server.filters[:] = kept
    assert answer.split(b" ", 2)[1] == b"400", answer
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelno, r.exc_info) for r in lines] == [(logging.WARNING, None)], lines
    assert "malformed HTTP request refused (400)" in lines[0].getMessage()
