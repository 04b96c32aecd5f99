"""Public pages run nobody's script (CONTRACT §7): hostile links in a training do nothing in
Chromium, every response carries the security headers and none names the server's software."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from app.factory import create_app
from tests.conftest import ADMIN_TOKEN, ON_SQLITE, Harness, make_config
from tests.console_support import chromium_page
from tests.db_support import migrated_sqlite
from tests.test_packs_support import small_pack, upload, zip_of

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py

# The links, each "javascript:" (or data:) to a browser once it has cleaned the URL up.
HOSTILE_TRAINING = """# 安全培训

[a1](\x01javascript:window.__pwned=1) [a2](java\rscript:window.__pwned=2) [a3](&#106;avascript:window.__pwned=3)
[a4](javascript&colon;window.__pwned=4) [a5]( javascript:window.__pwned=5)
[a6](data:text/html,<script>alert(6)</script>)
[a7](JaVaScRiPt:alert(7)) [a8](java&#x09;script:alert(8)) <a href="javascript:alert(9)">a9</a>

![i1](javascript:alert(10)) <img src=x onerror="window.__pwned=11"> <script>window.__pwned=12</script>

[安全链接](#safe)
"""


async def test_hostile_links_in_a_training_run_nothing_in_chromium(harness: Harness, browser: Any) -> None:
    h = harness
    user = h.user()
    await h.register(user, "13800138000", "赵敏")
    status, answer = await upload(h, zip_of(small_pack(**{"trainings/newcomer-1.md": HOSTILE_TRAINING})))
    assert status == 201, answer
    reply = await h.click(user, "TRAINING")
    assert reply is not None and reply["type"] == "news", reply
    link = h.url + reply["articles"][0]["url"].removeprefix(h.config.server.public_url)
    async with chromium_page(browser) as page:
        dialogs: list[str] = []

        async def on_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        await page.goto(link)
        await page.evaluate("window.__violations = []; document.addEventListener('securitypolicyviolation',"
                            " e => window.__violations.push(e.blockedURI))")
        # The browser's own reading of every URL left in the page: nothing that runs.
        schemes = await page.evaluate("Array.from(document.querySelectorAll('[href],[src]'), e => new URL("
                                      "e.getAttribute('href') ?? e.getAttribute('src'), location.href).protocol)")
        assert set(schemes) <= {"http:", "https:", "mailto:"}, schemes
        hostile = page.locator("main a").filter(has_text=re.compile(r"^a\d$"))
        assert await hostile.count() == 8  # a1–a8 (a9 is raw HTML, shown as text)
        for i in range(await hostile.count()):
            await hostile.nth(i).click()
            await page.evaluate("new Promise(r => setTimeout(r, 0))")  # a turn for anything the click queued
            assert dialogs == [] and await page.evaluate("window.__pwned") is None, i
            assert page.url == link and await page.get_by_role("heading", name="安全培训").count() == 1, i
        await page.get_by_role("link", name="安全链接").click()
        await page.wait_for_url(link + "#safe")  # clicks do reach the links
        assert await page.evaluate("window.__violations") == []  # CSP had nothing to stop
        assert await page.get_by_text("<script>window.__pwned=12</script>").count() == 1  # shown as text


def public_paths(training: str, code: str, pack_id: int) -> dict[str, str]:
    """A path of every kind the service answers, by what it is."""
    return {"training": training, "training picture": training + "/images/none.png", "unsigned training": "/t/1/x",
            "share page": f"/s/{code}", "product picture": f"/c/{pack_id}/images/sku1.png",
            "claim page": "/pay/claim/1.2.abc", "weekly report": "/reports/weekly/1-20261130-" + "0" * 32}


async def test_every_response_hides_the_server_and_pages_carry_the_policy(harness: Harness) -> None:
    h = harness
    user = h.user()
    code = await h.register(user, "13900139000", "周芷若")
    status, answer = await upload(h, zip_of(small_pack()))
    assert status == 201, answer
    reply = await h.click(user, "TRAINING")
    assert reply is not None
    training = reply["articles"][0]["url"].removeprefix(h.config.server.public_url)
    pages = public_paths(training, code, answer["id"])
    others = {"api": "/api/distributors", "api 401": "/api/distributors?anonymous", "wechat": "/wechat",
              "healthz": "/healthz", "metrics": "/metrics", "console": "/admin/", "console script": "/admin/live.js",
              "sandbox": "/sandbox/", "404": "/no/such/page"}
    assert h.http is not None
    for what, path in {**pages, **others}.items():
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if what == "api" else {}
        async with h.http.get(h.url + path, headers=auth, allow_redirects=False) as resp:
            headers = resp.headers
        assert "Server" not in headers, (what, headers["Server"])
        assert headers.get("X-Content-Type-Options") == "nosniff", what
        assert headers.get("Referrer-Policy") in ("same-origin", "no-referrer"), what
        policy = headers.get("Content-Security-Policy", "")
        script_src = next((d for d in policy.split(";") if d.strip().startswith("script-src")), "")
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy or what.startswith("console"), what
        assert script_src and "'unsafe-inline'" not in script_src or what.startswith("console"), (what, policy)
        assert "Strict-Transport-Security" not in headers, what  # public_url is http here
    async with h.http.post(h.url + "/healthz") as resp:  # 405
        assert resp.status == 405 and "Server" not in resp.headers


async def test_https_public_url_adds_hsts(tmp_path: Any) -> None:
    config = make_config(migrated_sqlite(tmp_path), server={"public_url": "https://shop.example"})
    server = TestServer(create_app(config, workers=False))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/t/1/x", "/nope"):
                async with http.get(str(server.make_url(path))) as resp:
                    assert resp.headers.get("Strict-Transport-Security") == "max-age=31536000", path
                    assert "Server" not in resp.headers
    finally:
        await server.close()
