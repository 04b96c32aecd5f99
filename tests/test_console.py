"""The admin console (/admin/, CONTRACT §4.9) driven in Debian's headless Chromium by its
accessible names, at desktop width and at 390 px: sign-in (a wrong token, then the right one),
the cookie's flags, a POST without csrf_token refused, 概览's figures, the 提现 queue (approve,
reject with and without a reason), 退出登录. A failing test leaves a screenshot in
tests/artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import select

from kit.app_keys import SESSIONMAKER, WRITER
from domain.ledger import adjust, withdraw
from storage.models import Distributor
from storage.tables import WITHDRAWALS
from tests.console_support import AT_BOTH_WIDTHS, no_sideways_scroll, sign_in

NAV = ("概览", "分销员", "提现", "内容", "活动", "比赛", "客服")


async def seed_withdrawals(app: web.Application, amounts: list[int]) -> tuple[str, list[int]]:
    """A distributor with ¥100.00 adjusted in and a pending withdrawal of each amount."""
    now = datetime.now(UTC)

    def work(s: Any) -> tuple[str, list[int]]:
        d = Distributor(code="CONSO1", openid="o-console", phone="13900000001", name="钱多多", rank="junior",
                        status="active", registered_at=now)
        s.add(d)
        s.flush()
        adjust(s, d.id, 10000, "测试入账", "test", now)
        return d.code, [withdraw(s, d.id, a, now) for a in amounts]
    return await app[WRITER].run(work)


async def statuses(app: web.Application) -> dict[int, tuple[str, str | None]]:
    async with app[SESSIONMAKER]() as session:
        rows = (await session.execute(select(WITHDRAWALS.c.id, WITHDRAWALS.c.status, WITHDRAWALS.c.reason))).all()
    return {i: (s, r) for i, s, r in rows}


async def test_sign_in_cookie_and_sign_out(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, _ = served
    await sign_in(page, base, "not-the-token")
    await expect(page.get_by_text("管理令牌不正确")).to_be_visible()
    assert not [c for c in await page.context.cookies() if c["name"] == "distbot_admin"]
    await expect(page.get_by_role("link", name="提现")).to_have_count(0)

    await sign_in(page, base)
    for name in NAV:
        await expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    await expect(page.get_by_role("heading", name="概览")).to_be_visible()
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "distbot_admin"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain http here
    await no_sideways_scroll(page)

    await page.get_by_role("button", name="退出登录").click()
    await expect(page.get_by_label("管理令牌")).to_be_visible()
    # The old cookie opens nothing any more.
    async with aiohttp.ClientSession(cookies={"distbot_admin": cookie["value"]}) as http:
        async with http.get(base + "/admin/withdrawals", allow_redirects=False) as resp:
            assert resp.status == 303


@AT_BOTH_WIDTHS
async def test_the_withdrawal_queue(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    code, (first, second) = await seed_withdrawals(app, [1250, 2000])
    await sign_in(page, base)
    await expect(page.get_by_text("¥32.50")).to_be_visible()  # 概览: the pending withdrawals' sum
    await page.get_by_role("link", name="提现", exact=True).click()
    await expect(page.get_by_role("heading", name="提现")).to_be_visible()
    await no_sideways_scroll(page)
    one = page.get_by_role("form", name=f"提现申请 {first}")
    two = page.get_by_role("form", name=f"提现申请 {second}")
    await expect(one).to_contain_text("¥12.50")
    await expect(one).to_contain_text("可提现余额 ¥67.50")  # ¥100.00 less both requests

    await one.get_by_role("button", name="批准").click()
    await expect(page.get_by_role("status")).to_contain_text(f"申请 {first} 已批准")
    await two.get_by_role("button", name="拒绝").click()
    await expect(page.get_by_role("status")).to_contain_text("需要填写原因")
    assert (await statuses(app))[second] == ("pending", None)
    await two.get_by_label("原因").fill("信息不全")
    await two.get_by_role("button", name="拒绝").click()
    await expect(page.get_by_role("status")).to_contain_text(f"申请 {second} 已拒绝")
    assert await statuses(app) == {first: ("approved", None), second: ("rejected", "信息不全")}
    await expect(page.get_by_text("信息不全")).to_be_visible()


async def test_a_post_without_csrf_token_changes_nothing(served: tuple[str, web.Application], page: Any) -> None:
    base, app = served
    _, (wid,) = await seed_withdrawals(app, [1000])
    await sign_in(page, base)
    await page.wait_for_url(base + "/admin/")
    for form in ({"decision": "approve"}, {"decision": "approve", "csrf_token": "forged"}):
        resp = await page.request.post(f"{base}/admin/withdrawals/{wid}", form=form, max_redirects=0)
        assert resp.status == 403, await resp.text()
    assert (await statuses(app))[wid] == ("pending", None)
    # Without a session no POST goes anywhere either.
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/admin/withdrawals/{wid}", data={"decision": "approve"}) as resp:
            assert resp.status == 403
    assert (await statuses(app))[wid] == ("pending", None)


async def test_history_filters_and_csv_export(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    code, (first, second, third) = await seed_withdrawals(app, [1250, 2000, 300])
    await sign_in(page, base)
    await page.goto(base + "/admin/withdrawals")
    await page.get_by_role("form", name=f"提现申请 {first}").get_by_role("button", name="批准").click()
    await expect(page.get_by_role("status")).to_contain_text("已批准")
    filters = page.get_by_role("form", name="筛选提现记录")
    await filters.get_by_label("状态").select_option(label="已批准")
    await filters.get_by_role("button", name="筛选").click()
    history = page.locator("table tbody tr")
    await expect(history).to_have_count(1)
    await expect(history).to_contain_text("¥12.50")
    await no_sideways_scroll(page)
    await filters.get_by_label("申请日期从").fill("2000-01-01")
    await page.get_by_role("form", name="筛选提现记录").get_by_label("状态").select_option(label="全部")
    await page.get_by_role("form", name="筛选提现记录").get_by_role("button", name="筛选").click()
    await expect(page.locator("table tbody tr")).to_have_count(3)

    resp = await page.request.get(base + "/admin/withdrawals.csv?status=approved")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/csv")
    body = (await resp.body()).decode("utf-8")
    assert body.startswith("\ufeff申请号,推广码,姓名,金额（元）,状态")
    lines = body.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"{first},{code},钱多多,12.50,已批准,申请,")
    everything = (await (await page.request.get(base + "/admin/withdrawals.csv")).body()).decode("utf-8")
    assert [line.split(",")[3] for line in everything.strip().splitlines()[1:]] == ["12.50", "20.00", "3.00"]
    # Without a session there is nothing to download.
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/admin/withdrawals.csv", allow_redirects=False) as r:
            assert r.status == 303
