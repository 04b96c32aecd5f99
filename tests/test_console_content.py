"""The console's 内容 and 活动 pages (CONTRACT §4.9) in Debian's headless Chromium, at desktop
width and at 390 px: a rejected pack's problems with file and field, an accepted one live, an
older version set live again; a campaign created for now and sent through the sandbox WeChat, a
scheduled one cancelled; forms without csrf_token refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from app.factory import create_app
from sandbox.routes import sandbox_platform
from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER, WRITER
from domain.formats import CHINA
from storage.models import Distributor
from storage.models_campaigns import Campaign
from storage.models_content import LivePack
from tests.conftest import make_config
from tests.console_support import AT_BOTH_WIDTHS, no_sideways_scroll, sign_in
from tests.db_support import migrated_sqlite
from tests.eventually import eventually
from tests.serve_support import free_port
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


@AT_BOTH_WIDTHS
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
    for field, words in (("products[0].price_fen", "不能为负数"), ("products[0].image", "压缩包里没有这个文件")):
        row = page.locator("tr", has_text=field)
        await expect(row).to_contain_text("manifest.toml")
        await expect(row).to_contain_text(words)
    await no_sideways_scroll(page)
    assert await live_ids(app) == {}

    await upload(page, pack_file(tmp_path, "v1.zip"))
    await expect(page.get_by_role("status").first).to_contain_text("已上传 winter-2026 版本 1")
    await expect(problems).to_have_count(0)
    # The uploads went by upload.js (XMLHttpRequest, with its progress bar), not as plain posts.
    assert await page.evaluate("performance.getEntriesByType('resource')"
                               ".filter(e => e.initiatorType === 'xmlhttprequest').length") == 2
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

    # A festival version waits for its window, which the list shows.
    festival = MANIFEST.replace('version = "1"', 'version = "3"\nlive_from = "2099-01-01T00:00:00+08:00"\n'
                                                 'live_until = "2099-01-08T00:00:00+08:00"')
    await upload(page, pack_file(tmp_path, "v3.zip", festival))
    await expect(page.get_by_role("status").first).to_contain_text("将在 2099-01-01 00:00 生效")
    await expect(page.locator(f"#pack-{live + 1}")).to_contain_text("2099-01-01 00:00 至 2099-01-08 00:00（等待开始）")
    assert (await live_ids(app))["winter-2026"] == live - 1
    await no_sideways_scroll(page)


async def test_the_upload_works_without_script(served: tuple[str, web.Application], page: Any, tmp_path: Path) -> None:
    """Without JavaScript the form posts as it is: the answer is the same page."""
    from playwright.async_api import expect
    base, app = served
    context = await page.context.browser.new_context(java_script_enabled=False,
                                                     viewport=page.viewport_size)
    try:
        plain = await context.new_page()
        await sign_in(plain, base)
        await plain.goto(base + "/admin/content")
        await expect(plain.locator("#upload-status")).to_be_hidden()
        await upload(plain, pack_file(tmp_path, "bad.zip", **{"images/sku1.png": None}))
        await expect(plain.locator("tr", has_text="products[0].image")).to_contain_text("manifest.toml")
        await upload(plain, pack_file(tmp_path, "v1.zip"))
        await expect(plain.get_by_role("status").first).to_contain_text("已上传 winter-2026 版本 1")
        await expect(plain.locator("tr", has_text="当前生效")).to_be_visible()
    finally:
        await context.close()
    assert list(await live_ids(app)) == ["winter-2026"]


# ---- 活动 ----------------------------------------------------------------------------------------
@pytest.fixture
async def served_with_workers(tmp_path: Path) -> AsyncIterator[tuple[str, web.Application, Platform]]:
    """The app with its outbox worker and scheduler, sending to the sandbox WeChat it serves."""
    port = free_port()
    config = make_config(migrated_sqlite(tmp_path),
                         server={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"})
    platform = sandbox_platform(config)
    app = create_app(config, platform=platform)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", app, platform
    finally:
        await runner.cleanup()


async def seed_distributors(app: web.Application, platform: Platform | None = None) -> list[str]:
    """Two juniors and a gold, active, following the account and inside the 48-hour window; and
    one who has left (never in an audience)."""
    now = datetime.now(UTC)
    people = [("o-junior-1", "junior", "active"), ("o-junior-2", "junior", "active"), ("o-gold-1", "gold", "active"),
              ("o-exited-1", "junior", "exited")]

    def work(s: Any) -> None:
        for i, (openid, rank, status) in enumerate(people):
            s.add(Distributor(code=f"CAMP0{i}", openid=openid, phone=f"1390000000{i}", name=f"分销{i}", rank=rank,
                              status=status, registered_at=now))
    await app[WRITER].run(work)
    if platform is not None:
        for openid, _, _ in people:
            user = platform.user(openid)
            user.subscribed, user.last_interaction = True, platform.clock()
    return [openid for openid, _, status in people if status == "active"]


async def campaigns_in(app: web.Application) -> list[tuple[int, str, str]]:
    async with app[SESSIONMAKER]() as session:
        return [tuple(r) for r in (await session.execute(select(Campaign.id, Campaign.title, Campaign.status)
                                                         .order_by(Campaign.id))).all()]


async def open_campaigns(page: Any, base: str) -> None:
    from playwright.async_api import expect
    await sign_in(page, base)
    await page.get_by_role("link", name="活动", exact=True).click()
    await expect(page.get_by_role("heading", name="活动", exact=True)).to_be_visible()


async def test_a_campaign_for_now_is_sent(served_with_workers: tuple[str, web.Application, Platform],
                                          page: Any) -> None:
    from playwright.async_api import expect
    base, app, platform = served_with_workers
    active = await seed_distributors(app, platform)
    await page.clock.install()  # live.js's refresh is waited for by moving the page's clock
    await open_campaigns(page, base)
    audience = page.get_by_label("受众")
    await expect(audience.locator("option", has_text="全部分销员")).to_have_text("全部分销员（3 人）")
    await expect(audience.locator("option", has_text="黄金合伙人")).to_have_text("黄金合伙人（1 人）")
    await page.get_by_label("标题").fill("十二月上新")
    await page.get_by_label("内容").fill("新品红枣礼盒今天上架，快去看看。")
    await audience.select_option("all")
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("status")).to_contain_text("已创建，3 位分销员")
    [(cid, _, _)] = await campaigns_in(app)
    row = page.locator(f"#campaign-{cid}")
    await expect(row).to_contain_text("十二月上新")
    # The outbox sends in the background; the list refreshes itself in place (live.js) until the
    # campaign is done: the page is not loaded again (the marker set here stays).
    await page.evaluate("window.notReloaded = true")

    async def sent() -> bool:
        return [status for i, _, status in await campaigns_in(app) if i == cid] == ["done"]
    await eventually(sent, timeout=20, what="the campaign sent")
    await page.clock.run_for(3_000)  # live.js's next refresh
    await expect(row.locator(".status")).to_have_text("已完成")
    await expect(row.locator(".progress")).to_have_text("共 3 · 已发 3 · 失败 0 · 待发 0")
    await expect(row.get_by_role("button", name="取消")).to_have_count(0)
    assert await page.evaluate("window.notReloaded === true")
    await expect(page.locator("#campaign-list")).not_to_have_attribute("data-live", re.compile(".*"))
    for openid in active:
        assert [m["content"] for m in platform.users[openid].timeline] == ["新品红枣礼盒今天上架，快去看看。"]
    assert not platform.users["o-exited-1"].timeline
    await no_sideways_scroll(page)


async def test_a_scheduled_campaign_is_cancelled(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed_distributors(app)
    await open_campaigns(page, base)
    later = (datetime.now(CHINA) + timedelta(days=1)).replace(hour=20, minute=0, second=0, microsecond=0)
    await page.get_by_label("标题").fill("明晚直播")
    await page.get_by_label("内容").fill("明晚八点直播间见。")
    await page.get_by_label("受众").select_option("gold")
    await page.get_by_label("发送时间").fill(later.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("status")).to_contain_text("1 位分销员，将于 " + later.strftime("%Y-%m-%d %H:%M"))
    [(cid, _, status)] = await campaigns_in(app)
    assert status == "scheduled"
    row = page.locator(f"#campaign-{cid}")
    await expect(row.locator(".status")).to_have_text("待发送")
    await expect(row).to_contain_text("黄金合伙人")
    await expect(row.locator(".progress")).to_contain_text("共 1")
    await no_sideways_scroll(page)
    await page.get_by_role("form", name=f"活动 {cid}").get_by_role("button", name="取消").click()
    await expect(page.get_by_role("status")).to_contain_text(f"活动 {cid} 已取消")
    await expect(row.locator(".status")).to_have_text("已取消")
    assert await campaigns_in(app) == [(cid, "明晚直播", "cancelled")]


async def test_a_campaign_with_bad_fields_is_not_created(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await open_campaigns(page, base)
    await page.get_by_label("内容").fill("字" * 601)
    await page.get_by_role("button", name="创建").click()
    problems = page.get_by_role("alert")
    await expect(problems).to_contain_text("标题不能为空")
    await expect(problems).to_contain_text("最多 600 个字")
    await expect(page.get_by_label("内容")).to_have_value("字" * 601)  # what was typed stays
    await page.get_by_label("标题").fill("过去的时间")
    await page.get_by_label("内容").fill("你好")
    await page.get_by_label("发送时间").fill("2020-01-01T10:00")
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("alert")).to_contain_text("发送时间不对")
    await no_sideways_scroll(page)
    assert await campaigns_in(app) == []


async def test_content_and_campaign_forms_without_csrf_token_change_nothing(
        served: tuple[str, web.Application], page: Any, tmp_path: Path) -> None:
    base, app = served
    await sign_in(page, base)
    await page.wait_for_url(base + "/admin/")
    pack = {"name": "v1.zip", "mimeType": "application/zip", "buffer": zip_of(small_pack())}
    for form in ({"csrf_token": "forged"}, {}):
        resp = await page.request.post(f"{base}/admin/content", multipart={**form, "pack": pack}, max_redirects=0)
        assert resp.status == 403, await resp.text()
        resp = await page.request.post(f"{base}/admin/campaigns", max_redirects=0,
                                       form={**form, "title": "伪造", "text": "伪造", "audience": "all"})
        assert resp.status == 403, await resp.text()
    assert await live_ids(app) == {}
    assert await campaigns_in(app) == []
