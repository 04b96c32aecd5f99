"""A thin async client over the documented WeChat endpoints; never blocks the event loop.

The access token and the JS-SDK's jsapi_ticket live in the database, shared by every process; one
refresher at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import select, text

from kit.metrics import Metrics
from domain.clock import Clock
from domain.messages import Image, MpNews, News, Reply, Text
from domain.quota import OUTSIDE as OUTSIDE_WINDOW, SPENT as QUOTA_SPENT  # the customer-service quota's errors
from storage.durable_queue import Backoff
from storage.models import AccessToken
from storage.writer import Writer

log = logging.getLogger(__name__)

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
BUSY_ERRORS = frozenset({-1, 45009, 45011})
NOT_FOLLOWING = 43004
MASS_REPEATED = 45065  # this clientmsgid was sent already: the answer carries its msg_id
MASS_TOO_SOON = 45066  # the same clientmsgid again within a minute: try again after it
CALL_TIMEOUT = aiohttp.ClientTimeout(total=10)
BUSY = Backoff(0.2, factor=4, tries=3)  # a busy answer: two more tries, 0.2 s and 0.8 s later


class WeChatError(Exception):
    def __init__(self, errcode: int, errmsg: str, data: dict[str, Any] | None = None):
        super().__init__(f"WeChat error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.data = data or {}  # the whole answer (45065 names the earlier mass send's msg_id)

    @property
    def retryable(self) -> bool:
        return self.errcode in BUSY_ERRORS or self.errcode in (QUOTA_SPENT, MASS_TOO_SOON)


class WeChatUnreachable(WeChatError):
    def __init__(self, detail: str):
        super().__init__(-2, f"unreachable: {detail}")

    @property
    def retryable(self) -> bool:
        return True


class WeChatAPI:
    def __init__(self, *, base_url: str, app_id: str, app_secret: str,
                 writer: Writer, http: aiohttp.ClientSession, clock: Clock | None = None,
                 metrics: Metrics | None = None):
        self.base_url = base_url
        self.app_id = app_id
        self._secret = app_secret
        self._writer = writer  # the shared token's row, locked while it is fetched
        self._http = http
        self._clock = clock or Clock()
        self._cached: dict[str, tuple[str, datetime]] = {}  # key -> (value, expires_at)
        self._refresh_locks: dict[str, asyncio.Lock] = {}
        self._metrics = metrics  # counts the refreshes (distbot_wechat_token_refreshes_total)

    # ---- access token and jsapi_ticket ----------------------------------------------------------
    async def access_token(self, *, invalid: str | None = None) -> str:
        return await self._shared(self.app_id, self._fetch_token, invalid)

    async def jsapi_ticket(self, *, invalid: str | None = None) -> str:
        """The JS-SDK ticket (wx.config's signature), shared by every process like the token:
        kept in the same table under "jsapi:<app_id>"."""
        # The access token first, outside the ticket's transaction (both live in one table).
        token = await self.access_token()
        try:
            return await self._shared("jsapi:" + self.app_id, lambda: self._fetch_jsapi_ticket(token), invalid)
        except WeChatError as e:
            if e.errcode not in TOKEN_ERRORS:
                raise
        token = await self.access_token(invalid=token)
        return await self._shared("jsapi:" + self.app_id, lambda: self._fetch_jsapi_ticket(token), invalid)

    async def _shared(self, key: str, fetch: Callable[[], Awaitable[tuple[str, int]]], invalid: str | None) -> str:
        now = self._clock.now()
        cached = self._cached.get(key)
        if cached and cached[0] != invalid and cached[1] > now:
            return cached[0]
        async with self._refresh_locks.setdefault(key, asyncio.Lock()):
            async with self._writer.session() as session:
                # SQLite: BEGIN IMMEDIATE already serialises. PostgreSQL: an advisory lock, since
                # FOR UPDATE locks nothing before the first token row exists (two processes would
                # both fetch, and one insert would fail).
                if session.bind.dialect.name == "postgresql":
                    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                                          {"k": "distbot-access-token:" + key})
                row = await session.scalar(
                    select(AccessToken).where(AccessToken.app_id == key).with_for_update())
                if row is not None and row.token != invalid and row.expires_at > now:
                    self._cached[key] = (row.token, row.expires_at)
                    return row.token
                token, expires_in = await self._counted(fetch)
                # Refresh a minute early so that no call goes out with a token about to expire.
                expires_at = now + timedelta(seconds=max(expires_in - 60, 30))
                if row is None:
                    session.add(AccessToken(app_id=key, token=token, expires_at=expires_at, refreshed_at=now))
                else:
                    row.token, row.expires_at, row.refreshed_at = token, expires_at, now
            self._cached[key] = (token, expires_at)
            log.info("access token refreshed" if key == self.app_id else "jsapi ticket refreshed",
                     extra={"app_id": self.app_id})
            return token

    async def _counted(self, fetch: Callable[[], Awaitable[tuple[str, int]]]) -> tuple[str, int]:
        """fetch(), its success or failure counted: an AppSecret changed in the WeChat console, an IP
        not on the whitelist or WeChat unreachable stops every message, so operators are told."""
        m = self._metrics
        try:
            got = await fetch()
        except Exception:
            if m is not None:
                m.child(m.token_refreshes, "error").inc()
            raise
        if m is not None:
            m.child(m.token_refreshes, "ok").inc()
        return got

    async def _fetch_token(self) -> tuple[str, int]:
        data = await self._request("GET", "token", params={
            "grant_type": "client_credential", "appid": self.app_id, "secret": self._secret})
        return data["access_token"], int(data.get("expires_in", 7200))

    async def _fetch_jsapi_ticket(self, access_token: str) -> tuple[str, int]:
        data = await self._request("GET", "ticket/getticket", params={"type": "jsapi", "access_token": access_token})
        return data["ticket"], int(data.get("expires_in", 7200))

    # ---- calls ----------------------------------------------------------------------------
    async def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                       json_body: Any = None, data: Any = None) -> dict[str, Any]:
        body = None
        headers = {}
        if json_body is not None:
            # WeChat wants UTF-8 Chinese as is, not \\u escapes.
            body = json.dumps(json_body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        try:
            async with self._http.request(method, self.base_url + path, params=params,
                                          data=body if body is not None else data, headers=headers,
                                          timeout=CALL_TIMEOUT) as resp:
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise WeChatUnreachable(str(e) or type(e).__name__) from e
        try:
            result = json.loads(raw)
        except ValueError:
            raise WeChatError(-3, f"non-JSON answer (HTTP {resp.status})") from None
        errcode = int(result.get("errcode", 0) or 0)
        if errcode:
            raise WeChatError(errcode, str(result.get("errmsg", "")), result)
        return result

    async def call(self, method: str, path: str, *, json_body: Any = None,
                   form: Any = None, params: dict[str, str] | None = None) -> dict[str, Any]:
        """Call an endpoint with the shared token; refresh once on a token error, back off on busy."""
        token = await self.access_token()
        refreshed = False
        pauses = BUSY.pauses()
        while True:
            data = form() if callable(form) else form
            try:
                return await self._request(method, path, params={**(params or {}), "access_token": token},
                                           json_body=json_body, data=data)
            except WeChatError as e:
                if e.errcode in TOKEN_ERRORS and not refreshed:
                    refreshed = True
                    token = await self.access_token(invalid=token)
                    continue
                if e.errcode in BUSY_ERRORS and (pause := next(pauses, None)) is not None:
                    await asyncio.sleep(pause)
                    continue
                raise

    # ---- endpoints ------------------------------------------------------------------------
    async def send_reply(self, openid: str, reply: Reply) -> None:
        """Send a reply value through the customer-service API."""
        match reply:
            case Text(content):
                body: dict[str, Any] = {"touser": openid, "msgtype": "text", "text": {"content": content}}
            case Image(media_id):
                body = {"touser": openid, "msgtype": "image", "image": {"media_id": media_id}}
            case News(articles):
                body = {"touser": openid, "msgtype": "news", "news": {"articles": [
                    {"title": a.title, "description": a.description, "url": a.url, "picurl": a.image}
                    for a in articles[:1]]}}
            case MpNews():
                raise ValueError("uploaded news goes by mass message only; send its news card instead")
        await self.call("POST", "message/custom/send", json_body=body)

    async def send_mass(self, openids: list[str], reply: Reply, clientmsgid: str) -> int:
        """A mass message (群发) to 2..10,000 followers; its msg_id. A repeat of a clientmsgid that
        WeChat already took answers the first send's msg_id instead of sending again."""
        match reply:
            case Text(content):
                body: dict[str, Any] = {"msgtype": "text", "text": {"content": content}}
            case Image(media_id):
                body = {"msgtype": "image", "image": {"media_id": media_id}}
            case MpNews(media_id):
                body = {"msgtype": "mpnews", "mpnews": {"media_id": media_id}}
            case _:
                raise ValueError("a mass message is a text, an image or uploaded news")
        try:
            data = await self.call("POST", "message/mass/send", json_body={
                "touser": openids, **body, "clientmsgid": clientmsgid, "send_ignore_reprint": 0})
        except WeChatError as e:
            if e.errcode != MASS_REPEATED or "msg_id" not in e.data:
                raise
            data = e.data
        return int(data["msg_id"])

    async def send_template(self, openid: str, template_id: str, data: dict[str, Any], url: str = "") -> None:
        body = {"touser": openid, "template_id": template_id, "data": data}
        if url:
            body["url"] = url
        await self.call("POST", "message/template/send", json_body=body)

    async def upload_image(self, content: bytes, filename: str = "image.jpg",
                           content_type: str = "image/jpeg") -> str:
        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            fd.add_field("media", content, filename=filename, content_type=content_type)
            return fd
        data = await self.call("POST", "media/upload", form=form, params={"type": "image"})
        return data["media_id"]

    async def upload_news(self, articles: list[dict[str, Any]]) -> str:
        """Articles for a mass message (media/uploadnews: 1 to 8, each with an uploaded cover's
        thumb_media_id); the news' media_id, valid 3 days."""
        data = await self.call("POST", "media/uploadnews", json_body={"articles": articles})
        return data["media_id"]

    async def create_qrcode(self, scene: str, expire_seconds: int = 30 * 24 * 3600) -> dict[str, Any]:
        """A temporary parametric QR code; the answer has ticket, expire_seconds and url."""
        return await self.call("POST", "qrcode/create", json_body={
            "expire_seconds": expire_seconds, "action_name": "QR_STR_SCENE",
            "action_info": {"scene": {"scene_str": scene}}})

    async def create_menu(self, menu: dict[str, Any]) -> None:
        await self.call("POST", "menu/create", json_body=menu)
