"""The console's 分销员 pages in Chromium, at desktop width and at 390 px: the search by code, name
and phone with its pages, a distributor's page (balances, team, orders, ledger), setting the rank
and posting an adjustment through the forms (recorded with the console session, the same notice
as the API's), and a POST without csrf_token refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from kit.app_keys import CONFIG, SESSIONMAKER, WRITER
from domain.formats import parse_signed_yuan
from domain.ledger import adjust, withdraw
from domain.orders import EventIn, apply_events
from storage.models import Distributor
from storage.tables import ADJUSTMENTS, DISTRIBUTORS, OUTBOX, RANK_CHANGES
from tests.console_support import AT_BOTH_WIDTHS, no_sideways_scroll, sign_in

# code, name, phone, inviter's code
PEOPLE = (("BOSS22", "张大山", "13811112222", None), ("KIDA22", "李小红", "13933334444", "BOSS22"),
          ("KIDB22", "王小明", "13755556666", "BOSS22"), ("GRAN22", "赵小雨", "13677778888", "KIDA22"),
          ("TINY22", "钱一一", "13599990000", "GRAN22"))
FILLERS = 52  # with PEOPLE more than a page


async def seed(app: web.Application, fillers: int = 0) -> None:
    """The tree of PEOPLE, two paid orders, an adjustment and a withdrawal for 张大山."""
    now, config = datetime.now(UTC), app[CONFIG]

    def work(s: Any) -> None:
        ids: dict[str, int] = {}
        for i in range(fillers):
            s.add(Distributor(code=f"F{i:05d}", openid=f"o-fill-{i}", phone=f"150{i:08d}", name=f"路人{i}",
                              rank="junior", status="active", registered_at=now))
        for code, name, phone, inviter in PEOPLE:
            d = Distributor(code=code, openid=f"o-{code}", phone=phone, name=name, rank="junior", status="active",
                            inviter_id=ids.get(inviter or ""), registered_at=now)
            s.add(d)
            s.flush()
            ids[code] = d.id
        events = [EventIn("e1", "SO-1001", "paid", 20000, "BOSS22"), EventIn("e2", "SO-1002", "paid", 10000, "KIDA22")]
        apply_events(s, config, events, now)
        adjust(s, ids["BOSS22"], 5000, "开业红包", "test", now)
        assert withdraw(s, ids["BOSS22"], 1000, now) is not None
    await app[WRITER].run(work)


async def one(app: web.Application, stmt: Any) -> Any:
    async with app[SESSIONMAKER]() as session:
        return (await session.execute(stmt)).all()


async def search_for(pg: Any, text: str) -> None:
    box = pg.get_by_role("searchbox")
    await box.fill(text)
    await box.press("Enter")


async def test_search_by_code_name_and_phone(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed(app, FILLERS)
    await sign_in(page, base)
    await page.get_by_role("link", name="分销员", exact=True).click()
    await expect(page.get_by_role("heading", name="分销员")).to_be_visible()
    await expect(page.get_by_text(f"共 {FILLERS + len(PEOPLE)} 位")).to_be_visible()
    await expect(page.get_by_role("link", name="钱一一")).to_be_visible()  # the newest first
    await no_sideways_scroll(page)
    await page.get_by_role("link", name="下一页").click()
    await expect(page.get_by_role("link", name="路人0", exact=True)).to_be_visible()  # the oldest, on page 2
    await expect(page.get_by_role("link", name="钱一一")).to_have_count(0)
    await page.get_by_role("link", name="上一页").click()
    await expect(page.get_by_role("link", name="钱一一")).to_be_visible()

    await search_for(page, "kida22")  # a code, in any case
    await expect(page.get_by_text("找到 1 位")).to_be_visible()
    await expect(page.get_by_role("link", name="李小红")).to_be_visible()
    await search_for(page, "小")  # part of a name
    await expect(page.get_by_text("找到 3 位")).to_be_visible()
    await expect(page.get_by_role("link", name="张大山")).to_have_count(0)
    await search_for(page, "5556")  # part of a phone number
    await expect(page.get_by_text("找到 1 位")).to_be_visible()
    await search_for(page, "139 3333 4444")  # a whole phone number, as people type it
    await expect(page.get_by_text("找到 1 位")).to_be_visible()
    await page.get_by_role("link", name="李小红").click()
    await expect(page.get_by_role("heading", name="李小红（KIDA22）")).to_be_visible()
    await search_page_then(page, base)


async def search_page_then(pg: Any, base: str) -> None:
    """Nothing found, and a query with LIKE's wildcards finds nothing by accident."""
    from playwright.async_api import expect
    for text in ("没有这个人", "%", "_"):
        await pg.goto(f"{base}/admin/distributors")
        await search_for(pg, text)
        await expect(pg.get_by_text("没有找到分销员")).to_be_visible()


@AT_BOTH_WIDTHS
async def test_a_distributors_page_and_its_forms(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed(app)
    await sign_in(page, base)
    await page.goto(f"{base}/admin/distributors?q=BOSS22")
    await page.get_by_role("link", name="张大山").click()
    await expect(page.get_by_role("heading", name="张大山（BOSS22）")).to_be_visible()
    await no_sideways_scroll(page)
    # ¥200 at 10% and ¥100 at 3% pending; ¥50 adjusted in, ¥10 of it asked for.
    for label, money in (("待结算", "¥23.00"), ("可提现", "¥40.00"), ("提现中", "¥10.00"), ("已提现", "¥0.00")):
        await expect(page.locator(".card", has_text=label)).to_contain_text(money)
    team = page.locator("ul.team")
    await expect(team).to_contain_text("李小红（KIDA22）")
    await expect(team).to_contain_text("王小明（KIDB22）")
    await expect(team.locator("li", has_text="李小红").first).to_contain_text("直接邀请 1 人")
    await expect(team).to_contain_text("赵小雨（GRAN22）")  # the second level
    await expect(team).not_to_contain_text("钱一一")  # the third is a click away
    await expect(page.get_by_text("SO-1001")).to_have_count(2)  # the order and its commission
    await expect(page.get_by_text("开业红包")).to_have_count(0)  # the reason is on the record, not the ledger

    rank = page.get_by_role("form", name="调整等级")
    await rank.get_by_label("等级").select_option("gold")
    await rank.get_by_label("原因").fill("年度优秀")
    await rank.get_by_role("button", name="调整等级").click()
    await expect(page.get_by_role("status")).to_contain_text("等级已调整为【黄金合伙人】")
    await expect(page.get_by_text("初级推广员 → 黄金合伙人")).to_be_visible()
    [(new_rank,)] = await one(app, select(DISTRIBUTORS.c.rank).where(DISTRIBUTORS.c.code == "BOSS22"))
    [(actor, reason)] = await one(app, select(RANK_CHANGES.c.actor, RANK_CHANGES.c.reason))
    assert new_rank == "gold" and actor.startswith("console:") and reason == "年度优秀"

    adjustment = page.get_by_role("form", name="提交调整")
    await adjustment.get_by_label("金额（元）").fill("5")
    await adjustment.get_by_role("button", name="提交调整").click()
    await expect(page.get_by_role("status")).to_contain_text("需要填写原因")
    for typed, error in (("1.234", "金额格式不对"), ("0", "不能为 0"), ("五块", "金额格式不对")):
        await adjustment.get_by_label("金额（元）").fill(typed)
        await adjustment.get_by_label("原因").fill("补发")
        await adjustment.get_by_role("button", name="提交调整").click()
        await expect(page.get_by_role("status")).to_contain_text(error)
        await expect(page.get_by_role("status")).to_have_class("flash error")
    assert len(await one(app, select(ADJUSTMENTS.c.id))) == 1  # the seed's only
    await adjustment.get_by_label("金额（元）").fill("5.00")
    await adjustment.get_by_label("原因").fill("补发活动奖励")
    await adjustment.get_by_role("button", name="提交调整").click()
    await expect(page.get_by_role("status")).to_contain_text("调整已入账")
    await expect(page.locator(".card", has_text="可提现")).to_contain_text("¥45.00")
    [(amount, actor)] = await one(app, select(ADJUSTMENTS.c.amount_fen, ADJUSTMENTS.c.actor)
                                  .where(ADJUSTMENTS.c.reason == "补发活动奖励"))
    assert amount == 500 and actor.startswith("console:")
    texts = [p.get("content") for (p,) in await one(app, select(OUTBOX.c.payload).where(OUTBOX.c.openid == "o-BOSS22"))]
    assert "您的账户有一笔调整：+¥5.00\n原因：补发活动奖励\n当前可提现 ¥45.00。回复“收益”查看明细。" in texts
    assert any(t and t.startswith("恭喜您升级为【黄金合伙人】") for t in texts)
    await no_sideways_scroll(page)

    await page.get_by_role("link", name="展开 李小红 的团队").click()
    await expect(page.get_by_role("heading", name="李小红（KIDA22）")).to_be_visible()
    await expect(page.locator("ul.team")).to_contain_text("钱一一（TINY22）")


async def test_refused_forms_change_nothing(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed(app)
    await sign_in(page, base)
    await page.wait_for_url(base + "/admin/")
    for path, form in (("rank", {"rank": "gold", "reason": "伪造"}), ("adjustments", {"amount": "5", "reason": "伪造"})):
        for extra in ({}, {"csrf_token": "forged"}):
            resp = await page.request.post(f"{base}/admin/distributors/BOSS22/{path}", form={**form, **extra},
                                           max_redirects=0)
            assert resp.status == 403, await resp.text()
    # With the session's token: an unknown rank and an amount past the fen are refused, clearly.
    await page.goto(f"{base}/admin/distributors/BOSS22")
    token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    for path, form, error in (("rank", {"rank": "platinum", "reason": "试试"}, "没有“platinum”这个等级"),
                              ("adjustments", {"amount": "5.001", "reason": "试试"}, "金额格式不对")):
        resp = await page.request.post(f"{base}/admin/distributors/BOSS22/{path}", form={**form, "csrf_token": token},
                                       max_redirects=0)
        assert resp.status == 303
        await page.goto(f"{base}/admin/distributors/BOSS22")
        await expect(page.get_by_role("status")).to_contain_text(error)
    assert await one(app, select(RANK_CHANGES.c.id)) == []
    assert len(await one(app, select(ADJUSTMENTS.c.id))) == 1
    [(rank,)] = await one(app, select(DISTRIBUTORS.c.rank).where(DISTRIBUTORS.c.code == "BOSS22"))
    assert rank == "junior"


@pytest.mark.parametrize("typed,fen", [("5", 500), ("-3.2", -320), ("+¥1,234.56", 123456), ("−0.01", -1), ("0", 0)])
def test_signed_amounts(typed: str, fen: int) -> None:
    assert parse_signed_yuan(typed) == fen
