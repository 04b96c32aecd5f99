"""The README's console screenshots (docs/img/console-*.png): the app in sandbox mode on a temp
SQLite and a free port, a believable demo seeded (a dozen distributors, 30 days of orders through
the orders API, two pending withdrawals and a paid one, an open ticket, two staff accounts), then
each page of PAGES shot in headless Chromium at 1280 px wide (at most MAX_HEIGHT tall), each PNG
reduced to 256 colours so that it stays under 200 KB. Development tooling, not part of the service.

Needs Playwright and Chromium (/usr/bin/chromium); Chromium is given the project's own CJK font
(content.fonts, installed with the project) through a fontconfig file, so Chinese never shows as
boxes. Run: `python -m devtools.screenshots`.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from collections import defaultdict
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image
from sqlalchemy import select, update

from app.factory import create_app
from content.fonts import cjk_font_path
from kit.app_keys import CONFIG, WRITER
from domain import staff
from domain.config import load_config
from domain.formats import CHINA
from domain.ledger import withdraw
from domain.tickets import open_ticket
from storage.models import Distributor, Follower
from storage.models_ledger import EntryKind
from storage.tables import DAILY_TOTALS, ENTRIES, ORDERS
from devtools.ports import free_port

ROOT = Path(__file__).parent.parent
OUT = ROOT / "docs" / "img"
CHROMIUM = Path("/usr/bin/chromium")
SIZE = {"width": 1280, "height": 900}
MAX_HEIGHT = 1600  # a long list is shown from its top
# (the page's link in the navigation, its file under docs/img/)
PAGES = (("概览", "console-overview.png"), ("分销员", "console-distributors.png"), ("推广统计", "console-stats.png"),
         ("订单", "console-orders.png"), ("佣金记录", "console-commissions.png"), ("提现", "console-withdrawals.png"),
         ("分销设置", "console-settings.png"), ("员工", "console-staff.png"))
STAFF = (("zhou.finance", "finance"), ("lin.ops", "ops admin"))
NAMES = ("王晓梅", "李建国", "张丽娟", "刘洋", "陈静", "杨帆", "赵雪", "黄志强", "周婷", "吴磊", "徐芳", "孙浩")


async def seed_distributors(app: web.Application, now: datetime) -> list[tuple[int, str]]:
    """Twelve distributors joined over the last 40 days, the later ones invited by the first three."""
    ranks = [r.key for r in app[CONFIG].ranks]

    def work(s: Any) -> list[tuple[int, str]]:
        made: list[Distributor] = []
        for i, name in enumerate(NAMES):
            d = Distributor(code=f"DM{i:04d}", openid=f"o-demo-{i}", phone=f"1380013{i:04d}", name=name,
                            rank=ranks[min(i // 5, len(ranks) - 1)] if i < 3 else ranks[0], status="active",
                            inviter_id=made[i % 3].id if i >= 3 else None,
                            registered_at=now - timedelta(days=40 - i * 3))
            s.add(d)
            s.flush()
            made.append(d)
        # Everyone followed first; a few followers never registered (the 概览 funnel's first step).
        s.add_all(Follower(openid=f"o-demo-{i}", subscribed=True, followed_at=now - timedelta(days=41 - i * 3),
                           created_at=now - timedelta(days=41 - i * 3)) for i in range(len(NAMES) + 8))
        return [(d.id, d.code) for d in made]
    return await app[WRITER].run(work)


async def seed_orders(base: str, token: str, codes: list[str], now: datetime) -> None:
    """Orders over the last 30 days through POST /api/orders/events: more towards the end, a dip
    at the weekends, most completed (commission available), a few refunded."""
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {token}"}
    n = 0
    async with aiohttp.ClientSession(headers=headers) as http:
        async def event(**body: Any) -> None:
            nonlocal n
            n += 1
            async with http.post(base + "/api/orders/events", json={"event_id": f"demo-{n}", **body}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"order event {body}: {resp.status} {await resp.text()}")
        for day in range(29, -1, -1):
            when = now - timedelta(days=day)
            count = 2 + (30 - day) // 6 + rng.randint(0, 3) - (2 if when.weekday() >= 5 else 0)
            for _ in range(max(count, 0)):
                order = f"SO{n + 1:05d}"
                at = (when - timedelta(minutes=rng.randint(0, 600))).isoformat()
                await event(order_no=order, type="paid", amount_fen=rng.choice((6900, 12900, 19900, 25800, 39900)),
                            distributor_code=rng.choice(codes), occurred_at=at)
                kind = "refunded" if rng.random() < 0.06 else "completed"
                if kind == "refunded":
                    await event(order_no=order, type="refunded", amount_fen=6900, occurred_at=at)
                elif day > 2:
                    await event(order_no=order, type="shipped", occurred_at=at)
                    await event(order_no=order, type="completed", occurred_at=at)


async def backdate_entries(app: web.Application) -> None:
    """The demo's orders arrive in one go, so their ledger entries all carry today's date; put each
    on its order's day, as if the shop's events had come in over the month (a demo-only shortcut),
    and move the daily totals' commission with them (every order's day has its row already)."""
    e, o, t = ENTRIES.c, ORDERS.c, DAILY_TOTALS.c
    paid = select(o.paid_at).where(o.order_no == e.order_no).scalar_subquery()

    def work(s: Any) -> None:
        s.execute(update(ENTRIES).where(e.order_no.is_not(None)).values(created_at=paid))
        days: dict[Any, int] = defaultdict(int)
        for at, fen in s.execute(select(e.created_at, e.amount_fen).where(e.kind.in_((EntryKind.COMMISSION, EntryKind.REVERSAL)))):
            days[at.astimezone(CHINA).date()] += fen
        s.execute(update(DAILY_TOTALS).values(commission_fen=0))
        for day, fen in days.items():
            s.execute(update(DAILY_TOTALS).where(t.day == day).values(commission_fen=fen))
    await app[WRITER].run(work)


async def seed_waiting(app: web.Application, base: str, ids: list[tuple[int, str]], now: datetime) -> None:
    """Two pending withdrawals and an open ticket: what the 概览 says waits for an admin; and the
    staff accounts the 员工 page lists."""
    service = app[CONFIG].service

    def work(s: Any) -> int:
        decided = withdraw(s, ids[2][0], 15000, now - timedelta(days=2))
        withdraw(s, ids[0][0], 20000, now - timedelta(hours=5))
        withdraw(s, ids[1][0], 8850, now - timedelta(hours=1))
        asker = s.get(Distributor, ids[4][0])
        open_ticket(s, openid=asker.openid, distributor=asker, text="请问提现一般多久到账？", now=now,
                    service=service)
        for name, roles in STAFF:
            staff.add(s, name, staff.hash_password(secrets.token_urlsafe(12)), staff.checked_roles(roles.split()), now)
        return decided
    decided = await app[WRITER].run(work)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {app[CONFIG].admin.token}"}) as http, \
            http.post(f"{base}/api/withdrawals/{decided}/approve") as resp:
        resp.raise_for_status()


def with_cjk_font(tmp: str) -> dict[str, str]:
    """The environment in which Chromium finds the project's CJK font besides the system's."""
    conf = Path(tmp) / "fonts.conf"
    conf.write_text('<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
                    '<include ignore_missing="yes">/etc/fonts/fonts.conf</include>'
                    f"<dir>{cjk_font_path().parent}</dir><cachedir>{tmp}/fontconfig</cachedir></fontconfig>")
    return {**os.environ, "FONTCONFIG_FILE": str(conf)}


async def shoot(base: str, token: str, tmp: str) -> None:
    from playwright.async_api import async_playwright
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"],
                                           env=with_cjk_font(tmp))
        try:
            page = await browser.new_page(viewport=SIZE)
            await page.goto(base + "/admin/")
            await page.get_by_label("管理令牌").fill(token)
            await page.get_by_role("button", name="登录").click()
            await page.get_by_role("heading", name="概览").wait_for()
            for name, file in PAGES:
                await page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
                await page.get_by_role("heading", name=name, exact=True).first.wait_for()
                height = min(await page.evaluate("document.documentElement.scrollHeight"), MAX_HEIGHT)
                await page.screenshot(path=str(OUT / file), full_page=True,
                                      clip={"x": 0, "y": 0, "width": SIZE["width"], "height": height})
                await asyncio.to_thread(shrink, OUT / file)
        finally:
            await browser.close()


def shrink(path: Path) -> None:
    """The PNG in 256 colours, optimised: a console page keeps its look at a third of the bytes."""
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


async def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="distbot-shots-") as tmp:
        config = load_config(ROOT / "config.toml", database={"url": f"sqlite+aiosqlite:///{tmp}/distbot.db"},
                             server={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
                             distribution={"freeze_days": 0})
        app = create_app(config, workers=False)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base, now = f"http://127.0.0.1:{port}", datetime.now(UTC)
        try:
            ids = await seed_distributors(app, now)
            await seed_orders(base, config.admin.token, [c for _, c in ids], now)
            await backdate_entries(app)
            await seed_waiting(app, base, ids, now)
            OUT.mkdir(parents=True, exist_ok=True)
            await shoot(base, config.admin.token, tmp)
        finally:
            await runner.cleanup()
    for _, name in PAGES:
        print(OUT / name, (OUT / name).stat().st_size, "bytes", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
