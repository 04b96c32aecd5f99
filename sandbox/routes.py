"""HTTP face of the sandbox: WeChat's API under cgi-bin/, the simulator's JSON under sim/, the page."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from domain.clock import Clock
from domain.config import Config
from sandbox import jssdk_standin, mass_send as mass
from sandbox.pay_emulator import PayEmulator, create_pay_app
from sandbox.platform import ERRMSG, Platform, PlatformError
from sandbox.sim_store import keeping
from wechat.pay import EmulatorKeys

PLATFORM = web.AppKey("platform", Platform)
SIM_HTTP = web.AppKey("sim_http", aiohttp.ClientSession)
PUSHES = web.AppKey("pushes", set[asyncio.Task[None]])  # events on their way to the webhook (strong refs)
STATIC = Path(__file__).parent / "static"

Endpoint = Callable[[Platform, web.Request, dict[str, Any]], Awaitable[dict[str, Any] | None]]


def _wechat_json(data: dict[str, Any]) -> web.Response:
    return web.Response(text=json.dumps(data, ensure_ascii=False), content_type="application/json")


def _endpoint(name: str, fn: Endpoint, *, needs_token: bool = True, body: bool = True):  # noqa: ANN202
    async def view(request: web.Request) -> web.Response:
        platform = request.app[PLATFORM]
        if platform.latency:
            await asyncio.sleep(platform.latency)
        try:
            if needs_token:
                platform.check_token(request.query.get("access_token"))
            platform.injected_failure(name)
            data: dict[str, Any] = {}
            if body:
                raw = await request.read()
                if not raw:
                    raise PlatformError(44002)
                try:
                    data = json.loads(raw)
                except ValueError:
                    raise PlatformError(47001) from None
                if not isinstance(data, dict):
                    raise PlatformError(47001)
            answer = await fn(platform, request, data)
        except PlatformError as e:
            answer = {"errcode": e.errcode, "errmsg": ERRMSG.get(e.errcode, "error"), **e.extra}
        else:
            platform.calls.append((name, data))
        if name in platform.held_answers:
            await platform.held_answers[name].wait()
        return _wechat_json(answer if answer is not None else {"errcode": 0, "errmsg": "ok"})
    return view


async def _token(p: Platform, r: web.Request, _: dict[str, Any]) -> dict[str, Any]:
    q = r.query
    return p.issue_token(q.get("appid", ""), q.get("secret", ""), q.get("grant_type", ""))


async def _ticket(p: Platform, r: web.Request, _: dict[str, Any]) -> dict[str, Any]:
    return p.issue_jsapi_ticket(r.query.get("type", ""))


async def _custom(p: Platform, r: web.Request, body: dict[str, Any]) -> None:
    p.custom_send(body)


async def _template(p: Platform, r: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    p.template_send(body)
    return {"errcode": 0, "errmsg": "ok", "msgid": len(p.calls) + 1}


async def _mass(p: Platform, r: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    job = mass.send(p, body)
    task = asyncio.create_task(mass.push_finish(p, r.app[SIM_HTTP], job))
    r.app[PUSHES].add(task)
    task.add_done_callback(r.app[PUSHES].discard)
    return {"errcode": 0, "errmsg": "send job submission success", "msg_id": job["msg_id"],
            "msg_data_id": job["msg_data_id"]}


async def _uploadnews(p: Platform, r: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    return mass.upload_news(p, body)


async def _qrcode(p: Platform, r: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    return p.create_qrcode(body)


async def _menu(p: Platform, r: web.Request, body: dict[str, Any]) -> None:
    p.create_menu(body)


async def _menu_get(p: Platform, r: web.Request, _: dict[str, Any]) -> dict[str, Any]:
    return p.current_menu()


async def _upload(p: Platform, r: web.Request, _: dict[str, Any]) -> dict[str, Any]:
    content, ctype = None, ""
    if r.content_type.startswith("multipart/"):
        reader = await r.multipart()
        async for part in reader:
            if isinstance(part, aiohttp.BodyPartReader) and part.name == "media":
                content = await part.read(decode=False)
                ctype = part.headers.get("Content-Type", "")
    return p.upload_media(r.query.get("type", ""), content, ctype)


# ---- the simulator's own JSON -----------------------------------------------------------------
def _user_json(u: Any, now: float) -> dict[str, Any]:
    return {"openid": u.openid, "nickname": u.nickname, "subscribed": u.subscribed, "quota": u.quota.state(now)}


async def sim_state(request: web.Request) -> web.Response:
    p = request.app[PLATFORM]
    return web.json_response({"users": [_user_json(u, p.clock()) for u in p.users.values()], "menu": p.menu,
                              "safe_mode": p.aes_key is not None})


async def sim_new_user(request: web.Request) -> web.Response:
    data = await request.json() if request.can_read_body else {}
    p = request.app[PLATFORM]
    return web.json_response(_user_json(p.user(nickname=str(data.get("nickname", ""))[:20]), p.clock()))


async def sim_send(request: web.Request) -> web.Response:
    """{"openid", "type": text|click|view|location|subscribe|scan|unsubscribe, "content"|"key"|"scene"|"qr"}"""
    p = request.app[PLATFORM]
    data = await request.json()
    user = p.users.get(data.get("openid", ""))
    kind = data.get("type")
    if user is None or kind not in ("text", "click", "view", "location", "subscribe", "scan", "unsubscribe"):
        return web.json_response({"error": "没有这个模拟用户，或不支持这种消息类型"}, status=400)
    kw: dict[str, Any] = {}
    if kind == "text":
        kw["content"] = str(data.get("content", ""))[:2000]
    elif kind in ("click", "view"):
        kw["key"] = str(data.get("key", ""))
    elif kind in ("subscribe", "scan"):
        qr = str(data.get("qr", "")).strip()
        scene = p.scene_of(qr) if qr else str(data.get("scene", "")).strip()
        if qr and scene is None:
            return web.json_response({"error": "这个二维码无效或已过期"}, status=400)
        if kind == "subscribe" and user.subscribed and scene:
            kind = "scan"  # a follower who scans gets SCAN, not subscribe
        if kind == "scan" and not scene:
            return web.json_response({"error": "扫码需要二维码的场景值：填写邀请人的推广码"}, status=400)
        kw["scene"] = scene or ""
    try:
        reply = await p.send(request.app[SIM_HTTP], user, kind, **kw)
    except RuntimeError as e:
        return web.json_response({"error": str(e)}, status=502)
    return web.json_response({"reply": reply})


async def sim_messages(request: web.Request) -> web.Response:
    p = request.app[PLATFORM]
    user = p.users.get(request.query.get("openid", ""))
    if user is None:
        return web.json_response({"messages": []})
    after = int(request.query.get("after", "0") or 0)
    return web.json_response({"messages": [m for m in user.timeline if m["id"] > after]})


async def sim_age(request: web.Request) -> web.Response:
    """Pretend the action that opened the user's customer-service grant was `hours` (or `seconds`)
    ago: the grant keeps its kind and what is used of it (to see the 48-hour and 1-minute rules)."""
    p = request.app[PLATFORM]
    data = await request.json()
    user = p.users.get(data.get("openid", ""))
    if user is None:
        return web.json_response({"error": "没有这个模拟用户"}, status=400)
    ago = float(data["seconds"]) if "seconds" in data else float(data.get("hours", 49)) * 3600
    user.quota.opened_at = p.clock() - ago
    p.on_change(user)
    return web.json_response({"ok": True, "quota": user.quota.state(p.clock())})


class QrDecoderMissing(Exception):
    """zxing-cpp (the test extra) is not installed, so the simulator cannot read QR codes in pictures."""


def _qr_texts(content: bytes) -> list[str]:
    """The texts of the QR codes in an image (CPU work: run it in a thread)."""
    try:
        import zxingcpp  # lazily: only the simulator's "scan the picture" needs it
    except ImportError:
        raise QrDecoderMissing from None
    with Image.open(io.BytesIO(content)) as img:
        barcodes = zxingcpp.read_barcodes(img.convert("L"), formats=zxingcpp.BarcodeFormat.QRCode)
    return [b.text for b in barcodes if b.text]


async def sim_scan(request: web.Request) -> web.Response:
    """{"openid", "media_id"}: the user scans the QR code in a picture the bot sent (a poster) and
    follows through its scene — subscribe with the scene, or SCAN when they already follow."""
    p = request.app[PLATFORM]
    data = await request.json()
    user = p.users.get(data.get("openid", ""))
    item = p.media.get(data.get("media_id", ""))
    if user is None or item is None:
        return web.json_response({"error": "没有这个模拟用户或这张图片"}, status=400)
    try:
        texts = await asyncio.to_thread(_qr_texts, item[0])
    except QrDecoderMissing:
        return web.json_response({"error": "识别图中二维码需要 Python 包 zxing-cpp，请先安装：pip install zxing-cpp"},
                                 status=501)
    except (OSError, ValueError, Image.DecompressionBombError):
        return web.json_response({"error": "这张图片无法读取"}, status=400)
    if not texts:
        return web.json_response({"error": "图片里没有找到二维码"}, status=400)
    scene = next((s for s in map(p.scene_of, texts) if s), None)
    if scene is None:
        return web.json_response({"error": "图中的二维码不是本公众号的，或已过期"}, status=400)
    kind = "scan" if user.subscribed else "subscribe"
    try:
        reply = await p.send(request.app[SIM_HTTP], user, kind, scene=scene)
    except RuntimeError as e:
        return web.json_response({"error": str(e)}, status=502)
    return web.json_response({"reply": reply, "event": kind, "scene": scene})


async def media(request: web.Request) -> web.Response:
    item = request.app[PLATFORM].media.get(request.match_info["media_id"])
    if item is None:
        raise web.HTTPNotFound()
    return web.Response(body=item[0], content_type=item[1])


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def to_page(request: web.Request) -> web.Response:
    """/sandbox without the slash: the page's relative URLs need it; relative, so any mount point works."""
    raise web.HTTPFound(request.path.rsplit("/", 1)[-1] + "/")


async def static_file(request: web.Request) -> web.FileResponse:
    """The page's own .js/.css (no-cache, so an upgraded page is never mixed with an old script)."""
    name = request.match_info["name"]
    path = STATIC / name
    if name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def create_sandbox_app(platform: Platform, pay: PayEmulator | None = None) -> web.Application:
    """The sandbox; with `pay`, WeChat Pay's emulator under pay/ (sandbox/pay_emulator.py)."""
    app = web.Application(client_max_size=12 * 1024 * 1024)
    app[PLATFORM] = platform

    async def http_client(app: web.Application):  # noqa: ANN202
        async with aiohttp.ClientSession() as session:
            app[SIM_HTTP] = session
            app[PUSHES] = set()
            yield
            for task in list(app[PUSHES]):
                task.cancel()
            await asyncio.gather(*app[PUSHES], return_exceptions=True)

    app.cleanup_ctx.append(http_client)
    api = [("GET", "token", _token, False, False), ("GET", "ticket/getticket", _ticket, True, False),
           ("POST", "message/custom/send", _custom, True, True),
           ("POST", "message/template/send", _template, True, True), ("POST", "message/mass/send", _mass, True, True),
           ("POST", "qrcode/create", _qrcode, True, True),
           ("POST", "menu/create", _menu, True, True), ("GET", "menu/get", _menu_get, True, False),
           ("POST", "media/upload", _upload, True, False), ("POST", "media/uploadnews", _uploadnews, True, True)]
    for method, name, fn, needs_token, body in api:
        app.router.add_route(method, "/cgi-bin/" + name, _endpoint(name, fn, needs_token=needs_token, body=body))
    app.router.add_get("", to_page)
    app.router.add_get("/", page)
    app.router.add_get(r"/static/{name:[A-Za-z0-9_-][A-Za-z0-9_.-]*}", static_file)
    app.router.add_get("/sim/state", sim_state)
    app.router.add_post("/sim/users", sim_new_user)
    app.router.add_post("/sim/send", sim_send)
    app.router.add_get("/sim/messages", sim_messages)
    app.router.add_post("/sim/age", sim_age)
    app.router.add_post("/sim/scan", sim_scan)
    app.router.add_get("/media/{media_id}", media)
    jssdk_standin.add_routes(app, platform)  # the JS-SDK stand-in's reports (sim/jssdk)
    if pay is not None:
        app.add_subapp("/pay", create_pay_app(pay))
    return app


def sandbox_platform(config: Config, clock: Clock | None = None) -> Platform:
    """The WeChat emulator for this configuration, pushing to this server's /wechat."""
    host = "127.0.0.1" if config.server.host in ("0.0.0.0", "::", "") else config.server.host
    return Platform(app_id=config.wechat.app_id, app_secret=config.wechat.app_secret, token=config.wechat.token,
                    encoding_aes_key=config.wechat.encoding_aes_key,
                    webhook_url=f"http://{host}:{config.server.port}/wechat",
                    clock=clock.epoch if clock is not None else None)


def mount(app: web.Application, config: Config, *, platform: Platform | None, emulator_keys: EmulatorKeys | None,
          clock: Clock) -> None:
    """The sandbox at /sandbox: `platform` (tests run theirs apart) or one for this configuration
    whose users are kept in the database, and WeChat Pay's emulator with it when there are its keys
    and no Pay URL of its own. Mounted before the bot's workers start: its users are saved after
    they stop."""
    emulator = (PayEmulator(emulator_keys, appid=config.wechat.app_id, wall=clock)
                if emulator_keys is not None and platform is None and not config.pay.api_base_url else None)
    if platform is None:  # the built-in one keeps its users in the database (sim_store)
        platform = sandbox_platform(config, clock)
        app.cleanup_ctx.append(keeping(platform))
    app.add_subapp("/sandbox", create_sandbox_app(platform, pay=emulator))
