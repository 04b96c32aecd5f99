"""The console on a phone (issue 23 item 9), in Chromium at 390 px: every page of the navigation
opened by its link from the compact header (one row that scrolls by itself), none scrolling
sideways, the header at most 30 % of the screen; the favicon linked and served; the charts' text
at least 12 px on the screen, no two labels on top of each other; an unknown page a Chinese 404."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kit.app_keys import WRITER
from kit.console import NAV
from content.pages import ICON_LINK, page as public_page
from storage.models import Distributor, Follower
from tests.console_support import WIDTHS, no_sideways_scroll, order_event, sign_in

# Per chart on the page: its name, the smallest font-size of its text as shown (the CSS size
# times the SVG's scale), and how many pairs of its labels overlap on the screen.
CHART_TEXT = """() => [...document.querySelectorAll('svg.chart')].map(svg => {
  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim());
  const boxes = texts.map(t => t.getBoundingClientRect());
  let overlaps = 0;
  boxes.forEach((a, i) => boxes.slice(i + 1).forEach(b => {
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) overlaps++;
  }));
  return {name: svg.getAttribute('aria-label'), texts: texts.length, overlaps,
          smallest: Math.min(...texts.map(t => parseFloat(getComputedStyle(t).fontSize) * scale))};
})"""


async def seed(base: str, app: web.Application) -> None:
    now = datetime.now(UTC)

    def people(s: Any) -> None:
        s.add(Follower(openid="o-phone", subscribed=True, followed_at=now, created_at=now))
        s.add(Distributor(code="PHN001", openid="o-phone", phone="13900000201", name="手机上的王大明", rank="junior",
                          status="active", registered_at=now))
    await app[WRITER].run(people)
    await order_event(base, event_id="phone-1", order_no="PH-1", type="paid", amount_fen=1_234_567,
                      distributor_code="PHN001", occurred_at=now.isoformat())


async def readable_charts(page: Any, at_least: int) -> None:
    charts = await page.evaluate(CHART_TEXT)
    assert len(charts) >= at_least, charts
    for chart in charts:
        assert chart["texts"] and chart["smallest"] >= 12 and chart["overlaps"] == 0, chart


@pytest.mark.parametrize("page", ["phone"], indirect=True)
async def test_every_page_reads_on_a_phone(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed(base, app)
    await sign_in(page, base)
    header = page.locator("header")
    await expect(header.get_by_role("button", name="退出登录")).to_be_visible()

    icon = await page.locator("link[rel=icon]").get_attribute("href")
    answer = await page.request.get(base + icon)
    assert answer.status == 200 and answer.headers["content-type"].startswith("image/"), answer.headers
    assert (await answer.body()).startswith(b"\x89PNG") and ICON_LINK in public_page("培训", "<p>x</p>")

    await readable_charts(page, 2)  # 概览: 30 days of sales and commission, distributors by rank
    rows = "links => new Set(links.map(a => Math.round(a.getBoundingClientRect().top))).size"
    assert await header.get_by_role("navigation").get_by_role("link").evaluate_all(rows) == 1  # one row
    for path, name in NAV:
        await header.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
        await expect(page).to_have_url(base + "/admin" + path)
        await expect(header.get_by_role("link", name=name, exact=True)).to_have_attribute("aria-current", "page")
        box = await header.bounding_box()
        assert box["height"] <= 0.3 * page.viewport_size["height"], (path, box)
        await no_sideways_scroll(page)
        assert await page.locator("link[rel=icon]").get_attribute("href") == icon
        if path == "/stats":
            await readable_charts(page, 2)  # the rankings by sales and by commission (no team grew)

    answer = await page.goto(base + "/admin/no-such-page")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="没有这个页面")).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("/admin/no-such-page")
    await no_sideways_scroll(page)
    assert page.viewport_size["width"] == WIDTHS["phone"]

    async with aiohttp.ClientSession() as http, http.get(base + "/favicon.ico") as resp:  # without a session
        assert resp.status == 200 and resp.content_type == "image/png"
