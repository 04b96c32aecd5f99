"""The weekly report through HTTP and chat, on both databases: figures for seeded orders, the
chart behind a signed link, once a week whatever runs twice, 退订周报 / 订阅周报, team figures,
suggestions, batches; and the pure parts (the week, trends, suggestion rules, routing)."""

from __future__ import annotations


import io
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from PIL import Image
from sqlalchemy import func, select

from kit.chat import ChatRouter
from app.features import FEATURES
from sandbox.platform import Platform, SimUser
from kit.app_keys import SESSIONMAKER
from content.charts import render_weekly_chart
from domain.figures import Member, Sales
from domain.formats import CHINA
from domain.ranks import next_rank_gap
from domain.weekly import (ReportWeek, Team, WeekContent, WeekFigures, report_text, report_week, suggestions,
                           team_week, trend, week_of_label)
from handlers import weekly_report as wr
from storage.models import OutboxMessage
from tests.conftest import Harness, make_config
from tests.money_support import money_harness, pay, seed, send
from tests.test_packs_support import demo, upload

GOLD = [{"key": "junior", "name": "初级推广员", "rates": [0.10, 0.03]},
        {"key": "gold", "name": "黄金合伙人", "rates": [0.15, 0.05], "min_sales_fen": 100000, "min_team_size": 2}]


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    async with money_harness(db_url, platform, wechat_server, freeze_days=7) as harness:
        yield harness


def next_week() -> tuple[datetime, ReportWeek]:
    """A run a week from now: the week it reports on is the one the test runs in, so what the
    test does now (commission, sign-ups) falls inside it."""
    now = datetime.now(UTC) + timedelta(days=7)
    return now, report_week(now)


def at(moment: datetime) -> str:
    return moment.astimezone(CHINA).isoformat()


def window_open(user: SimUser) -> SimUser:
    user.last_interaction = time.time()  # inside WeChat's 48-hour customer-service window
    return user


def reports(user: SimUser) -> list[str]:
    return [m["content"] for m in user.timeline if m.get("type") == "text" and "周报" in m["content"]
            and m["from"] == "bot" and m["via"] == "custom"]


async def report_of(h: Harness, user: SimUser) -> str:
    item = await h.platform.wait_for(user.openid, lambda m: m.get("via") == "custom" and "【分销周报】" in
                                     m.get("content", ""))
    return item["content"]


async def outbox_keys(h: Harness, like: str) -> list[str]:
    async with h.app[SESSIONMAKER]() as session:
        return list((await session.scalars(select(OutboxMessage.key).where(OutboxMessage.key.like(like)))).all())


def local(url: str, h: Harness) -> str:
    return url.replace(h.config.server.public_url, h.url)


async def fetch(h: Harness, url: str) -> tuple[int, bytes, str]:
    assert h.http is not None
    async with h.http.get(url) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


# ---- through HTTP and chat ---------------------------------------------------------------------------
async def test_the_report_shows_the_weeks_figures_and_its_chart(h: Harness) -> None:
    now, week = next_week()
    me, user = await seed(h, name="王五")
    window_open(user)
    start = week.reported[0]
    await pay(h, "W-A", 30000, me, occurred_at=at(start + timedelta(hours=10)))
    await send(h, "W-A", "completed")
    await pay(h, "W-B", 20000, me, occurred_at=at(start + timedelta(days=2)))
    await send(h, "W-B", "refunded", amount_fen=5000)
    await pay(h, "W-C", 10000, me, occurred_at=at(start - timedelta(days=3)))  # the week before
    await pay(h, "W-D", 9900, me, occurred_at=at(start - timedelta(days=20)))  # older: in neither
    await pay(h, "W-E", 7000, me, occurred_at=at(start + timedelta(days=1)))
    await send(h, "W-E", "cancelled")  # a cancelled order is no sale

    assert await wr.weekly_report(h.app, now) >= 1
    text = await report_of(h, user)
    assert "周报" in text and "王五" in text
    assert "销售额 ¥450.00（2 笔），前一周 ¥100.00，↑ 350%" in text, text
    # Commission 10 %, counted like the sales on the day each order was paid, whenever it was posted:
    # 3,000 + 2,000 + 700, less 500 (a quarter of W-B refunded) and 700 (cancelled); W-C's 1,000 the
    # week before, W-D's in neither.
    assert "收益 ¥45.00，前一周 ¥10.00，↑ 350%" in text, text
    assert "新增直属成员 0 人，前一周 0 人，持平" in text
    assert "等级：初级推广员，升级「黄金合伙人」还差 ¥9,700.00 个人销售额、10 位直属成员" in text, text
    assert "团队" not in text  # nobody invited
    assert "退订周报" in text

    # The chart comes in the same message, as a link (one customer-service message of the quota).
    # (The orders' commission notices may go out by then too, once the moved clock makes them due.)
    [report] = [m for m in user.timeline if m.get("from") == "bot" and m.get("via") == "custom"
                and "周报" in m.get("content", "")]
    link = re.search(r'\n<a href="([^"]+)">查看近两周业绩图</a>$', report["content"])
    assert link is not None and link[1].startswith(h.config.server.public_url + "/reports/weekly/")
    status, png, kind = await fetch(h, local(link[1] + ".png", h))
    assert status == 200 and kind == "image/png"
    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.format == "PNG" and img.size == (1080, 760)
    again = await fetch(h, local(link[1] + ".png", h))
    assert again[1] == png  # from the cache
    status, page, kind = await fetch(h, local(link[1], h))
    assert status == 200 and kind.startswith("text/html")
    assert "周报" in page.decode() and "¥450.00" in page.decode()


async def test_a_bad_chart_link_is_not_found(h: Harness) -> None:
    now, week = next_week()
    me, _ = await seed(h)
    good = local(wr.report_urls(h.config, week)(me.id), h)
    assert (await fetch(h, good + ".png"))[0] == 200
    did, label, signature = good.rsplit("/", 1)[1].split("-")
    forged = f"{did}-{label}-{'0' if signature[0] != '0' else '1'}{signature[1:]}"
    other = f"{me.id + 1}-{label}-{signature}"
    base = good.rsplit("/", 1)[0]
    for token in (forged, other, f"{did}-{label}", f"{did}-{label}-{signature[:-1]}", "x-y-z"):
        assert (await fetch(h, f"{base}/{token}.png"))[0] == 404, token
        assert (await fetch(h, f"{base}/{token}"))[0] == 404, token
    # A signed link for somebody who does not exist, or a week that is no Monday.
    assert (await fetch(h, local(wr.report_urls(h.config, week)(10**9), h) + ".png"))[0] == 404
    tuesday = ReportWeek(week.monday + timedelta(days=1))
    assert (await fetch(h, local(wr.report_urls(h.config, tuesday)(me.id), h) + ".png"))[0] == 404


async def test_the_report_goes_once_a_week_whatever_runs_twice(h: Harness) -> None:
    now, week = next_week()
    _, user = await seed(h)
    window_open(user)
    assert await wr.weekly_report(h.app, now) == 1
    assert await wr.weekly_report(h.app, now) == 0
    assert await wr.send_weekly_reports(h.app, now + timedelta(days=2, hours=5)) == 0  # later the same week
    await report_of(h, user)
    keys = await outbox_keys(h, f"weekly:{week.monday.date().isoformat()}:%")
    assert len(keys) == 1  # the text and the link to its chart, one message
    assert len(reports(user)) == 1
    # The next week is another report.
    assert await wr.weekly_report(h.app, now + timedelta(days=7)) == 1


async def test_unsubscribe_then_subscribe(h: Harness) -> None:
    now, _ = next_week()
    _, user = await seed(h)
    reply = await h.say(user, "退订周报")
    assert "已退订周报" in reply and "订阅周报" in reply
    assert "您已退订周报" in await h.say(user, "unsubscribe report")
    assert await wr.weekly_report(h.app, now) == 0
    reply = await h.say(user, "订阅周报")
    assert "已订阅周报" in reply and "退订周报" in reply
    assert "您已订阅周报" in await h.say(user, "subscribe report")
    assert await wr.weekly_report(h.app, now + timedelta(days=7)) == 1
    assert "【分销周报】" in await report_of(h, user)
    assert len(reports(user)) == 1


async def test_strangers_and_exited_distributors_get_nothing(h: Harness) -> None:
    now, week = next_week()
    stranger = h.user()
    await h.follow(stranger)
    assert "还不是分销员" in await h.say(stranger, "退订周报")
    leaver, user = await seed(h)
    await h.say(user, "退出")
    assert "已退出" in await h.say(user, "确认退出")
    assert "已退出" in await h.say(user, "订阅周报")
    stays, stays_user = await seed(h)
    assert await wr.weekly_report(h.app, now) == 1
    assert await outbox_keys(h, f"weekly:%:{leaver.id}%") == []
    assert len(await outbox_keys(h, f"weekly:%:{stays.id}%")) == 1  # the text with its chart link


async def test_a_team_leader_sees_the_team(h: Harness) -> None:
    now, week = next_week()
    start = week.reported[0]
    me, user = await seed(h, name="赵六")
    window_open(user)
    a, _ = await seed(h, inviter=me, name="李四")
    b, _ = await seed(h, inviter=me, name="欧阳娜娜")
    await seed(h, inviter=me, name="钱七")  # sold nothing
    await seed(h, inviter=a, name="孙八")  # a's team, not mine
    await pay(h, "T-1", 8000, a, occurred_at=at(start + timedelta(days=1)))
    await pay(h, "T-2", 3000, b, occurred_at=at(start + timedelta(days=3)))
    await pay(h, "T-3", 1000, a, occurred_at=at(start - timedelta(days=2)))
    assert await wr.weekly_report(h.app, now) == 5
    text = await report_of(h, user)
    assert "新增直属成员 3 人，前一周 0 人，↑ 3 人" in text, text
    assert "团队：直属成员 3 人，上周 2 人出单，团队销售额 ¥110.00（↑ 1000%），销售冠军 李*（¥80.00）" in text, text
    assert "还差 ¥10,000.00 个人销售额、7 位直属成员" in text, text


async def test_suggestions_follow_the_figures(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0, ranks=GOLD) as h:
        now, week = next_week()
        idle, idle_user = await seed(h, name="周一")
        window_open(idle_user)
        text = await report_of_run(h, idle_user, now)
        assert "上周还没有推广订单。发送“海报”获取专属推广海报" in text, text  # no content pack yet

        assert (await upload(h, demo()))[0] == 201
        close, close_user = await seed(h, name="吴九")
        window_open(close_user)
        for i in range(2):
            await seed(h, inviter=close)
        await pay(h, "N-1", 80000, close, occurred_at=at(week.reported[0] + timedelta(days=1)))
        await send(h, "N-1", "completed")
        text = await report_of_run(h, close_user, now)
        assert "1. 离「黄金合伙人」只差 ¥200.00 个人销售额，加把劲就能升级！" in text, text
        assert "2. 新内容「demo」上线了，有" in text and "发送“海报”获取" in text, text  # the pack went live this week
        assert "上周还没有推广订单" not in text

        idle_again, idle_again_user = await seed(h, name="郑十")
        window_open(idle_again_user)
        text = await report_of_run(h, idle_again_user, now)
        m = re.search(r"1\. 上周还没有推广订单。发一条朋友圈试试：发送“话术”获取最新话术((《[^》]+》)+)。", text)
        assert m and m.group(1).count("《") == 3, text


async def report_of_run(h: Harness, user: SimUser, now: datetime) -> str:
    await wr.send_weekly_reports(h.app, now)
    return await report_of(h, user)


async def test_pages_of_distributors_and_the_switch(db_url: str, platform: Platform,
                                                   wechat_server: TestServer) -> None:
    """Batches smaller than the crowd still reach everyone once; reports.weekly = false takes the
    job off the schedule (GET /api/jobs: no next run) but it runs when asked for; outside the
    48-hour window the report is a template message leading to its page."""
    config = make_config(db_url, reports={"weekly": False})
    async with Harness(config, platform, wechat_server, reply_deadline=3.0) as h:
        now, _ = next_week()
        people = [await seed(h, name=f"用户{chr(0x4e00 + i)}") for i in range(5)]
        status, body = await h.api("GET", "/jobs")
        listed = {j["name"]: j for j in body["jobs"]}
        assert status == 200 and listed["weekly-report"]["next_run_at"] is None
        assert listed["unfreeze"]["next_run_at"] is not None
        assert await wr.send_weekly_reports(h.app, now, batch_size=2) == 5
        assert await wr.send_weekly_reports(h.app, now, batch_size=2) == 0
        async with h.app[SESSIONMAKER]() as session:
            assert await session.scalar(select(func.count()).select_from(OutboxMessage)
                                        .where(OutboxMessage.key.like("weekly:%"))) == 5
        _, user = people[0]  # never wrote to the account: outside the window
        item = await h.platform.wait_for(user.openid, lambda m: m.get("type") == "template")
        assert item["data"]["first"]["value"] == "分销周报" and "/reports/weekly/" in item["url"]
        await h.settled()  # everything queued is out: one template message, nothing else
        assert [m["type"] for m in user.timeline if m.get("from") == "bot"] == ["template"]
        status, page, _ = await fetch(h, local(item["url"], h))
        assert status == 200 and "【分销周报】" in page.decode()
        assert "暂停发送" in await h.say(user, "订阅周报")


# ---- without a database ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,handler", [
    ("退订周报", "on_unsubscribe"), ("订阅周报", "on_subscribe"), ("unsubscribe report", "on_unsubscribe"),
    ("subscribe report", "on_subscribe"), ("/Unsubscribe Report", "on_unsubscribe"), ("SUBSCRIBE REPORT", "on_subscribe"),
    ("订单", "on_orders"), ("退出", "on_quit"), ("register", "on_register"), ("help", "on_help"),
])
def test_the_report_commands_route_to_themselves_and_take_no_others(text: str, handler: str) -> None:
    matched = ChatRouter(FEATURES).match_command(text)
    assert matched is not None and matched[0].__name__ == handler


@pytest.mark.parametrize("text", ["退订", "订阅", "周报", "unsubscribe", "subscribe", "report"])
def test_parts_of_the_report_commands_are_no_command(text: str) -> None:
    assert ChatRouter(FEATURES).match_command(text) is None


@pytest.mark.parametrize("now,monday", [
    (datetime(2026, 11, 23, 1, 0, tzinfo=UTC), date(2026, 11, 23)),  # Monday 09:00 in Shanghai
    (datetime(2026, 11, 22, 16, 0, tzinfo=UTC), date(2026, 11, 23)),  # Monday 00:00 in Shanghai
    (datetime(2026, 11, 22, 15, 59, tzinfo=UTC), date(2026, 11, 16)),  # still Sunday there
    (datetime(2026, 11, 29, 15, 0, tzinfo=UTC), date(2026, 11, 23)),  # Sunday 23:00
])
def test_the_week_is_the_monday_of_the_run_in_china(now: datetime, monday: date) -> None:
    week = report_week(now)
    assert week.monday.date() == monday and week.monday.weekday() == 0 and week.monday.hour == 0
    start, end = week.reported
    assert end == week.monday and start == week.monday - timedelta(days=7) and week.previous == (
        week.monday - timedelta(days=14), start)
    assert week.key(42) == f"weekly:{monday.isoformat()}:42"
    assert week_of_label(week.label) == week
    assert week_of_label("20261124") is None and week_of_label("2026-11-23") is None


@pytest.mark.parametrize("this,last,expected", [
    (150, 100, "↑ 50%"), (50, 100, "↓ 50%"), (100, 100, "持平"), (0, 0, "持平"), (1200, 0, "↑ ¥12.00"),
    (-500, 0, "↓ ¥5.00"), (1001, 1000, "↑ 不到 1%"), (1005, 1000, "↑ 1%"), (0, 300, "↓ 100%"),
])
def test_trend(this: int, last: int, expected: str) -> None:
    from domain.formats import yuan
    assert trend(this, last, yuan) == expected


def figures(*, orders: int = 1, fen: int = 1000, before: int = 0, personal: int = 0, team: Team | None = None,
            rank: str = "junior") -> WeekFigures:
    return WeekFigures("张三", rank, (Sales(fen, orders), Sales(before, 1)), (100, 0), (0, 0), personal, team)


def test_suggestion_rules() -> None:
    ranks = make_config("sqlite+aiosqlite:///:memory:", ranks=GOLD).ranks
    content = WeekContent(("朋友圈文案", "社群话术", "阿胶糕", "第四条"), (("winter", 3),))
    idle = figures(orders=0, fen=0)
    found = suggestions(idle, next_rank_gap(ranks, "junior", 0, 0), content)
    assert found[0].startswith("上周还没有推广订单") and "《朋友圈文案》《社群话术》《阿胶糕》" in found[0]
    assert "第四条" not in found[0] and "「winter」" in found[1] and len(found) == 2
    near = figures(personal=70000, team=Team(2, 1, (500, 0), ("李四", 500)))
    gap = next_rank_gap(ranks, "junior", 70000, 2)
    assert suggestions(near, gap, WeekContent()) == ["离「黄金合伙人」只差 ¥300.00 个人销售额，加把劲就能升级！"]
    far = figures(personal=69999, team=Team(2, 0, (0, 0), None))
    assert suggestions(far, next_rank_gap(ranks, "junior", 69999, 2), WeekContent())[0].startswith("上周销售额比前一周有增长")
    top = figures(fen=0, before=100, rank="gold")
    assert suggestions(top, None, WeekContent()) == ["把专属海报分享给更多朋友，邀请他们扫码下单：发送“海报”获取。"]
    met = suggestions(figures(personal=100000, team=Team(2, 0, (0, 0), None)),
                      next_rank_gap(ranks, "junior", 100000, 2), WeekContent())
    assert met == ["您已满足「黄金合伙人」的全部升级条件，升级后佣金比例更高。"]


def test_team_week_and_text() -> None:
    members = [Member(3, "欧阳娜娜", [Sales(500, 1), Sales(0, 0)]), Member(2, "李四", [Sales(500, 2), Sales(100, 1)]),
               Member(4, "王五", [Sales(0, 1), Sales(900, 3)])]
    team = team_week(5, members)
    assert team == Team(5, 2, (1000, 1000), ("李四", 500))  # a tie goes to the earlier member
    ranks = make_config("sqlite+aiosqlite:///:memory:").ranks
    week = report_week(datetime(2026, 11, 23, 1, 0, tzinfo=UTC))
    text = report_text(figures(team=team, rank="gold"), ranks, WeekContent(), week)
    assert text.startswith("【分销周报】张三，您好！这是您上周（11月16日–11月22日）的成绩：")
    assert "团队：直属成员 5 人，上周 2 人出单，团队销售额 ¥10.00（持平），销售冠军 李*（¥5.00）" in text
    assert "等级：黄金合伙人（已是最高等级）" in text
    assert len(text.encode()) < 2048  # WeChat's limit for a text message


def test_weekly_chart_renders_two_weeks() -> None:
    days = [(date(2026, 11, 9) + timedelta(days=i), (i * 977) % 6000) for i in range(14)]
    img = Image.open(io.BytesIO(render_weekly_chart(days)))
    assert img.size == (1080, 760) and len(img.convert("RGB").getcolors(1_000_000) or []) > 20
    assert Image.open(io.BytesIO(render_weekly_chart([(d, 0) for d, _ in days]))).size == (1080, 760)
