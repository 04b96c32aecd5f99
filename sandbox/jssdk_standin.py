"""The sandbox's JS-SDK: static/jweixin.js stands in for WeChat's jweixin-1.6.0.js on our pages and
reports here what a page passes to wx.config, updateAppMessageShareData and
updateTimelineShareData. A config is checked as WeChat checks it (appId, and the signature made
with a valid jsapi_ticket over the page's URL), and the answer decides whether the stand-in runs
the page's wx.ready or wx.error. GET sim/jssdk lists the calls, newest last."""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

from aiohttp import web

from sandbox.platform import Platform

CALLS = web.AppKey("jssdk_calls", deque[dict[str, Any]])
KINDS = ("config", "updateAppMessageShareData", "updateTimelineShareData")
KEPT = 200


def add_routes(app: web.Application, platform: Platform) -> None:
    app[CALLS] = deque(maxlen=KEPT)

    async def record(request: web.Request) -> web.Response:
        """{"kind", "url" (the page's, without #fragment), "data" (what the page passed), "ready"}"""
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not (isinstance(body, dict) and body.get("kind") in KINDS and isinstance(body.get("url"), str)
                and isinstance(body.get("data"), dict)):
            return web.json_response({"error": "kind, url and data expected"}, status=400)
        call = {"kind": body["kind"], "url": body["url"], "data": body["data"], "at": platform.clock()}
        if body["kind"] == "config":
            call["ok"] = signature_valid(platform, body["data"], body["url"])
        else:  # as in WeChat: only after a config that passed, and only the APIs it listed
            call["ok"] = body.get("ready") is True
        app[CALLS].append(call)
        return web.json_response({"ok": call["ok"]})

    async def calls(request: web.Request) -> web.Response:
        return web.json_response({"calls": list(app[CALLS])})

    app.router.add_post("/sim/jssdk", record)
    app.router.add_get("/sim/jssdk", calls)


def signature_valid(platform: Platform, config: dict[str, Any], url: str) -> bool:
    """Whether a page's wx.config would pass in WeChat: appId, and the sha1 of
    jsapi_ticket=…&noncestr=…&timestamp=…&url=… with a ticket still valid."""
    if config.get("appId") != platform.app_id:
        return False
    now = platform.clock()
    for ticket, exp in platform.jsapi_tickets.items():
        if exp <= now:
            continue
        plain = f"jsapi_ticket={ticket}&noncestr={config.get('nonceStr')}&timestamp={config.get('timestamp')}&url={url}"
        if hashlib.sha1(plain.encode()).hexdigest() == config.get("signature"):
            return True
    return False
