"""The sandbox chat simulator page (/sandbox/), driven in Debian's headless Chromium against the whole
app served on a real port in sandbox mode, plus the simulator's scan endpoint and static files."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import qrcode
from aiohttp import web
from aiohttp.test_utils import TestClient

from sandbox.platform import Platform
from sandbox.routes import create_sandbox_app
from tests.conftest import ADMIN_TOKEN
from tests.console_support import chromium_page, serve

CODE = re.compile(r"推广码：([A-Z0-9]{6})")


def _qr_png(text: str) -> bytes:
    buf = io.BytesIO()
    qrcode.make(text).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[str]:
    """The whole app as `make run` serves it: built-in sandbox, menu pushed at start, on a real port.

    SQLite only: this test is about the page; every handler behind it already runs on SQLite and
    PostgreSQL in the harness tests, and a second browser run would only double the slowest test."""
    async with serve(tmp_path, workers=True) as (base, _):
        yield base


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A phone-sized page (844 px high) in the session's browser; no script error on it."""
    async with chromium_page(browser, 390, 844) as pg:
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        yield pg
        assert not errors, errors


# ---- driving the page like a person -------------------------------------------------------------
async def bot_says(page: Any, text: str) -> str:
    """Wait for the bot's newest bubble containing text; its whole text."""
    bubble = page.locator(".msg.bot .bubble", has_text=text).last
    await bubble.wait_for()
    return await bubble.inner_text()


async def type_text(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def new_user(page: Any) -> str:
    before = await page.input_value("#user-select")
    await page.click("#new-user")
    await page.wait_for_function("b => { const v = document.querySelector('#user-select').value;"
                                 " return v && v !== b; }", arg=before)
    return await page.input_value("#user-select")


async def register(page: Any, phone: str, name: str) -> str:
    await type_text(page, "注册")
    await bot_says(page, "第 1 步")
    await type_text(page, phone)
    await bot_says(page, "第 2 步")
    await type_text(page, name)
    reply = await bot_says(page, "注册成功")
    m = CODE.search(reply)
    assert m, reply
    return m.group(1)


async def wechat_api(http: aiohttp.ClientSession, base: str, name: str, **kw: Any) -> dict[str, Any]:
    """Call the built-in WeChat API the way the bot does (its own access token)."""
    async with http.get(f"{base}/sandbox/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": "wxsandbox0000000000", "secret": "sandbox-secret"}) as r:
        token = (await r.json())["access_token"]
    params = {"access_token": token, **kw.pop("params", {})}
    async with http.post(f"{base}/sandbox/cgi-bin/{name}", params=params, **kw) as r:
        answer = await r.json(content_type=None)
    assert answer.get("errcode", 0) == 0, answer
    return answer


# ---- the page ---------------------------------------------------------------------------------
async def test_two_users_refer_through_the_page(served: str, page: Any) -> None:
    from playwright.async_api import expect
    await page.goto(served + "/sandbox/")
    # The app pushes the menu through menu/create at start; the page shows its three top buttons.
    await expect(page.locator(".menubar .top")).to_have_count(3)
    await expect(page.locator(".menubar .top")).to_contain_text(["推广", "收益", "我的"])

    await new_user(page)
    await expect(page.locator("#follow-status")).to_have_text("未关注")
    await page.click("#follow")
    await bot_says(page, "欢迎关注")
    await expect(page.locator("#follow-status")).to_have_text("已关注")
    # WeChat's quota after a follow: 3 customer-service messages within a minute (the welcome was free).
    await expect(page.locator("#quota")).to_contain_text("客服消息剩 3 条")
    # 注册 from the menu: 我的 → 注册分销员 sends CLICK REGISTER.
    await page.locator(".menubar .top", has_text="我的").click()
    await page.click("[data-testid=menu-sub][data-key=REGISTER]")
    await expect(page.locator(".msg.user .bubble.event").last).to_contain_text("CLICK · REGISTER")
    await bot_says(page, "第 1 步")
    await type_text(page, "13800138000")
    await bot_says(page, "第 2 步")
    await type_text(page, "张三")
    reply = await bot_says(page, "注册成功")
    code_a = CODE.search(reply).group(1)  # type: ignore[union-attr]

    await new_user(page)
    await page.click("#follow-scene")
    await page.fill("#scene-input", code_a)
    await page.click("[data-testid=scene-submit]")
    await bot_says(page, "张*")  # the inviter, masked
    await expect(page.locator(".msg.user .bubble.event").last).to_contain_text(f"qrscene_{code_a}")
    code_b = await register(page, "13900139000", "李四")
    assert code_b != code_a

    async with aiohttp.ClientSession() as http, http.get(
            f"{served}/api/distributors/{code_b}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["inviter_code"] == code_a
    assert body["name"] == "李四"
    await page.screenshot(path="/tmp/sandbox.png")


async def test_late_messages_and_scanning_a_picture(served: str, page: Any) -> None:
    """Late customer-service images, template cards and mass messages show up by polling; a
    picture's QR code follows a new user through its scene; the 49-hour control answers."""
    from playwright.async_api import expect
    await page.goto(served + "/sandbox/")
    openid_a = await new_user(page)
    await page.click("#follow")
    await bot_says(page, "欢迎关注")
    code_a = await register(page, "13800138000", "张三")

    # What the poster feature does: a QR code for the scene, in a picture, sent as a late message.
    async with aiohttp.ClientSession() as http:
        qr = await wechat_api(http, served, "qrcode/create", json={
            "action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": code_a}}})
        form = aiohttp.FormData()
        form.add_field("media", _qr_png(qr["url"]), filename="poster.png", content_type="image/png")
        media = await wechat_api(http, served, "media/upload", params={"type": "image"}, data=form)
        await wechat_api(http, served, "message/custom/send", json={
            "touser": openid_a, "msgtype": "image", "image": {"media_id": media["media_id"]}})
        await wechat_api(http, served, "message/template/send", json={
            "touser": openid_a, "template_id": "tmpl-notice",
            "data": {"first": {"value": "佣金到账提醒"}, "keyword1": {"value": "¥12.90"}, "remark": {"value": "继续加油"}}})
        await wechat_api(http, served, "message/mass/send", json={
            "touser": [openid_a, "o-not-a-follower"], "msgtype": "text", "text": {"content": "五一活动预告"}})

    image = page.locator(".msg.bot[data-via=custom] .bubble.image img")
    await image.wait_for()
    assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
    card = page.locator("[data-testid=template-card]")
    await expect(card).to_contain_text("佣金到账提醒")
    await expect(card).to_contain_text("¥12.90")
    mass = page.locator(".msg.bot[data-via=mass]")
    await expect(mass.locator(".bubble")).to_have_text("五一活动预告")
    await expect(mass.locator(".via")).to_have_text("群发")

    await page.click("#age")
    await expect(page.locator(".notice").last).to_contain_text("49 小时")

    await page.click("[data-testid=scan-image]")
    await page.click("#picker-new")
    await bot_says(page, "张*")  # the new user follows through the poster and sees the inviter
    assert await page.input_value("#user-select") != openid_a
    await expect(page.locator(".msg.user .bubble.event").last).to_contain_text(f"qrscene_{code_a}")
    await expect(page.locator("#follow-status")).to_have_text("已关注")
    await page.screenshot(path="/tmp/sandbox-scan.png")

    # The same QR code, its url pasted by hand; then unfollow.
    await new_user(page)
    await page.click("#follow-scene")
    await page.fill("#qr-input", qr["url"])
    await page.click("[data-testid=scene-submit]")
    await bot_says(page, "张*")
    await expect(page.locator(".msg.user .bubble.event").last).to_contain_text(f"qrscene_{code_a}")
    await page.click("#unfollow")
    await expect(page.locator("#follow-status")).to_have_text("未关注")
    await expect(page.locator(".msg.user .bubble.event").last).to_contain_text("unsubscribe")


# ---- the page's files and the scan endpoint, without a browser -----------------------------
async def test_page_and_its_files_are_served(aiohttp_client: Any, platform: Platform) -> None:
    app = web.Application()
    app.add_subapp("/sandbox", create_sandbox_app(platform))
    client: TestClient = await aiohttp_client(app)
    resp = await client.get("/sandbox", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "sandbox/"  # the page's relative URLs need the slash
    resp = await client.get("/sandbox/")
    html = await resp.text()
    assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
    assert 'src="static/sandbox.js"' in html and 'href="static/sandbox.css"' in html  # relative: mountable anywhere
    for name in ("sandbox.js", "sandbox.css"):
        resp = await client.get("/sandbox/static/" + name)
        assert resp.status == 200
        await resp.read()
    for bad in ("/static/nothing.js", "/static/..%2Fviews.py", "/static/.hidden"):
        resp = await client.get("/sandbox" + bad)
        assert resp.status == 404, bad


@pytest.fixture
async def scan_client(aiohttp_client: Any, aiohttp_server: Any, platform: Platform) -> TestClient:
    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="success")
    bot = web.Application()
    bot.router.add_post("/wechat", webhook)
    server = await aiohttp_server(bot)
    platform.webhook_url = str(server.make_url("/wechat"))
    return await aiohttp_client(create_sandbox_app(platform))


def _upload(platform: Platform, png: bytes) -> str:
    return platform.upload_media("image", png, "image/png")["media_id"]


async def test_scan_follows_through_the_pictures_qr_code(scan_client: TestClient, platform: Platform) -> None:
    ticket = platform.create_qrcode({"action_name": "QR_STR_SCENE", "expire_seconds": 600,
                                     "action_info": {"scene": {"scene_str": "K7QF2M"}}})
    media_id = _upload(platform, _qr_png(ticket["url"]))
    user = platform.user()
    resp = await scan_client.post("/sim/scan", json={"openid": user.openid, "media_id": media_id})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["event"] == "subscribe"
    assert user.subscribed
    assert {"type": "event", "event": "subscribe", "scene": "K7QF2M"}.items() <= user.timeline[-1].items()
    # A follower who scans again sends SCAN.
    resp = await scan_client.post("/sim/scan", json={"openid": user.openid, "media_id": media_id})
    assert (await resp.json())["event"] == "scan"
    assert user.timeline[-1]["event"] == "scan"


@pytest.mark.parametrize("case", ["unknown media", "no qr", "foreign qr"])
async def test_scan_explains_what_is_wrong(scan_client: TestClient, platform: Platform, case: str) -> None:
    user = platform.user()
    if case == "unknown media":
        media_id, expected = "nope", "没有这个模拟用户或这张图片"
    elif case == "no qr":
        buf = io.BytesIO()
        from PIL import Image
        Image.new("RGB", (200, 200), "white").save(buf, format="PNG")
        media_id, expected = _upload(platform, buf.getvalue()), "图片里没有找到二维码"
    else:
        media_id, expected = _upload(platform, _qr_png("https://example.com/")), "不是本公众号的"
    resp = await scan_client.post("/sim/scan", json={"openid": user.openid, "media_id": media_id})
    assert resp.status == 400
    assert expected in (await resp.json())["error"]
    assert not user.subscribed and not user.timeline


async def test_scan_without_zxing_says_what_to_install(scan_client: TestClient, platform: Platform,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zxingcpp", None)  # makes `import zxingcpp` fail
    media_id = _upload(platform, _qr_png("http://weixin.qq.com/q/x"))
    user = platform.user()
    resp = await scan_client.post("/sim/scan", json={"openid": user.openid, "media_id": media_id})
    assert resp.status == 501
    assert "pip install zxing-cpp" in (await resp.json())["error"]
