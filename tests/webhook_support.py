"""Deliveries to /wechat as WeChat makes them, for the webhook's tests: signed queries, plain and
encrypted (safe mode) bodies, the POST itself, and what the database holds afterwards."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import xmltodict
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select
from wechatpy.crypto import PrpCrypto

from sandbox.platform import Platform
from sandbox.routes import create_sandbox_app
from kit.app_keys import SESSIONMAKER
from storage.models import ConversationState, Distributor, Follower, OutboxMessage, ProcessedMessage, SignedQueryRow
from tests.conftest import Harness, make_config

TOKEN = "sandbox-token"
APP_ID = "wxsandbox0000000000"
AES_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")  # 43 characters
assert len(AES_KEY) == 43


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def text_fields(openid: str = "oHostile0000000000000000000", content: str = "注册",
                msg_id: str = "7000000000000000001") -> dict[str, Any]:
    return {"ToUserName": "gh_sandbox000001", "FromUserName": openid, "CreateTime": str(int(time.time())),
            "MsgType": "text", "Content": content, "MsgId": msg_id}


def to_xml(fields: dict[str, Any]) -> bytes:
    return xmltodict.unparse({"xml": fields}, full_document=False).encode()


def plain_query(timestamp: int | None = None, nonce: str = "n0nce", token: str = TOKEN) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"timestamp": ts, "nonce": nonce, "signature": sign(token, ts, nonce)}


def safe_envelope(plain_xml: bytes, *, app_id: str = APP_ID, key: str = AES_KEY,
                  timestamp: int | None = None, nonce: str = "n0nce",
                  mangle: Any = None) -> tuple[dict[str, str], bytes]:
    """Encrypt and sign like WeChat; `mangle` may alter the ciphertext before it is signed."""
    encrypted = PrpCrypto(base64.b64decode(key + "=")).encrypt(plain_xml.decode(), app_id).decode()
    if mangle is not None:
        encrypted = mangle(encrypted)
    query = plain_query(timestamp, nonce)
    query.update(encrypt_type="aes", msg_signature=sign(TOKEN, query["timestamp"], nonce, encrypted))
    body = to_xml({"ToUserName": "gh_sandbox000001", "Encrypt": encrypted})
    return query, body


async def post(h: Harness, query: dict[str, str], body: Any, **kw: Any) -> tuple[int, bytes]:
    assert h.http is not None
    async with h.http.post(h.url + "/wechat", params=query, data=body, **kw) as resp:
        return resp.status, await resp.read()


async def push(h: Harness, xml: bytes, *, safe: bool = False,
               query: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST one push as WeChat does (plain, or encrypted and signed in safe mode), signed with a
    fresh nonce unless `query` is given (plain mode); the status, and for a 200 what the answer
    says: "success", or the reply's fields but CreateTime (decrypted in safe mode)."""
    nonce = secrets.token_hex(8)
    if safe:
        query, body = safe_envelope(xml, nonce=nonce)
    else:
        query, body = query or plain_query(nonce=nonce), xml
    status, raw = await post(h, query, body)
    return status, read_reply(raw) if status == 200 else raw


def read_reply(raw: bytes) -> Any:
    if raw == b"success":
        return "success"
    fields = xmltodict.parse(raw)["xml"]
    if "Encrypt" in fields:
        inner = PrpCrypto(base64.b64decode(AES_KEY + "=")).decrypt(fields["Encrypt"], APP_ID)
        fields = xmltodict.parse(inner)["xml"]
    fields.pop("CreateTime", None)
    return fields


async def stored(h: Harness) -> dict[str, int]:
    """Rows by table; processed_messages are the updates' dedupe keys, signed_queries the signed
    queries of plain mode remembered beside them."""
    async with h.app[SESSIONMAKER]() as session:
        return {m.__tablename__: await session.scalar(select(func.count()).select_from(m))
                for m in (ProcessedMessage, SignedQueryRow, Follower, Distributor, ConversationState, OutboxMessage)}


NOTHING = {"processed_messages": 0, "followers": 0, "distributors": 0, "conversation_states": 0, "outbox": 0,
           "signed_queries": 0}


@contextlib.asynccontextmanager
async def webhook_harness(db_url: str, *, safe: bool) -> AsyncIterator[Harness]:
    """The bot in plain or safe mode (this module's AES key) with its own sandbox platform."""
    key = AES_KEY if safe else ""
    platform = Platform(app_id=APP_ID, app_secret="sandbox-secret", token=TOKEN, encoding_aes_key=key,
                        template_ids=frozenset({"tmpl-notice"}))
    server = TestServer(create_sandbox_app(platform))
    await server.start_server()
    try:
        async with Harness(make_config(db_url, wechat={"encoding_aes_key": key}), platform, server,
                           reply_deadline=2.0) as h:
            yield h
    finally:
        await server.close()


@pytest.fixture
async def safe_harness(db_url: str) -> AsyncIterator[Harness]:
    async with webhook_harness(db_url, safe=True) as h:
        yield h
