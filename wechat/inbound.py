"""The WeChat webhook: verify, decrypt, parse, dispatch, render. No SQL, no rules."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
from typing import Any
from functools import lru_cache
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from aiohttp import web
from wechatpy.crypto import PrpCrypto

from kit.chat import Incoming
from wechat.replays import Replayed, SignedQuery
from domain.config import Config
from wechat.passive_xml import passive_reply_xml
from kit.app_keys import CLOCK, CONFIG
from wechat.wechat_keys import DISPATCHER

MAX_BODY = 256 * 1024
MAX_CLOCK_SKEW = 300
_FORBIDDEN_XML = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# ASCII digits only (str.isdigit() takes "²", which int() refuses), at most a uint64's 20.
_NUMBER = re.compile(r"[0-9]{1,20}")
MAX_OPENID = 64  # the width of every openid column
MAX_DEPTH = 32  # levels of elements, <xml> the first: WeChat's deepest push has 5

log = logging.getLogger(__name__)


class BadDelivery(Exception):
    """A request to /wechat that is refused before anything is processed (status, reason)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _check(expected: str, given: str | None) -> None:
    if not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise BadDelivery(403, "bad signature")


def _check_query(config: Config, query: Any, now: float) -> tuple[str, str, str]:
    """The query's timestamp, nonce and signature, once the signature and the clock (`now`, seconds
    since 1970) hold."""
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    signature = sign(config.wechat.token, timestamp, nonce)
    _check(signature, query.get("signature"))
    try:
        skew = abs(now - int(timestamp))
    except (ValueError, OverflowError):
        raise BadDelivery(403, "bad timestamp") from None
    if skew > MAX_CLOCK_SKEW:
        raise BadDelivery(403, "stale timestamp")
    return timestamp, nonce, signature


def parse_xml(body: bytes) -> dict[str, Any]:
    """A flat <xml> document; DOCTYPE and entities refused before expat sees them."""
    if _FORBIDDEN_XML.search(body):
        raise BadDelivery(400, "DOCTYPE and entities are not allowed")
    try:
        # WeChat sends UTF-8. Checking it first also stops a UTF-16 byte-order mark from
        # overriding the parser's encoding and hiding a DOCTYPE from the byte-level check.
        if b"\x00" in body:
            raise ValueError("NUL byte")
        body.decode("utf-8")
        parser = ElementTree.XMLParser(encoding="utf-8")
        parser.feed(body)
        root = parser.close()
    except (ElementTree.ParseError, ValueError):
        raise BadDelivery(400, "malformed XML") from None
    if root.tag != "xml":
        raise BadDelivery(400, "no <xml> root")
    return _fields(root)


def _fields(element: ElementTree.Element, depth: int = 1) -> dict[str, Any]:
    """Children as a dict, the way xmltodict reads a flat document: text with the whitespace
    around it trimmed (`<MsgType> <![CDATA[text]]> </MsgType>` is "text"), or nested dicts."""
    if depth >= MAX_DEPTH and len(element):
        raise BadDelivery(400, f"XML nested deeper than {MAX_DEPTH} levels")
    return {child.tag: _fields(child, depth + 1) if len(child) else (child.text and child.text.strip())
            for child in element}


_EVENT_COMMON = frozenset({"ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "EventKey"})


def to_incoming(fields: dict[str, Any]) -> Incoming:
    """The update as distbot sees it, read the way wechatpy's parser reads it."""
    for name in ("ToUserName", "FromUserName", "CreateTime", "MsgType"):
        if not isinstance(fields.get(name), str) or not fields[name].strip():
            raise BadDelivery(400, f"missing {name}")
    if not _NUMBER.fullmatch(fields["CreateTime"]):
        raise BadDelivery(400, "bad CreateTime")
    if len(fields["FromUserName"]) > MAX_OPENID:
        raise BadDelivery(400, "bad FromUserName")
    common = {"openid": fields["FromUserName"], "account": fields["ToUserName"],
              "create_time": int(fields["CreateTime"])}
    kind = fields["MsgType"].lower()
    if kind == "event":
        event = str(fields.get("Event") or "").lower()
        key = fields.get("EventKey") or ""
        if not event or not isinstance(key, str):
            raise BadDelivery(400, "bad event")
        if event == "subscribe" and key.startswith("qrscene_"):
            event, key = "subscribe_scan", key[len("qrscene_"):]
        elif event == "subscribe":
            key = ""
        extra = tuple((k, v) for k, v in fields.items() if k not in _EVENT_COMMON and isinstance(v, str))
        return Incoming(kind="event", event=event, event_key=key.strip(), fields=extra,
                        msg_id=_msg_id(fields) or 0, **common)
    msg_id = _msg_id(fields)
    if msg_id is None:
        raise BadDelivery(400, "missing MsgId")
    content = fields.get("Content") if kind == "text" else ""
    if not isinstance(content, str | None):
        raise BadDelivery(400, "bad Content")
    return Incoming(kind=kind, msg_id=msg_id, content=(content or "").strip(), **common)


def _msg_id(fields: dict[str, Any]) -> int | None:
    """MsgId, or MsgID as some pushes spell it (MASSSENDJOBFINISH, TEMPLATESENDJOBFINISH)."""
    value = fields.get("MsgId", fields.get("MsgID"))
    return int(value) if isinstance(value, str) and _NUMBER.fullmatch(value) else None


async def verify(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    try:
        _check_query(config, request.query, request.app[CLOCK].epoch())
    except BadDelivery as e:
        return _refuse(request, e)
    return web.Response(text=request.query.get("echostr", ""))


def _refuse(request: web.Request, e: BadDelivery) -> web.Response:
    """The answer to a refused request, logged with its reason (a flood of them is an attack)."""
    log.warning("wechat request refused: %s", e.reason,
                extra={"status": e.status, "method": request.method, "peer": request.remote})
    return web.Response(status=e.status, text=e.reason)


async def receive(request: web.Request) -> web.Response:
    config, now = request.app[CONFIG], request.app[CLOCK].epoch()
    try:
        timestamp, nonce, signature = _check_query(config, request.query, now)
        body = await _read_body(request)
        fields = parse_xml(body)
        crypto, query = None, None
        if config.wechat.safe_mode:
            crypto = _crypto(config.wechat.encoding_aes_key)
            encrypted = fields.get("Encrypt")
            if not isinstance(encrypted, str):
                raise BadDelivery(400, "safe mode expects <Encrypt>")
            _check(sign(config.wechat.token, timestamp, nonce, encrypted), request.query.get("msg_signature"))
            try:
                plain = crypto.decrypt(encrypted, config.wechat.app_id)
            except Exception:  # wrong key, padding or AppID: same answer for all
                raise BadDelivery(400, "cannot decrypt") from None
            fields = parse_xml(plain.encode())
        else:  # the signature covers no body: this query is good for this body alone
            query = SignedQuery.of(timestamp, signature, body)
        msg = to_incoming(fields)
        reply = await request.app[DISPATCHER].submit(msg, query)
    except BadDelivery as e:
        return _refuse(request, e)
    except Replayed:
        return _refuse(request, BadDelivery(403, "signed query used before with another body"))
    now = request.app[CLOCK].epoch()
    xml = passive_reply_xml(reply, account=msg.account, openid=msg.openid, at=now)
    if crypto is None or reply is None:
        return web.Response(text=xml, content_type="application/xml" if reply else "text/plain")
    return web.Response(text=_encrypt(config, crypto, xml, nonce, now), content_type="application/xml")


async def _read_body(request: web.Request) -> bytes:
    length = request.content_length
    if length is not None:  # the HTTP parser holds the body to exactly this length
        if length > MAX_BODY:
            raise BadDelivery(400, "body too large")
        try:
            return await request.content.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:  # the sender went away half way
            raise BadDelivery(400, "incomplete body") from None
    # Chunked: StreamReader.read(n) returns what is buffered, not n bytes: read until EOF, capped.
    body = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise BadDelivery(400, "body too large")
    return bytes(body)


@lru_cache(maxsize=4)
def _crypto(encoding_aes_key: str) -> PrpCrypto:
    return PrpCrypto(base64.b64decode(encoding_aes_key + "="))


def _encrypt(config: Config, crypto: PrpCrypto, xml: str, nonce: str, now: float) -> str:
    timestamp = str(int(now))
    encrypted = crypto.encrypt(xml, config.wechat.app_id).decode()
    signature = sign(config.wechat.token, timestamp, nonce, encrypted)
    return (f"<xml><Encrypt>{encrypted}</Encrypt><MsgSignature>{signature}</MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{escape(nonce)}</Nonce></xml>")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/wechat", verify)
    app.router.add_post("/wechat", receive)
