"""The console's 内容 and 活动 pages (CONTRACT §4.9) in Debian's headless Chromium, at desktop
width and at 390 px: a rejected pack's problems with file and field, an accepted one live, an
older version set live again; a campaign created for now and sent through the sandbox WeChat, a
scheduled one cancelled; forms without csrf_token refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.typedefs import SESSIONMAKER
from storage.models_content import LivePack
from tests.test_console import no_sideways_scroll, page, served, sign_in  # noqa: F401  (fixtures)
from tests.test_packs_support import MANIFEST, small_pack, zip_of


def pack_file(tmp_path: Path, name: str, manifest: str = MANIFEST, **files: Any) -> Path:
    path = tmp_path / name
    path.write_bytes(zip_of(small_pack(manifest, **files)))
    return path


async def live_ids(app: web.Application) -> dict[str, int]:
    async with app[SESSIONMAKER]() as session:
        return dict((await session.execute(select(LivePack.name, LivePack.pack_id))).all())


async def upload(page: Any, path: Path) -> None:
    await page.get_by_label("内容包").set_input_files(str(path))
    await page.get_by_role("button", name="上传").click()


async def test_packs_uploaded_checked_and_switched(served: tuple[str, web.Application], page: Any,
                                                   tmp_path: Path) -> None:
    from playwright.async_api import expect
    base, app = served
    await sign_in(page, base)
    await page.get_by_role("link", name="内容", exact=True).click()
    await expect(page.get_by_role("heading", name="内容", exact=True)).to_be_visible()

    bad = pack_file(tmp_path, "bad.zip", MANIFEST.replace("price_fen = 12900", "price_fen = -5"),
                    **{"images/sku1.png": None})
    await upload(page, bad)
    problems = page.get_by_role("table", name="没有通过检查")
    await expect(page.get_by_role("heading", name="bad.zip 没有通过检查")).to_contain_text("2 个问题")
    for field, words in (("products[0].price_fen", "must not be negative"), ("products[0].image", "not in the zip")):
        row = page.locator("tr", has_text=field)
        await expect(row).to_contain_text("manifest.toml")
        await expect(row).to_contain_text(words)
    await no_sideways_scroll(page)
    assert await live_ids(app) == {}

    await upload(page, pack_file(tmp_path, "v1.zip"))
    await expect(page.get_by_role("status").first).to_contain_text("已上传 winter-2026 版本 1")
    await expect(problems).to_have_count(0)
    await upload(page, pack_file(tmp_path, "v2.zip", MANIFEST.replace('version = "1"', 'version = "2"')))
    await expect(page.get_by_role("status").first).to_contain_text("版本 2")
    await expect(page.get_by_role("status").first).to_contain_text("已生效")
    live = (await live_ids(app))["winter-2026"]  # version 2's id; version 1's is one less
    await expect(page.locator("tr", has_text="当前生效")).to_contain_text("1 个商品")
    await expect(page.locator(f"#pack-{live}")).to_contain_text("当前生效")
    await no_sideways_scroll(page)

    older = page.get_by_role("form", name="winter-2026 版本 1")
    await older.get_by_role("button", name="设为生效").click()
    await expect(page.get_by_role("status").first).to_contain_text("winter-2026 版本 1 已设为生效")
    assert (await live_ids(app))["winter-2026"] == live - 1
    await expect(page.locator(f"#pack-{live - 1}")).to_contain_text("当前生效")
    await expect(page.get_by_role("form", name="winter-2026 版本 2").get_by_role("button", name="设为生效")).to_be_visible()

    # The same version twice is refused, and said so.
    await upload(page, pack_file(tmp_path, "again.zip"))
    await expect(page.get_by_role("status").first).to_contain_text("已经存在")
