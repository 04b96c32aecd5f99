"""The back office's records (issue 23 items 3 and 4): 佣金记录 (filters, totals, 导出 as the API's
ledger rows with formula cells defused), 订单 (found by a prefix of its number, by distributor and
status; an order's page with its events, commissions and a refund's reversals; the audit log's
order links open it) and 推广统计 (each ranking as domain.figures counts it), over HTTP on both
databases with scoped tokens; then the main path in Chromium."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kit.app_keys import CONFIG, READER, WRITER
from domain import figures
from domain.formats import CHINA, parse_signed_yuan, yuan
from domain.orders import EventIn, apply_events
from sandbox.platform import Platform
from storage.models import Distributor
from tests.conftest import ADMIN_TOKEN, Harness, make_config
from tests.console_support import sign_in
from tests.money_support import event, seed, send
from tests.test_audit import console
from tests.test_scopes import TOKEN, TOKENS

FORMULA = '=HYPERLINK("http://evil.example","x")'


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    config = make_config(db_url, admin={"tokens": TOKENS}, distribution={"freeze_days": 7})
    async with Harness(config, platform, wechat_server) as harness:
        yield harness


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text(encoding="utf-8")


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))[1:]


def cells(html: str, label: str) -> list[str]:
    """The texts of a table's cells of one column (by their data-label), tags left out."""
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(rf'data-label="{label}">(.*?)</td>', html, re.S)]


async def commissions_checked(h: Harness, finance: aiohttp.ClientSession, boss: Any, seller: Any) -> None:
    """佣金记录: every kind, its totals; the export is the API's ledger rows, the filters applied."""
    status, html = await get(finance, h.url + "/admin/commissions")
    assert status == 200 and "<b>别人</b>" not in html and "&lt;b&gt;别人&lt;/b&gt;" in html
    assert len(cells(html, "流水号")) == 9 and "<small>调整</small>" not in html  # this month's, at first
    status, html = await get(finance, h.url + "/admin/commissions?since=")
    _, everything = await h.api("GET", "/exports/ledger.csv")
    status, exported = await get(finance, h.url + "/admin/commissions.csv?since=")
    assert status == 200 and csv_rows(exported) == csv_rows(everything) and len(csv_rows(exported)) == 10
    assert [r[6] for r in csv_rows(exported) if r[6].endswith('"x")')] == ["'" + FORMULA]  # defused
    assert cells(html, "流水号") == [r[0] for r in reversed(csv_rows(exported))]  # newest first
    for kind in ("佣金", "退款冲回", "调整"):
        fen = sum(parse_signed_yuan(r[5]) for r in csv_rows(exported) if r[4] == kind)
        assert f"<small>{kind}</small><b>{yuan(fen)}</b>" in html, kind
    status, html = await get(finance, h.url + f"/admin/commissions?kind=reversal&code={seller.code.lower()}")
    assert cells(html, "类型") == ["退款冲回"] and cells(html, "金额") == ["-¥5.00"]
    assert "<small>退款冲回</small><b>-¥5.00</b><small>1 笔</small>" in html and "<small>佣金</small>" not in html
    _, narrowed = await get(finance, h.url + f"/admin/commissions.csv?kind=commission&code={boss.code}")
    assert [(r[2], r[4], r[5]) for r in csv_rows(narrowed)] == [(boss.code, "佣金", "3.00"), (boss.code, "佣金", "6.00")]
    tomorrow = (datetime.now(CHINA) + timedelta(days=1)).date()
    _, html = await get(finance, h.url + f"/admin/commissions?since={tomorrow}&until=bad")
    assert "没有符合条件的记录" in html and "日期“bad”看不懂" in html
    status, html = await get(finance, h.url + "/admin/commissions?since=0001-01-01&until=9999-12-31")  # the edges
    assert status == 200 and len(cells(html, "流水号")) == 10


async def orders_checked(h: Harness, finance: aiohttp.ClientSession, other: Any) -> None:
    """订单: a prefix of the number, a distributor, a status; the order's page as the API's."""
    _, html = await get(finance, h.url + "/admin/orders?q=SO-REC")
    assert sorted(cells(html, "订单号")) == ["SO-REC-1", "SO-REC-2"]
    _, html = await get(finance, h.url + f"/admin/orders?code={other.code}&status=cancelled")
    assert cells(html, "订单号") == ["SO-OTHER-9"]
    _, html = await get(finance, h.url + "/admin/orders?q=" + "%3DHYPER")
    assert cells(html, "订单号") == [FORMULA.replace('"', "&#34;")]
    status, html = await get(finance, h.url + "/admin/orders/SO-REC-2")
    _, api = await h.api("GET", "/orders/SO-REC-2")
    assert status == 200 and cells(html, "事件") == ["付款", "退款"] and cells(html, "已冲回") == [
        yuan(c["reversed_fen"]) for c in api["commissions"]] == ["¥5.00", "¥1.50"]
    assert cells(html, "之后的状态") == ["待发货", "待发货"] and "已退款 ¥50.00" in html
    assert sorted(cells(html, "金额")[2:]) == ["-¥1.50", "-¥5.00"]  # the two reversal entries
    assert (await get(finance, h.url + "/admin/orders/NO-SUCH"))[0] == 404


async def stats_checked(h: Harness, finance: aiohttp.ClientSession, ids: list[int]) -> None:
    """推广统计: each ranking is the figures' count over the period."""
    today = datetime.now(CHINA).date()
    status, html = await get(finance, h.url + f"/admin/stats?period=range&since={today - timedelta(days=1)}"
                                               f"&until={today + timedelta(days=1)}")
    assert status == 200 and html.count('role="img"') == 3
    status, edges = await get(finance, h.url + "/admin/stats?period=range&since=0001-01-01&until=9999-12-31")
    assert status == 200 and edges.count('role="img"') == 3
    window = (datetime.now(UTC) - timedelta(days=1), None)
    sales, earned, teams = await h.app[READER].run(lambda s: (
        figures.credited_sales(s, ids, [window]), figures.earnings(s, ids, [window]), figures.teams(s, ids, [window])))
    expected = [yuan(v[0].fen) for v in sorted(sales.values(), key=lambda v: -v[0].fen)]
    expected += [yuan(v[0]) for v in sorted(earned.values(), key=lambda v: -v[0])]
    expected += [f"{v[1][0]} 人" for v in teams.values()]
    assert re.findall(r'data-label="(?:销售额|佣金收入|新增直属成员)">([^<]*)</td>', html) == expected
    assert expected[:2] == ["¥250.00", "¥30.00"] and expected[-1] == "1 人"
    status, html = await get(finance, h.url + "/admin/stats")  # this month's sales: the sums kept per month
    assert re.findall(r'data-label="销售额">([^<]*)</td>', html) == expected[:len(sales)]


async def test_records_pages_over_http(h: Harness) -> None:
    boss, _ = await seed(h, name="大老板")
    seller, _ = await seed(h, inviter=boss, name="小卖家")
    other, _ = await seed(h, name="<b>别人</b>")
    for no, fen, who in (("SO-REC-1", 10000, seller), ("SO-REC-2", 20000, seller), (FORMULA, 3000, other),
                         ("SO-OTHER-9", 50000, other)):
        assert (await h.api("POST", "/orders/events", json=event(no, "paid", amount_fen=fen,
                                                                distributor_code=who.code)))[0] == 200
    await send(h, "SO-REC-2", "refunded", amount_fen=5000)
    await send(h, "SO-OTHER-9", "cancelled")
    h.clock.move(days=-40)  # an adjustment posted last month or before: 佣金记录 shows this month at first
    status, _ = await h.api("POST", f"/distributors/{boss.code}/adjustments", json={"amount_fen": 700, "reason": "补发"})
    assert status == 201
    h.clock.move(days=40)
    finance = await console(h, TOKEN["finance"])
    try:
        await commissions_checked(h, finance, boss, seller)
        await orders_checked(h, finance, other)
        await stats_checked(h, finance, [boss.id, seller.id, other.id])
    finally:
        await finance.close()
    shop, ops = await console(h, TOKEN["shop"]), await console(h, TOKEN["ops"])
    try:  # 订单: shop and finance; 佣金记录: finance; 推广统计: finance and ops
        assert (await get(shop, h.url + "/admin/orders/SO-REC-1"))[0] == 200
        assert (await get(shop, h.url + "/admin/commissions"))[0] == 403
        assert (await get(ops, h.url + "/admin/stats"))[0] == 200
        assert (await get(ops, h.url + "/admin/orders"))[0] == 403
    finally:
        await shop.close()
        await ops.close()
    admin = await console(h, ADMIN_TOKEN)
    try:
        _, html = await get(admin, h.url + "/admin/audit")
        assert 'href="/admin/orders/SO-REC-2"' in html  # the audit log's order links open the order
    finally:
        await admin.close()


async def seed_served(app: web.Application) -> None:
    now, config = datetime.now(UTC), app[CONFIG]

    def work(s: Any) -> None:
        boss = Distributor(code="BOSS23", openid="o-boss23", phone="13800002323", name="张大山", rank="junior",
                           status="active", registered_at=now)
        s.add(boss)
        s.flush()
        s.add(Distributor(code="KIDA23", openid="o-kida23", phone="13900002323", name="李小红", rank="junior",
                          status="active", inviter_id=boss.id, registered_at=now))
        s.flush()
        apply_events(s, config, [EventIn("u1", "SO-UI-1", "paid", 30000, "KIDA23"),
                                 EventIn("u2", "SO-UI-2", "paid", 8000, "KIDA23")], now)
        apply_events(s, config, [EventIn("u3", "SO-UI-1", "refunded", 10000)], now)
    await app[WRITER].run(work)


async def test_orders_and_commissions_in_the_browser(served: tuple[str, web.Application], page: Any,
                                                     tmp_path: Path) -> None:
    from playwright.async_api import expect
    base, app = served
    await seed_served(app)
    await sign_in(page, base)
    await page.get_by_role("link", name="订单", exact=True).click()
    await page.get_by_role("searchbox", name="订单号").fill("SO-UI-1")
    await page.get_by_role("button", name="查找").click()
    await expect(page.get_by_role("link", name="SO-UI-2")).to_have_count(0)
    await page.get_by_role("link", name="SO-UI-1").click()
    await expect(page.get_by_role("heading", name="订单 SO-UI-1")).to_be_visible()
    events = page.get_by_role("table", name="订单事件")
    await expect(events.get_by_role("row")).to_have_count(3)
    await expect(events.get_by_role("cell", name="退款", exact=True)).to_be_visible()
    shares = page.get_by_role("table", name="佣金")
    await expect(shares.get_by_role("row", name=re.compile("李小红.*¥30.00.*¥10.00"))).to_be_visible()
    await expect(shares.get_by_role("row", name=re.compile("张大山.*¥9.00.*¥3.00"))).to_be_visible()
    await expect(page.get_by_role("table", name="冲回").get_by_role("row")).to_have_count(3)

    await page.get_by_role("link", name="佣金记录").click()
    await page.get_by_label("类型").select_option(label="退款冲回")
    await page.get_by_role("button", name="筛选").click()
    ledger = page.get_by_role("table", name="佣金记录")
    await expect(ledger.get_by_role("row")).to_have_count(3)
    await expect(page.get_by_role("group", name="合计")).to_contain_text("-¥13.00")
    async with page.expect_download() as info:
        await page.get_by_role("link", name="导出").click()
    saved = tmp_path / "ledger.csv"
    await (await info.value).save_as(saved)
    rows = csv_rows(saved.read_text("utf-8"))
    assert sorted((r[2], r[4], r[5]) for r in rows) == [("BOSS23", "退款冲回", "-3.00"), ("KIDA23", "退款冲回", "-10.00")]

    await page.get_by_role("link", name="推广统计").click()
    await expect(page.get_by_role("img", name=re.compile("销售额排行：第 1 名 李小红 ¥280.00"))).to_be_visible()
