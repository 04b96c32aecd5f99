"""Every "today / this month / this week" figure counts an order on the China-time day it was paid
(issue 24 item 9), on both databases: whenever its events arrived, whatever day it is in UTC, and
its commission, refunds and reversals with it. Orders paid either side of 2027-03-01 00:00 China
time (a Monday: the month and the week turn together), one arriving late, one refunded days later;
then chat (收益, 排行), the console (概览, 分销员, 推广统计) and the weekly report say the same."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime

import aiohttp
from sqlalchemy import select

from domain.formats import CHINA, plain_yuan, yuan
from domain.weekly import report_week
from handlers import weekly_report as wr
from kit.app_keys import SESSIONMAKER
from storage.models import OutboxMessage
from tests.conftest import ADMIN_TOKEN, Harness
from tests.money_support import check_invariants, pay, seed, send
from tests.test_jobs import run_job


def china(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=CHINA)


async def console_page(http: aiohttp.ClientSession, h: Harness, path: str) -> str:
    async with http.get(h.url + "/admin" + path) as resp:
        assert resp.status == 200, path
        return await resp.text()


async def sign_in(http: aiohttp.ClientSession, h: Harness) -> None:
    """A console session from now (the clock moves by days: sessions end)."""
    form = re.search(r'name="csrf_token" value="([^"]+)"', await console_page(http, h, "/"))
    assert form
    async with http.post(h.url + "/admin/login", data={"csrf_token": form.group(1), "token": ADMIN_TOKEN}) as r:
        assert r.status == 200


def overview_cards(html: str, label: str) -> list[str]:
    """The 概览 period's sales and commission, as shown."""
    return re.findall(r"<b>([^<]*)</b>", html.split(f"<h2>{label}</h2>", 1)[1])[:2]


def board(html: str, column: str) -> list[str]:
    """A 推广统计 ranking's values, top first."""
    return re.findall(rf'data-label="{column}">([^<]*)</td>', html)


async def test_every_surface_counts_an_order_on_the_day_it_was_paid(harness: Harness) -> None:
    h = harness
    me, user = await seed(h, name="王小明")
    h.clock.set(china(2027, 2, 28, 22))  # Sunday evening: C is paid and told at once
    c = (await pay(h, "FA-C", 30_000, me))["commissions"][0]["amount_fen"]
    h.clock.set(china(2027, 3, 1, 0, 10))  # A, paid at 23:30 the evening before, arrives after midnight
    a = (await pay(h, "FA-A", 12_345, me, occurred_at=china(2027, 2, 28, 23, 30).isoformat()))
    a = a["commissions"][0]["amount_fen"]
    h.clock.set(china(2027, 3, 1, 0, 30))  # B: 16:30 UTC, still 28 February in UTC
    b = (await pay(h, "FA-B", 20_000, me))["commissions"][0]["amount_fen"]
    await run_job(h, "contests")  # March's 月度推广之星

    h.clock.set(china(2027, 3, 1, 0, 45))
    reply = await h.say(user, "收益")
    assert f"今日：{yuan(b)}" in reply and f"本月：{yuan(b)}" in reply, reply  # A's commission is February's
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        await sign_in(http, h)
        home = await console_page(http, h, "/")
        assert overview_cards(home, "今日") == overview_cards(home, "本月") == [yuan(20_000), yuan(b)]

        h.clock.set(china(2027, 3, 2, 10))  # C refunded by a third, on another day: February's figures move
        refund = (await send(h, "FA-C", "refunded", amount_fen=10_000))["commissions"][0]
        c -= refund["reversed_fen"]
        h.clock.set(china(2027, 3, 3, 10))
        await send(h, "FA-A", "completed")  # completing changes no day's figure

        h.clock.set(china(2027, 3, 8, 9, 30))  # the next Monday
        reply = await h.say(user, "收益")
        assert f"今日：{yuan(0)}" in reply and f"本月：{yuan(b)}" in reply, reply
        top = await h.say(user, "排行")
        assert f"1. 王**  {yuan(20_000)}" in top and f"第 1 名，本月销售额 {yuan(20_000)}" in top, top
        http.cookie_jar.clear()
        await sign_in(http, h)
        home = await console_page(http, h, "/")
        assert overview_cards(home, "本月") == [yuan(20_000), yuan(b)]
        listing = await console_page(http, h, "/distributors.csv")
        [row] = [r for r in csv.DictReader(io.StringIO(listing.removeprefix("\ufeff"))) if r["推广码"] == me.code]
        assert (row["本月销售额（元）"], row["本月佣金（元）"]) == (plain_yuan(20_000), plain_yuan(b)), row
        assert (row["累计销售额（元）"], row["累计佣金（元）"]) == (plain_yuan(52_345), plain_yuan(a + b + c)), row
        march = await console_page(http, h, "/stats?period=month")
        assert (board(march, "销售额"), board(march, "佣金收入")) == ([yuan(20_000)], [yuan(b)])
        february = await console_page(http, h, "/stats?period=last")
        assert (board(february, "销售额"), board(february, "佣金收入")) == ([yuan(32_345)], [yuan(a + c)])
    finally:
        await http.close()

    # The weekly report of 1–7 March against 22–28 February, as queued (the notices kept since
    # 1 March may take the customer-service quota, and the report go as a template message).
    assert await wr.weekly_report(h.app, h.clock.now()) >= 1
    async with h.app[SESSIONMAKER]() as session:
        payload = await session.scalar(select(OutboxMessage.payload).where(
            OutboxMessage.key == report_week(h.clock.now()).key(me.id)))
    text = payload["content"]
    assert "【分销周报】" in text
    assert f"销售额 {yuan(20_000)}（1 笔），前一周 {yuan(32_345)}" in text, text
    assert f"收益 {yuan(b)}，前一周 {yuan(a + c)}" in text, text
    await check_invariants(h)  # the running totals recount to the same days
