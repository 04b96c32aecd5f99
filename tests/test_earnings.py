"""收益 (with its chart), 订单, 团队, the ledger API and the unfreeze job, on both databases."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from PIL import Image
from sqlalchemy import select

from sandbox.platform import Platform
from kit.app_keys import CONFIG, READER, WRITER
from kit.scheduler import JOBS
from content.charts import render_earnings_chart
from domain.formats import yuan
from domain.figures import daily_totals
from handlers.earnings import unfreeze_due, unfreeze_job
from kit.chat import EXITED, NOT_REGISTERED
from storage.models import OutboxMessage
from tests.money_support import balance, check_invariants, money_harness, pay, seed, send


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    async with money_harness(db_url, platform, wechat_server, freeze_days=7) as harness:
        yield harness


def decode(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def test_chart_renders_readably() -> None:
    days = [(date(2026, 11, 1) + timedelta(days=i), (i * 431) % 5000 - (800 if i == 3 else 0)) for i in range(30)]
    img = decode(render_earnings_chart(days))
    assert img.size == (1080, 760)
    colours = img.convert("RGB").getcolors(1_000_000)
    assert colours is not None and len(colours) > 20  # bars, text and grid, not a blank canvas
    assert decode(render_earnings_chart([(d, 0) for d, _ in days])).size == (1080, 760)


def test_daily_totals_use_china_days() -> None:
    today = date(2026, 11, 25)
    rows = [(datetime(2026, 11, 24, 16, 30, tzinfo=UTC), 100),  # 00:30 on the 25th in Shanghai
            (datetime(2026, 11, 24, 15, 30, tzinfo=UTC), 7), (datetime(2026, 10, 1, tzinfo=UTC), 999)]
    days = daily_totals(rows, today, 30)
    assert len(days) == 30 and days[-1] == (today, 100) and days[-2] == (date(2026, 11, 24), 7)
    assert sum(v for _, v in days) == 107


async def test_earnings_reply_and_chart(h: Any) -> None:
    inviter, inviter_user = await seed(h, name="王五")
    seller, user = await seed(h, inviter=inviter, name="李四")
    await pay(h, "SO1", 1234567, seller)
    await pay(h, "SO2", 12900, seller)
    await send(h, "SO2", "refunded", amount_fen=12900)
    reply = await h.say(user, "收益")
    assert "今日：¥1,234.56" in reply and "本月：¥1,234.56" in reply and "累计：¥1,234.56" in reply
    assert "待结算：¥1,234.56" in reply and "可提现：¥0.00" in reply
    item = await h.platform.wait_for(user.openid, lambda m: m.get("type") == "image")
    assert item["via"] == "custom"  # after the passive text, through the outbox
    png, _, _ = h.platform.media[item["media_id"]]
    img = decode(png)
    assert img.size == (1080, 760) and len(img.convert("RGB").getcolors(1_000_000) or []) > 20
    # The menu key gives the same report; an inviter sees theirs.
    reply = (await h.click(inviter_user, "EARNINGS"))["content"]
    assert "累计：¥370.37" in reply


async def test_nobody_and_exited_are_refused(h: Any) -> None:
    stranger = h.user()
    for word in ("收益", "订单", "团队", "提现 10", "earnings", "orders", "team"):
        assert await h.say(stranger, word) == NOT_REGISTERED
    d, user = await seed(h)
    await h.say(user, "退出")
    await h.say(user, "确认退出")
    for word in ("收益", "订单", "团队", "提现 10"):
        assert "已退出" in await h.say(user, word), word
    assert await h.say(user, "退出") == EXITED  # the one guard, the same reply everywhere


async def test_orders_report(h: Any) -> None:
    seller, user = await seed(h)
    assert "还没有推广订单" in await h.say(user, "订单")
    await pay(h, "SO-A", 10000, seller, occurred_at="2026-11-20T10:00:00+08:00")
    await pay(h, "SO-B", 20000, seller, occurred_at="2026-11-21T10:00:00+08:00")
    await pay(h, "SO-C", 30000, seller, occurred_at="2026-11-22T10:00:00+08:00")
    await pay(h, "SO-D", 40000, seller, occurred_at="2026-11-23T10:00:00+08:00")
    await send(h, "SO-B", "shipped")
    await send(h, "SO-C", "completed")
    await send(h, "SO-C", "refunded", amount_fen=10000)
    await send(h, "SO-D", "refunded", amount_fen=40000)
    reply = await h.say(user, "订单")
    assert "共 4 笔" in reply
    for line in ("【待发货】", "SO-A ¥100.00 佣金 ¥10.00", "【已发货】", "SO-B ¥200.00 佣金 ¥20.00", "【已完成】",
                 "SO-C ¥300.00（已退 ¥100.00） 佣金 ¥20.00", "【已退款】", "SO-D ¥400.00 佣金 ¥0.00"):
        assert line in reply, (line, reply)


async def test_team_report(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, max_levels=3) as h:
        me, user = await seed(h, name="赵六")
        a, _ = await seed(h, inviter=me)
        b, _ = await seed(h, inviter=me)
        c, _ = await seed(h, inviter=a)
        await pay(h, "T1", 10000, a)
        await pay(h, "T2", 5000, c)
        await pay(h, "T3", 7000, me)
        await pay(h, "T4", 9000, b)
        await send(h, "T4", "cancelled")
        reply = await h.say(user, "团队")
        assert "团队共 3 人，本月新加入 3 人" in reply
        assert "直属成员：2 人" in reply and "二级成员：1 人" in reply
        assert "本月团队销售额：¥150.00" in reply and "本月个人销售额：¥70.00" in reply


async def test_unfreeze_job_is_idempotent_and_catches_up(h: Any) -> None:
    inviter, inviter_user = await seed(h)
    seller, user = await seed(h, inviter=inviter)
    await pay(h, "U1", 12900, seller)
    await send(h, "U1", "completed")
    await pay(h, "U2", 10000, seller)  # not completed: stays pending
    app = h.app
    run = lambda until: unfreeze_due(app[WRITER], app[CONFIG], h.clock.now(), until=until)  # noqa: E731
    assert await run(datetime.now(UTC) + timedelta(days=6)) == 0
    assert (await balance(h, seller))["available_fen"] == 0
    later = datetime.now(UTC) + timedelta(days=30)  # long after: catching up
    assert await run(later) == 2
    assert await run(later) == 0
    assert await balance(h, seller) == {"pending_fen": 1000, "available_fen": 1290, "withdrawing_fen": 0,
                                        "withdrawn_fen": 0}
    assert (await balance(h, inviter))["available_fen"] == 387
    status, order = await h.api("GET", "/orders/U1")
    assert [c["state"] for c in order["commissions"]] == ["available", "available"]
    # A refund after unfreezing reverses from available.
    await send(h, "U1", "refunded", amount_fen=12900)
    assert (await balance(h, seller))["available_fen"] == 0
    await check_invariants(h)


async def test_ledger_api_paging(h: Any) -> None:
    seller, _ = await seed(h)
    for i in range(5):
        await pay(h, f"L{i}", 1000 * (i + 1), seller)
    status, body = await h.api("GET", f"/distributors/{seller.code}/ledger")
    ids = [e["id"] for e in body["entries"]]
    assert [e["amount_fen"] for e in body["entries"]] == [100, 200, 300, 400, 500] and ids == sorted(ids)
    status, body = await h.api("GET", f"/distributors/{seller.code}/ledger?after_id={ids[1]}&limit=2")
    assert [e["id"] for e in body["entries"]] == ids[2:4]
    assert (await h.api("GET", f"/distributors/{seller.code}/ledger?limit=x"))[0] == 400
    assert (await h.api("GET", "/distributors/NOBODY/ledger"))[0] == 404


async def test_earnings_asked_together_are_right_whether_preloaded_or_not(h: Any) -> None:
    """Many 收益 in one group commit share one preload; a sender with two updates in the batch
    loads alone (an earlier update could change what the later one reads)."""
    people = [await seed(h, name=f"用户{chr(0x4e00 + i)}") for i in range(6)]
    for i, (d, _) in enumerate(people):
        await pay(h, f"SO-P{i}", 10000 * (i + 1), d)
    twice = people[0][1]
    replies = await asyncio.gather(*(h.say(u, "收益") for _, u in people), h.say(twice, "收益"))
    for i in range(len(people)):
        assert f"待结算：{yuan(1000 * (i + 1))}" in replies[i], replies[i]
    assert "待结算：¥10.00" in replies[-1]


async def test_money_notices_reach_the_distributor_within_five_seconds(h: Any) -> None:
    """CONTRACT §5: 新佣金入账 and 佣金已解冻 are with WeChat within 5 s of their cause; orders
    credited together make one notice; the unfreeze job runs often enough for the second."""
    user = h.user()
    code = await h.register(user, "13800138001", "张三")
    cause = h.clock.freeze()
    for no in ("T1", "T2"):
        await send(h, no, "paid", amount_fen=10000, distributor_code=code)
    credit = await outbox_rows(h, user.openid, "credit:")
    assert len(credit) == 1 and cause < credit[0].next_attempt_at <= cause + timedelta(seconds=5)
    h.clock.set(credit[0].next_attempt_at)
    await h.settled()
    assert [m["content"] for m in h.platform.users[user.openid].timeline if "新佣金入账" in m.get("content", "")] \
        == ["新佣金入账：2 笔订单，共 ¥20.00（待结算，订单完成 7 天后可提现）。\n回复“收益”查看详情。"]
    await send(h, "T1", "completed")
    cause = h.clock.move(days=7, seconds=1)
    assert await unfreeze_job.run(h.app) == 1
    freed = await outbox_rows(h, user.openid, "available:")
    assert len(freed) == 1 and freed[0].next_attempt_at <= cause
    await h.settled()
    last = h.platform.users[user.openid].timeline[-1]  # a week after their last message: as a template message
    assert last["via"] == "template" and last["data"]["first"]["value"] == "佣金已解冻：¥10.00 现在可以提现了。"
    trigger = h.app[JOBS].by_name["unfreeze"].make_trigger()
    assert trigger.interval <= timedelta(seconds=4)  # a freeze's end is seen within this, the notice at once
    assert await unfreeze_job.run(h.app) == 0


async def outbox_rows(h: Any, openid: str, prefix: str) -> list[OutboxMessage]:
    return list(await h.app[READER].run(lambda s: s.scalars(select(OutboxMessage).where(
        OutboxMessage.openid == openid, OutboxMessage.key.startswith(prefix))).all()))
