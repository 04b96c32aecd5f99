"""The console's 概览 below its period figures (CONTRACT §4.9, issue 11 item 2), in Chromium at
desktop width and at 390 px: distributors by rank as a server-drawn bar chart, this month's top
ten by credited sales (the 月度推广之星's running totals, each linked to the distributor's page)
and the funnel follow → register → first sale, for seeded people and orders sent through the
shop's API (the daily totals and first sales are kept as the events are applied)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from kit.app_keys import CONFIG, WRITER
from domain import contests
from domain.formats import month_start
from storage.models import Distributor, Follower
from tests.console_support import AT_BOTH_WIDTHS, no_sideways_scroll, order_event, sign_in

# code, name, rank, [(amount_fen, status)]
PEOPLE = [("OVA001", "王大明", "junior", [(30000, "paid"), (12000, "completed")]),
          ("OVA002", "李小红", "gold", [(5000, "paid")]),
          ("OVA003", "赵一一", "junior", [(8000, "cancelled")]),
          ("OVA004", "孙二二", "junior", [])]
FOLLOWERS = 6  # the four distributors and two who have not registered


async def seed(base: str, app: web.Application) -> None:
    now = datetime.now(UTC)
    paid = max(month_start(now).astimezone(UTC) + timedelta(minutes=1), now - timedelta(hours=1))

    def people(s: Any) -> None:
        for k in range(FOLLOWERS):
            s.add(Follower(openid=f"o-ov-{k}", subscribed=True, followed_at=now, created_at=now))
        s.add_all(Distributor(code=code, openid=f"o-ov-{k}", phone=f"1390000010{k}", name=name, rank=rank,
                              status="active", registered_at=now) for k, (code, name, rank, _) in enumerate(PEOPLE))
    await app[WRITER].run(people)
    for k, (code, _, _, orders) in enumerate(PEOPLE):
        for j, (fen, status) in enumerate(orders):
            no = f"OV{k}{j}"
            await order_event(base, event_id=f"{no}-paid", order_no=no, type="paid", amount_fen=fen,
                              distributor_code=code, occurred_at=paid.isoformat())
            if status != "paid":
                await order_event(base, event_id=f"{no}-{status}", order_no=no, type=status)
    # As the contests job makes it, with its backfill.
    await app[WRITER].run(lambda s: contests.ensure_star(s, app[CONFIG], now))


@AT_BOTH_WIDTHS
async def test_overview_shows_ranks_top_ten_and_funnel(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed(base, app)
    await sign_in(page, base)
    await expect(page.get_by_role("heading", name="概览")).to_be_visible()

    chart = page.get_by_role("img", name="分销员等级分布：初级推广员 3 位，黄金合伙人 1 位")
    await expect(chart).to_be_visible()
    await expect(chart).to_contain_text("初级推广员")

    top = page.get_by_role("table", name="本月销售额前 10 名")
    rows = top.locator("tbody tr")  # at 390 px the table is laid out as blocks (no row roles)
    await expect(rows).to_have_count(2)  # the two who sold
    first, second = rows.nth(0), rows.nth(1)
    await expect(first).to_contain_text("王大明")
    await expect(first).to_contain_text("¥420.00")
    await expect(second).to_contain_text("李小红")
    await expect(second).to_contain_text("¥50.00")
    await expect(top).not_to_contain_text("赵一一")  # a cancelled order is no sale

    funnel = page.get_by_role("group", name="转化漏斗")
    await expect(funnel).to_contain_text("关注6")
    await expect(funnel).to_contain_text("注册分销员4关注的 66.7%")
    # 赵一一's order was cancelled after it was paid: a first sale all the same.
    await expect(funnel).to_contain_text("已出首单3注册的 75.0%，关注的 50.0%")
    await no_sideways_scroll(page)

    await top.get_by_role("link", name="王大明").click()
    await page.wait_for_url(base + "/admin/distributors/OVA001")
    await expect(page.get_by_role("heading", name="王大明")).to_be_visible()


async def test_overview_without_the_star_shows_no_top(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, _ = served
    await sign_in(page, base)
    await expect(page.get_by_text("本月推广之星尚未开始统计")).to_be_visible()
    await expect(page.get_by_role("img", name="分销员等级分布：初级推广员 0 位，黄金合伙人 0 位")).to_be_visible()
    await expect(page.get_by_role("group", name="转化漏斗")).to_contain_text("注册分销员0关注的 —")
