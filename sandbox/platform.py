"""A stand-in for WeChat's platform: the server API distbot calls (token, ticket/getticket, qrcode/create,
media/upload, media/uploadnews, message/custom/send (within the user's quota: quota.py), message/template/send, message/mass/send (its rules in mass.py),
menu/create) with WeChat's documented payloads and error codes, and the user side, which signs (and in safe mode
encrypts) messages and posts them to the webhook the way WeChat does, retries included.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import xmltodict
from wechatpy.crypto import PrpCrypto

from sandbox.cs_quota import MESSAGE, Quota, grant_of
from domain.clock import Clock

TOKEN_TTL = 7200
OLD_TOKEN_GRACE = 300  # a new token leaves the previous one valid for about five minutes
MEDIA_TTL = 3 * 24 * 3600
MAX_IMAGE_BYTES = 10 * 1024 * 1024
WEBHOOK_TIMEOUT = 5.0
WEBHOOK_TRIES = 3

ERRMSG = {
    0: "ok", -1: "system error", 40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type", 40003: "invalid openid", 40004: "invalid media type", 40005: "invalid file type",
    40007: "invalid media_id", 40008: "invalid message type", 40009: "invalid image size",
    40013: "invalid appid", 40016: "invalid button size", 40017: "invalid sub button size",
    40018: "invalid button name size", 40019: "invalid button key size", 40037: "invalid template_id",
    40053: "invalid action info", 46003: "menu no exist", 40125: "invalid appsecret", 40130: "invalid openid list size, at least two openid",
    41001: "access_token missing",
    41006: "media_id missing", 43004: "require subscribe", 44002: "empty post data",
    45009: "reach max api daily quota limit",
    45015: "response out of time limit or subscription is canceled", 45047: "out of response count limit",
    45065: "相同 clientmsgid 已存在群发记录，返回数据中带有已存在的群发任务的 msgid",
    45066: "相同 clientmsgid 重试速度过快，请间隔1分钟重试", 45067: "clientmsgid exceeds limit",
    47001: "data format error", 40097: "invalid args",
}


class PlatformError(Exception):
    def __init__(self, errcode: int, **extra: Any):
        super().__init__(ERRMSG.get(errcode, "error"))
        self.errcode = errcode
        self.extra = extra  # fields WeChat adds to the error answer (45065 carries the earlier job's msg_id)


@dataclass
class SimUser:
    openid: str
    nickname: str
    subscribed: bool = False
    quota: Quota = field(default_factory=Quota)  # the customer-service messages their last action allows
    last_event_time: int = 0
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_interaction(self) -> float:
        return self.quota.opened_at

    @last_interaction.setter
    def last_interaction(self, at: float) -> None:
        """As if the user had written a message at `at` (tests put a user inside or outside the window)."""
        self.quota.open(MESSAGE, at)


@dataclass
class Ticket:
    scene: str
    expires_at: float
    url: str


class Platform:
    def __init__(self, *, app_id: str, app_secret: str, token: str, encoding_aes_key: str = "", webhook_url: str = "",
                 template_ids: frozenset[str] | None = None, clock: Callable[[], float] | None = None):
        self.app_id, self.app_secret, self.token = app_id, app_secret, token
        self.aes_key = base64.b64decode(encoding_aes_key + "=") if encoding_aes_key else None
        self.webhook_url = webhook_url
        self.account = "gh_sandbox000001"
        self.template_ids = template_ids  # None: any non-empty template_id is accepted
        self.clock: Callable[[], float] = clock or Clock().epoch  # WeChat's time (tests: the app's clock)
        self.tokens: dict[str, float] = {}
        self.jsapi_tickets: dict[str, float] = {}
        self.users: dict[str, SimUser] = {}
        self.media: dict[str, tuple[bytes, str, float]] = {}
        self.tickets: dict[str, Ticket] = {}
        self.menu: dict[str, Any] | None = None
        self.calls: list[tuple[str, dict[str, Any]]] = []  # every successful API call: (endpoint, body)
        self.fail_next: dict[str, list[int]] = {}  # endpoint -> errcodes to answer before succeeding
        self.latency = 0.0  # seconds every cgi-bin call waits before it is handled (benchmarks: a real network)
        # endpoint -> an event its answers (errors too) wait for once the call is done: an answer slow
        # on its way back (tests deliver WeChat's later events, or kill the caller, before it arrives)
        self.held_answers: dict[str, asyncio.Event] = {}
        # Mass messages (sandbox/mass_send.py): msg_id -> the job (clientmsgid, created_at, openids,
        # sent/errors, total/filter/sent/error counts); (openid, "YYYY-MM" in China) -> messages received
        # that month; the times of the recent calls (60 a minute); the delay of the MASSSENDJOBFINISH event.
        self.mass_jobs: dict[int, dict[str, Any]] = {}
        self.mass_received: dict[tuple[str, str], int] = {}
        self.mass_calls: deque[float] = deque()
        self.mass_finish_delay = 0.2
        self._msg_ids = itertools.count(int(self.clock() * 1_000_000))  # unique across restarts too
        self.item_ids = itertools.count(1)  # timeline items' ids, across users
        self.on_change: Callable[[SimUser], None] = lambda user: None  # a user or their timeline changed

    # ---- server API ---------------------------------------------------------------------
    def issue_token(self, appid: str, secret: str, grant_type: str) -> dict[str, Any]:
        if grant_type != "client_credential":
            raise PlatformError(40002)
        if appid != self.app_id:
            raise PlatformError(40013)
        if secret != self.app_secret:
            raise PlatformError(40125)
        return {"access_token": self._renew(self.tokens, 96), "expires_in": TOKEN_TTL}

    def _renew(self, issued: dict[str, float], nbytes: int) -> str:
        """A new credential valid TOKEN_TTL; those issued before stay valid OLD_TOKEN_GRACE more."""
        now = self.clock()
        for old, expires in list(issued.items()):
            issued[old] = min(expires, now + OLD_TOKEN_GRACE)
        new = secrets.token_urlsafe(nbytes)
        issued[new] = now + TOKEN_TTL
        return new

    def check_token(self, token: str | None) -> None:
        if not token:
            raise PlatformError(41001)
        if self.tokens.get(token, 0) <= self.clock():
            raise PlatformError(40001)

    def issue_jsapi_ticket(self, kind: str) -> dict[str, Any]:
        """ticket/getticket?type=jsapi: the JS-SDK ticket, valid 7,200 s; a new one retires the old
        after a grace like the access token's. The page signs wx.config with it (jsapi_signature)."""
        if kind != "jsapi":
            raise PlatformError(40097)
        return {"errcode": 0, "errmsg": "ok", "ticket": self._renew(self.jsapi_tickets, 64), "expires_in": TOKEN_TTL}

    def injected_failure(self, endpoint: str) -> None:
        queue = self.fail_next.get(endpoint)
        if queue:
            raise PlatformError(queue.pop(0))

    def _user(self, openid: Any) -> SimUser:
        user = self.users.get(openid) if isinstance(openid, str) else None
        if user is None:
            raise PlatformError(40003)
        if not user.subscribed:
            raise PlatformError(43004)
        return user

    def custom_send(self, body: dict[str, Any]) -> None:
        user = self._user(body.get("touser"))
        refusal = user.quota.refusal(self.clock())
        if refusal is not None:
            raise PlatformError(refusal)
        kind = body.get("msgtype")
        if kind == "text":
            content = (body.get("text") or {}).get("content")
            if not isinstance(content, str) or not content:
                raise PlatformError(47001)
            self._show(user, {"type": "text", "content": content}, via="custom")
        elif kind == "image":
            media_id = (body.get("image") or {}).get("media_id")
            self._media(media_id)
            self._show(user, {"type": "image", "media_id": media_id}, via="custom")
        elif kind == "news":
            articles = (body.get("news") or {}).get("articles")
            if not isinstance(articles, list) or not articles:
                raise PlatformError(47001)
            self._show(user, {"type": "news", "articles": articles}, via="custom")
        else:
            raise PlatformError(40008)
        user.quota.spend()

    def template_send(self, body: dict[str, Any]) -> None:
        user = self._user(body.get("touser"))
        tid = body.get("template_id")
        if not isinstance(tid, str) or not tid or (self.template_ids is not None and tid not in self.template_ids):
            raise PlatformError(40037)
        if not isinstance(body.get("data"), dict):
            raise PlatformError(47001)
        self._show(user, {"type": "template", "template_id": tid, "data": body["data"],
                          "url": body.get("url", "")}, via="template")

    def upload_media(self, kind: str, content: bytes | None, content_type: str) -> dict[str, Any]:
        if kind != "image":
            raise PlatformError(40004)
        if not content:
            raise PlatformError(41006 if content is None else 44002)
        if not (content.startswith(b"\xff\xd8\xff") or content.startswith(b"\x89PNG")):
            raise PlatformError(40005)
        if len(content) > MAX_IMAGE_BYTES:
            raise PlatformError(40009)
        media_id = secrets.token_urlsafe(48)
        now = self.clock()
        self.media[media_id] = (content, "image/png" if content.startswith(b"\x89PNG") else "image/jpeg", now)
        return {"type": "image", "media_id": media_id, "created_at": int(now)}

    def _media(self, media_id: Any) -> tuple[bytes, str, float]:
        item = self.media.get(media_id) if isinstance(media_id, str) else None
        if item is None or not item[1].startswith("image/") or self.clock() - item[2] > MEDIA_TTL:
            raise PlatformError(40007)
        return item

    def create_qrcode(self, body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action_name")
        scene = ((body.get("action_info") or {}).get("scene") or {})
        if action in ("QR_STR_SCENE", "QR_LIMIT_STR_SCENE"):
            value = scene.get("scene_str")
            if not isinstance(value, str) or not 1 <= len(value) <= 64:
                raise PlatformError(40053)
        elif action in ("QR_SCENE", "QR_LIMIT_SCENE"):
            value = scene.get("scene_id")
            if not isinstance(value, int) or value <= 0:
                raise PlatformError(40053)
            value = str(value)
        else:
            raise PlatformError(40053)
        expire = int(body.get("expire_seconds") or 60) if "LIMIT" not in action else 0
        expire = min(max(expire, 60), 2_592_000) if expire else 0
        ticket = "gQ" + secrets.token_urlsafe(40)
        url = "http://weixin.qq.com/q/" + secrets.token_urlsafe(16)
        self.tickets[ticket] = Ticket(value, self.clock() + expire if expire else float("inf"), url)
        answer: dict[str, Any] = {"ticket": ticket, "url": url}
        if expire:
            answer["expire_seconds"] = expire
        return answer

    def create_menu(self, body: dict[str, Any]) -> None:
        buttons = body.get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            raise PlatformError(40016)
        for b in buttons:
            if not isinstance(b, dict) or not 0 < len(str(b.get("name", "")).encode()) <= 16:
                raise PlatformError(40018)
            subs = b.get("sub_button")
            if subs is None:
                continue
            if not isinstance(subs, list) or not 1 <= len(subs) <= 5:
                raise PlatformError(40017)
            for s in subs:
                if not isinstance(s, dict) or not 0 < len(str(s.get("name", "")).encode()) <= 60:
                    raise PlatformError(40018)
                if s.get("type") == "click" and not 0 < len(str(s.get("key", "")).encode()) <= 128:
                    raise PlatformError(40019)
        self.menu = body

    def current_menu(self) -> dict[str, Any]:
        """menu/get: the menu made through the API, as WeChat shows it (46003: none yet)."""
        if self.menu is None:
            raise PlatformError(46003)
        return {"menu": self.menu}

    def scene_of(self, url_or_ticket: str) -> str | None:
        for ticket, t in self.tickets.items():
            if url_or_ticket in (ticket, t.url) and t.expires_at > self.clock():
                return t.scene
        return None

    # ---- the user side ------------------------------------------------------------------
    def user(self, openid: str | None = None, nickname: str = "") -> SimUser:
        openid = openid or "o" + secrets.token_urlsafe(20)[:27]
        if openid not in self.users:
            self.users[openid] = SimUser(openid, nickname or f"用户{len(self.users) + 1}")
            self.on_change(self.users[openid])
        return self.users[openid]

    def _show(self, user: SimUser, item: dict[str, Any], via: str) -> None:
        user.timeline.append({"id": next(self.item_ids), "from": "bot" if via != "user" else "user", "via": via,
                              "at": int(self.clock()), **item})
        self.on_change(user)

    def message_fields(self, user: SimUser, kind: str, **kw: Any) -> dict[str, Any]:
        created = int(self.clock())
        if kind != "text":
            # WeChat tells events apart by sender and CreateTime: one event a second per user.
            created = max(created, user.last_event_time + 1)
            user.last_event_time = created
        fields: dict[str, Any] = {"ToUserName": self.account, "FromUserName": user.openid,
                                  "CreateTime": str(created)}
        if kind == "text":
            fields.update(MsgType="text", Content=kw["content"], MsgId=str(next(self._msg_ids)))
        else:
            event = {"subscribe": "subscribe", "unsubscribe": "unsubscribe", "scan": "SCAN",
                     "click": "CLICK", "view": "VIEW", "location": "LOCATION"}[kind]
            fields.update(MsgType="event", Event=event)
            if kind in ("click", "view"):  # a VIEW's key is the link the menu opened
                fields["EventKey"] = kw["key"]
            elif kind == "location":
                fields.update(Latitude=kw.get("latitude", "31.2304"), Longitude=kw.get("longitude", "121.4737"),
                              Precision="65.0")
            elif kind == "subscribe" and kw.get("scene"):
                fields.update(EventKey="qrscene_" + kw["scene"], Ticket=kw.get("ticket", ""))
            elif kind == "scan":
                fields.update(EventKey=kw["scene"], Ticket=kw.get("ticket", ""))
        return fields

    def sign(self, *parts: str) -> str:
        return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()

    def envelope(self, fields: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """Query string and body of the webhook POST, as WeChat signs (and encrypts) them."""
        xml = xmltodict.unparse({"xml": fields}, full_document=False)
        timestamp, nonce = str(int(self.clock())), secrets.token_hex(5)
        query = {"timestamp": timestamp, "nonce": nonce, "openid": fields["FromUserName"],
                 "signature": self.sign(self.token, timestamp, nonce)}
        if self.aes_key is None:
            return query, xml.encode()
        encrypted = PrpCrypto(self.aes_key).encrypt(xml, self.app_id).decode()
        query.update(encrypt_type="aes", msg_signature=self.sign(self.token, timestamp, nonce, encrypted))
        body = xmltodict.unparse({"xml": {"ToUserName": self.account, "Encrypt": encrypted}}, full_document=False)
        return query, body.encode()

    def open_reply(self, body: bytes) -> dict[str, Any] | None:
        text = body.decode("utf-8", "replace").strip()
        if not text or text == "success":
            return None
        fields = xmltodict.parse(text)["xml"]
        if self.aes_key is not None:
            fields = xmltodict.parse(PrpCrypto(self.aes_key).decrypt(fields["Encrypt"], self.app_id))["xml"]
        kind = fields.get("MsgType")
        if kind == "text":
            return {"type": "text", "content": fields.get("Content", "")}
        if kind == "image":
            return {"type": "image", "media_id": fields["Image"]["MediaId"]}
        if kind == "news":
            items = fields["Articles"]["item"]
            items = items if isinstance(items, list) else [items]
            return {"type": "news", "articles": [{"title": a.get("Title", ""), "description": a.get("Description", ""),
                                                  "url": a.get("Url", ""), "picurl": a.get("PicUrl", "")}
                                                 for a in items]}
        return {"type": str(kind)}

    async def send(self, http: aiohttp.ClientSession, user: SimUser, kind: str, **kw: Any) -> dict[str, Any] | None:
        """Post one message or event to the webhook; retry like WeChat; show the reply."""
        if kind == "subscribe":
            user.subscribed = True
        elif kind == "unsubscribe":
            user.subscribed = False
        fields = self.message_fields(user, kind, **kw)
        grant = grant_of(fields)
        if grant is not None:
            user.quota.open(grant, self.clock())
        shown = {"text": {"type": "text", "content": kw.get("content", "")},
                 "click": {"type": "click", "key": kw.get("key", "")},
                 "view": {"type": "view", "url": kw.get("key", "")},
                 "location": {"type": "event", "event": "location"},
                 "subscribe": {"type": "event", "event": "subscribe", "scene": kw.get("scene", "")},
                 "scan": {"type": "event", "event": "scan", "scene": kw.get("scene", "")},
                 "unsubscribe": {"type": "event", "event": "unsubscribe"}}[kind]
        self._show(user, shown, via="user")
        raw = await self.post(http, fields)
        reply = self.open_reply(raw) if raw is not None else None
        if reply is not None:
            self._show(user, reply, via="passive")
        return reply

    async def post(self, http: aiohttp.ClientSession, fields: dict[str, Any]) -> bytes | None:
        """POST one message or event to the webhook, signed afresh for each of WeChat's tries; the
        answer's body, or None when no try got an answer."""
        for _ in range(WEBHOOK_TRIES):
            query, body = self.envelope(fields)
            try:
                async with http.post(self.webhook_url, params=query, data=body,
                                     timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)) as resp:
                    raw = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"webhook answered HTTP {resp.status}: {raw[:200]!r}")
            except (TimeoutError, aiohttp.ClientError):
                continue
            return raw
        return None

    async def wait_for(self, openid: str, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first timeline item matching predicate (tests use it for late messages)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.users[openid].timeline:
                if predicate(item):
                    return item
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no matching message for {openid}")
