"""The console's 分销员 list over HTTP on both databases: each figure (team, this month's and all-time
sales and commission, balances) against orders posted through /api/orders/events, every filter,
every sort in both directions (paged through in pages of two, across the segments above, at and
below zero), and the CSV export equal to the rows shown with a formula-like name neutralised;
then one walk in Chromium (filter by rank, sort by sales, open a distributor, 导出)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import update

from kit.app_keys import CLOCK, READER, SESSIONMAKER
from domain.distributor_list import SORTS, Filters, list_page
from domain.formats import parse_signed_yuan
from storage.models import Distributor
from storage.models_risk import RiskFlag
from storage.tables import DISTRIBUTORS
from tests.conftest import ADMIN_TOKEN, Harness
from tests.console_support import WIDTHS, chromium_page, order_event, sign_in
from tests.money_support import balance, pay, seed, send

EVIL = "=cmd|' /C calc'!A0"
COLUMNS = {"team": "直接团队", "month_sales": "本月销售额（元）", "sales": "累计销售额（元）",
           "month_commission": "本月佣金（元）", "commission": "累计佣金（元）", "available": "可提现（元）",
           "pending": "待结算（元）"}


async def console(h: Harness) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get(h.url + "/admin/") as resp:
        token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert token
    async with http.post(h.url + "/admin/login", data={"csrf_token": token.group(1), "token": ADMIN_TOKEN}) as resp:
        assert resp.status == 200
    return http


async def listing(http: aiohttp.ClientSession, h: Harness, query: str) -> list[dict[str, str]]:
    """The CSV's rows for `query`, after checking they are the rows the page shows, in its order."""
    async with http.get(f"{h.url}/admin/distributors?{query}") as resp:
        assert resp.status == 200
        shown = re.findall(r'<td data-label="分销员"><a href="/admin/distributors/(\w+)">', await resp.text())
    async with http.get(f"{h.url}/admin/distributors.csv?{query}") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
        raw = await resp.read()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(raw.decode().removeprefix("\ufeff"))))
    assert [r["推广码"] for r in rows] == shown, (query, shown)
    return rows


def fen(cell: str) -> int:
    return int(cell) if "." not in cell else parse_signed_yuan(cell)  # yuan with two decimals: no float


async def test_figures_filters_sorts_and_the_export(harness: Harness) -> None:
    h = harness
    h.clock.set(datetime(2026, 12, 15, 4, tzinfo=UTC))
    boss, _ = await seed(h, name="张大山", rank="gold")
    kid1, _ = await seed(h, inviter=boss, name="李小红")
    kid2, _ = await seed(h, inviter=boss, name="王小明")
    evil, _ = await seed(h, inviter=kid1, name=EVIL)
    idle, _ = await seed(h, name="钱一一")
    people = {d.code: d for d in (boss, kid1, kid2, evil, idle)}
    answers = {"L-1": await pay(h, "L-1", 20_000, kid1)}
    await pay(h, "L-2", 10_000, kid2)
    answers["L-2"] = await send(h, "L-2", "refunded", amount_fen=2_000)
    answers["L-3"] = await pay(h, "L-3", 5_000, boss, occurred_at="2026-11-20T10:00:00+08:00")  # paid last month
    await pay(h, "L-4", 3_000, evil)
    answers["L-4"] = await send(h, "L-4", "cancelled")
    status, _ = await h.api("POST", f"/distributors/{idle.code}/adjustments", json={"amount_fen": -500, "reason": "多发"})
    assert status == 201
    async with h.app[SESSIONMAKER]() as session, session.begin():
        await session.execute(update(DISTRIBUTORS).where(DISTRIBUTORS.c.id == evil.id)
                              .values(registered_at=datetime(2026, 10, 1, 2, tzinfo=UTC)))
        await session.execute(update(DISTRIBUTORS).where(DISTRIBUTORS.c.id == idle.id).values(status="suspended"))
        session.add(RiskFlag(distributor_id=kid2.id, rule="burst", detail="测试", status="open",
                             open_key=f"{kid2.id}:burst", created_at=h.clock.now()))
    commission = {code: 0 for code in people}
    for answer in answers.values():
        for c in answer["commissions"]:
            commission[c["distributor_code"]] += c["amount_fen"] - c["reversed_fen"]

    november = {c["distributor_code"]: c["amount_fen"] for c in answers["L-3"]["commissions"]}
    http = await console(h)
    try:
        rows = {r["推广码"]: r for r in await listing(http, h, "")}
        assert list(rows) == [idle.code, evil.code, kid2.code, kid1.code, boss.code]  # newest first
        sales = {boss.code: (0, 5_000), kid1.code: (20_000, 20_000), kid2.code: (8_000, 8_000)}
        for code, d in people.items():
            r = rows[code]
            assert (fen(r["本月销售额（元）"]), fen(r["累计销售额（元）"])) == sales.get(code, (0, 0)), r
            # every commission was posted this month, but L-3's counts in November, when its order was
            # paid, as its sales do
            assert fen(r["累计佣金（元）"]) == commission[code] >= 0, r
            assert fen(r["本月佣金（元）"]) == commission[code] - november.get(code, 0), r
            money = await balance(h, d)
            assert (fen(r["可提现（元）"]), fen(r["待结算（元）"])) == (money["available_fen"], money["pending_fen"]), r
        assert {c: int(r["直接团队"]) for c, r in rows.items()} == {
            boss.code: 2, kid1.code: 1, kid2.code: 0, evil.code: 0, idle.code: 0}
        assert rows[evil.code]["姓名"] == "'" + EVIL and rows[evil.code]["邀请人推广码"] == kid1.code
        assert rows[idle.code]["状态"] == "已暂停" and fen(rows[idle.code]["可提现（元）"]) == -500
        await filters_and_sorts(http, h, [boss, kid1, kid2, evil, idle])
    finally:
        await http.close()
    await pages_of_two(h)


async def filters_and_sorts(http: aiohttp.ClientSession, h: Harness, people: list[Distributor]) -> None:
    """Each filter finds whom it should; each sort, both ways, orders everyone by its figure."""
    boss, kid1, kid2, evil, idle = people
    for query, found in (("rank=gold", [boss]), ("status=suspended", [idle]), ("flagged=1", [kid2]),
                         ("since=2026-09-30&until=2026-10-01", [evil]), ("q=李小红", [kid1]),
                         ("rank=junior&sort=sales", [kid1, kid2, idle, evil]),
                         ("rank=nobody&since=banana", people[::-1])):
        assert [r["推广码"] for r in await listing(http, h, query)] == [d.code for d in found], query
    for sort, column in COLUMNS.items():
        for direction in ("desc", "asc"):
            got = [fen(r[column]) for r in await listing(http, h, f"sort={sort}&dir={direction}")]
            assert got == sorted(got, reverse=direction == "desc") and len(got) == 5, (sort, direction, got)


async def pages_of_two(h: Harness) -> None:
    """Pages of two read in segments (as for many distributors: above, at and below zero, each on
    its index) walk the same order as everyone sorted at once (as for few)."""
    now = h.app[CLOCK].now()
    for f in (Filters(sort=sort, descending=descending, rank=rank)
              for sort in SORTS for descending in (True, False) for rank in ("", "junior")):
        whole, total = await h.app[READER].run(lambda s: list_page(s, f, now, 1, per_page=10))  # noqa: B023
        paged = [d.code for n in (1, 2, 3) for d in (await h.app[READER].run(
            lambda s: list_page(s, f, now, n, per_page=2, few=0)))[0]]  # noqa: B023
        assert paged == [d.code for d in whole] and total == (4 if f.rank else 5), (f, paged)


async def test_an_admin_filters_sorts_opens_and_exports(served: tuple[str, web.Application], browser: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    async with app[SESSIONMAKER]() as session, session.begin():
        for i, (name, rank) in enumerate((("金牌甲", "gold"), ("金牌乙", "gold"), ("普通丙", "junior"))):
            session.add(Distributor(code=f"UI{i:04d}", openid=f"o-ui-{i}", phone=f"1360000{i:04d}", name=name,
                                    rank=rank, status="active", registered_at=datetime.now(UTC)))
    await order_event(base, event_id="ui-1", order_no="UI-1", type="paid", amount_fen=1_000, distributor_code="UI0000")
    await order_event(base, event_id="ui-2", order_no="UI-2", type="paid", amount_fen=9_000, distributor_code="UI0001")
    async with chromium_page(browser, WIDTHS["desktop"]) as page:
        await sign_in(page, base)
        await page.get_by_role("link", name="分销员", exact=True).click()
        await page.get_by_label("等级").select_option(label="黄金合伙人")
        await page.get_by_role("button", name="搜索").click()
        await expect(page.get_by_text("找到 2 位")).to_be_visible()
        await expect(page.get_by_role("link", name="普通丙")).to_have_count(0)
        await page.get_by_role("link", name="累计销售额").click()
        names = page.locator('td[data-label="分销员"] a')
        await expect(names).to_have_text(["金牌乙", "金牌甲"])
        await page.get_by_role("link", name="累计销售额").click()  # the other way
        await expect(names).to_have_text(["金牌甲", "金牌乙"])
        async with page.expect_download() as download:
            await page.get_by_role("link", name="导出").click()
        text = (await (await download.value).path()).read_bytes().decode()
        assert text.startswith("\ufeff推广码,姓名") and text.index("UI0000") < text.index("UI0001")
        assert "普通丙" not in text
        await names.first.click()
        await expect(page.get_by_role("heading", name="金牌甲（UI0000）")).to_be_visible()
        await expect(page.get_by_role("heading", name=re.compile("^账本"))).to_be_visible()
        await expect(page.get_by_role("cell", name="UI-1")).to_have_count(2)  # the ledger's entry and the order
