"""The console's 比赛 and 客服 (CONTRACT §4.9, §4.6, §4.7) driven in Chromium by their accessible
names, at desktop width and at 390 px: a contest created through the form (and a new_members
contest with prizes refused, with the reason), its live standings after orders; tickets answered
with 回复 + 发送 (the asker's message queued, the console session recorded as the actor), closed
with 关闭, a reply to a closed ticket refused; a POST without csrf_token changes nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select

from kit.app_keys import CONFIG, SESSIONMAKER, WRITER
from domain import tickets
from domain.formats import CHINA
from storage.models import Distributor
from storage.tables import CONTESTS, OUTBOX, TICKET_REPLIES, TICKETS
from tests.console_support import AT_BOTH_WIDTHS, no_sideways_scroll, order_event, sign_in

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


async def pay(base: str, order_no: str, amount_fen: int, code: str, at: datetime | None = None) -> None:
    await order_event(base, event_id=f"evt-{order_no}", order_no=order_no, type="paid", amount_fen=amount_fen,
                      distributor_code=code, occurred_at=(at or datetime.now(UTC)).isoformat())


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
    await page.clock.install()  # live.js's refresh is waited for by moving the page's clock
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

    await page.evaluate("window.notReloaded = true")
    await pay(base, "ENG-1", 15000, li.code)
    await pay(base, "ENG-2", 20000, zhang.code)
    # The running contest's standings refresh themselves in place (live.js, every 5 s), no reload.
    await page.clock.run_for(5_000)
    standings = page.get_by_role("table", name="排名")
    await expect(standings.get_by_role("row").filter(has_text="¥")).to_have_count(2)  # two places
    assert await page.evaluate("window.notReloaded === true")
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


async def test_a_contest_over_already_is_settled_and_shows_its_winners(served: Served, page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    zhang, li, wang = await seed_people(app, "张三", "李四", "王五")
    now = datetime.now(UTC)
    for order_no, fen, who in (("W-1", 5000, zhang), ("W-2", 9000, li), ("W-3", 1000, wang)):
        await pay(base, order_no, fen, who.code, at=now - timedelta(hours=2))
    await sign_in(page, base)
    await page.goto(base + "/admin/contests")
    await page.get_by_label("标题").fill("上周冠军赛")
    await page.get_by_label("开始时间").fill(local(now - timedelta(hours=3)))
    await page.get_by_label("结束时间").fill(local(now - timedelta(hours=1)))
    await page.get_by_label("奖金（元）").fill("88, 66")
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("status")).to_contain_text("已创建")
    winners = page.get_by_role("table", name="获奖名单")
    for _ in range(40):  # the contests job settles it in the background
        if await winners.count():
            break
        await page.wait_for_timeout(250)
        await page.reload()
    for who, place, prize in ((li, 1, "¥88.00"), (zhang, 2, "¥66.00")):
        row = winners.get_by_role("row").filter(has_text=who.code)
        await expect(row).to_contain_text(f"第 {place} 名")
        await expect(row).to_contain_text(prize)
    await expect(winners.get_by_role("row").filter(has_text=wang.code)).to_have_count(0)
    await expect(page.get_by_role("table", name="排名").get_by_role("row").filter(has_text=wang.code)).to_contain_text(
        "¥10.00")
    await expect(page.get_by_text("已结算")).to_be_visible()
    await no_sideways_scroll(page)


# ---- 客服 -----------------------------------------------------------------------------------------
async def open_tickets(app: web.Application, *asks: tuple[str | None, str, timedelta]) -> list[int]:
    """A ticket for each (distributor code or None for an unregistered follower, text, how long ago)."""
    service, now = app[CONFIG].service, datetime.now(UTC)

    def work(s: Any) -> list[int]:
        ids = []
        for i, (code, text, ago) in enumerate(asks):
            d = s.scalar(select(Distributor).where(Distributor.code == code)) if code else None
            t = tickets.open_ticket(s, openid=d.openid if d else f"o-follower-{i}", distributor=d, text=text,
                                    now=now - ago, service=service)
            ids.append(t.id)
        return ids
    return await app[WRITER].run(work)


async def ticket_state(app: web.Application) -> dict[int, tuple[str, list[str], list[str]]]:
    """Each ticket's status, its replies' actors, and the outbox keys of the messages to its asker."""
    async with app[SESSIONMAKER]() as session:
        rows = (await session.execute(select(TICKETS.c.id, TICKETS.c.status, TICKETS.c.openid))).all()
        replies = (await session.execute(select(TICKET_REPLIES.c.ticket_id, TICKET_REPLIES.c.actor))).all()
        outbox = (await session.execute(select(OUTBOX.c.key, OUTBOX.c.openid))).all()
    return {tid: (status, [a for t, a in replies if t == tid],
                  [k for k, o in outbox if o == openid and k.startswith(f"ticket:{tid}:")])
            for tid, status, openid in rows}


@AT_BOTH_WIDTHS
async def test_answer_and_close_tickets(served: Served, page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed_people(app, "张三")
    normal, urgent, late = await open_tickets(app, ("ENG001", "怎么提现？", timedelta(minutes=10)),
                                              ("ENG001", "紧急：订单没到账", timedelta(minutes=1)),
                                              (None, "你们是做什么的", timedelta(hours=5)))
    await sign_in(page, base)
    await page.get_by_role("link", name="客服", exact=True).click()
    await expect(page.get_by_role("heading", name="客服", exact=True)).to_be_visible()
    forms = page.get_by_role("form", name=re.compile(r"^工单 #"))
    await expect(forms).to_have_count(3)
    # Urgent first, then by due time (the late one is overdue by an hour: 5 h ago, 4 h to answer).
    assert await forms.evaluate_all("fs => fs.map(f => f.getAttribute('aria-label'))") == [
        f"工单 #{urgent}", f"工单 #{late}", f"工单 #{normal}"]
    one, two, three = (page.get_by_role("form", name=f"工单 #{t}") for t in (normal, urgent, late))
    await expect(one).to_contain_text("张三（ENG001）")
    await expect(one).to_contain_text("怎么提现？")
    await expect(one).to_contain_text(re.compile(r"还剩 23\d 分钟"))
    await expect(two).to_contain_text("紧急")
    await expect(two).to_contain_text(re.compile(r"还剩 (29|30) 分钟"))
    await expect(three).to_contain_text("未注册的关注者")
    overdue = three.get_by_text(re.compile(r"已超时 6\d 分钟"))
    await expect(overdue).to_have_css("color", "rgb(192, 57, 43)")
    await no_sideways_scroll(page)

    await two.get_by_role("button", name="发送").click()
    await expect(page.get_by_role("status")).to_contain_text(f"工单 #{urgent}：请先填写回复内容")
    await one.get_by_label("回复").fill("在菜单“我的”里点“提现”即可。")
    await one.get_by_role("button", name="发送").click()
    await expect(page.get_by_role("status")).to_contain_text(f"已回复工单 #{normal}")
    await expect(forms).to_have_count(2)
    await three.get_by_role("button", name="关闭").click()
    await expect(page.get_by_role("status")).to_contain_text(f"工单 #{late} 已关闭")
    await expect(forms).to_have_count(1)

    state = await ticket_state(app)
    status, actors, queued = state[normal]
    assert status == "answered" and len(actors) == 1 and actors[0].startswith("console:"), state
    assert len(queued) == 1  # the reply, on its way to the asker
    assert state[late] == ("closed", [], [])
    assert state[urgent] == ("open", [], [])

    await page.get_by_role("link", name="已回复").click()
    await expect(one).to_contain_text("首次回复")
    await page.get_by_role("link", name="已关闭").click()
    await expect(three).to_be_visible()
    await expect(three.get_by_role("button", name="发送")).to_have_count(0)
    await no_sideways_scroll(page)

    # Closed elsewhere while the page was open: the reply is refused, clearly, and nothing goes out.
    await page.get_by_role("link", name="待回复").click()
    await app[WRITER].run(lambda s: tickets.close(s, urgent, datetime.now(UTC)))
    await two.get_by_label("回复").fill("已经处理好了")
    await two.get_by_role("button", name="发送").click()
    await expect(page.get_by_role("status")).to_contain_text(f"工单 #{urgent} 已关闭，不能再回复")
    assert (await ticket_state(app))[urgent] == ("closed", [], [])


async def test_posts_without_csrf_token_change_nothing(served: Served, page: Any) -> None:
    base, app = served
    await seed_people(app, "张三")
    [tid] = await open_tickets(app, ("ENG001", "在吗", timedelta(0)))
    await sign_in(page, base)
    await page.wait_for_url(base + "/admin/")
    now = datetime.now(UTC)
    contest = {"title": "伪造", "metric": "sales", "starts_at": local(now), "ends_at": local(now + timedelta(days=1)),
               "prizes": "", "audience": "all"}
    for extra in ({}, {"csrf_token": "forged"}):
        for path, form in ((f"/admin/tickets/{tid}", {"action": "reply", "reply": "你好"}),
                           (f"/admin/tickets/{tid}", {"action": "close"}), ("/admin/contests", contest)):
            resp = await page.request.post(base + path, form={**form, **extra}, max_redirects=0)
            assert resp.status == 403, await resp.text()
    assert (await ticket_state(app))[tid] == ("open", [], [])
    assert await contest_rows(app) == []
