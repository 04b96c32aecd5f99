"""The console's 海报预览 (/admin/posters) in Chromium: the demo pack uploaded on 内容, a poster and a
distributor picked, the picture shown (drawn here, with a local QR code: no WeChat call), an
unknown code or poster refused with a clear message."""


from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image
from sqlalchemy import select

from kit.app_keys import SESSIONMAKER, WRITER
from content.demo import POSTER_SIZE
from storage.models import Distributor
from storage.models_content import DistributorQrCode, PosterMedia
from tests.console_support import sign_in
from tests.eventually import eventually
from tests.test_console_content import upload
from tests.test_packs_support import demo


async def seed_distributor(app: web.Application) -> None:
    def work(s: Any) -> None:
        s.add(Distributor(code="PREV01", openid="o-preview", phone="13900000009", name="林小满", rank="junior",
                          status="active", registered_at=datetime.now(UTC)))
    await app[WRITER].run(work)


async def test_a_poster_previewed_for_a_distributor(served: tuple[str, web.Application], page: Any,
                                                    tmp_path: Path) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed_distributor(app)
    pack = tmp_path / "demo.zip"
    pack.write_bytes(demo())
    await sign_in(page, base)
    await page.get_by_role("link", name="内容", exact=True).click()
    await upload(page, pack)
    await expect(page.get_by_role("status").first).to_contain_text("已生效")
    await page.get_by_role("link", name="预览海报").click()
    await expect(page.get_by_role("heading", name="海报预览")).to_be_visible()
    await page.get_by_label("海报", exact=True).select_option(index=1)  # the demo's 红枣礼盒单品海报 (a product's poster)
    await page.get_by_label("推广码").fill("prev01")  # the code is matched in upper case
    await page.get_by_role("button", name="预览").click()
    await expect(page.get_by_role("heading", name="林小满（PREV01）的海报")).to_be_visible()
    picture = page.get_by_role("img", name="林小满 的海报预览")
    await expect(picture).to_be_visible()
    # The picture is drawn on the server: wait for it (wait_for_function is barred by the CSP).
    await eventually(lambda: picture.evaluate("img => img.complete"), what="the poster is drawn")
    assert await picture.evaluate("img => img.naturalWidth") == POSTER_SIZE[0]
    src = await picture.get_attribute("src")
    assert "code=PREV01" in src
    async with app[SESSIONMAKER]() as session:  # no WeChat QR code made, nothing uploaded or stored
        assert not (await session.execute(select(DistributorQrCode))).first()
        assert not (await session.execute(select(PosterMedia))).first()

    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with aiohttp.ClientSession(cookies=cookies) as http:
        async with http.get(base + src) as resp:
            assert resp.status == 200 and resp.content_type == "image/png"
            data = await resp.read()
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG" and img.size == POSTER_SIZE
        async with http.get(base + src.replace("PREV01", "NOSUCH")) as resp:
            assert resp.status == 404 and "NOSUCH" in await resp.text()
        async with http.get(base + src.replace("poster=", "poster=x")) as resp:
            assert resp.status == 404
    async with aiohttp.ClientSession() as http, http.get(base + src, allow_redirects=False) as resp:
        assert resp.status == 303  # not signed in: nothing

    await page.get_by_label("推广码").fill("NOSUCH")
    await page.get_by_role("button", name="预览").click()
    await expect(page.get_by_role("alert")).to_have_text("没有推广码为 NOSUCH 的分销员。")
    await expect(page.get_by_role("img")).to_have_count(0)
