"""提现 全部 and the menu's 提现, and the confirmation of a withdrawal over ¥1,000: 1 creates it (its
rules checked again then), any other reply cancels it and is read as usual; a retried 1 is
answered the same and creates nothing more. Over the webhook, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER
from domain.ledger import withdraw
from tests.money_support import balance, check_invariants, money_harness, pay, seed, send, snapshot


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0, min_withdraw_fen=1000) as harness:
        yield harness


async def pending_amounts(h: Any, code: str) -> list[int]:
    status, body = await h.api("GET", "/withdrawals?status=pending")
    assert status == 200, body
    return [w["amount_fen"] for w in body["withdrawals"] if w["distributor_code"] == code]


async def test_withdraw_all_and_large_amounts_are_confirmed_first(h: Any) -> None:
    d, user = await seed(h)
    await pay(h, f"SO-{d.code}", 4_000_000, d)  # 10%: ¥4,000.00 available once completed
    assert "待结算 ¥4,000.00" in (await h.click(user, "WITHDRAW") or {}).get("content", "")
    await send(h, f"SO-{d.code}", "completed")

    # The menu's 提现 explains the balance and how to ask for it.
    menu = (await h.click(user, "WITHDRAW") or {}).get("content", "")
    assert "当前可提现 ¥4,000.00" in menu and "提现 全部" in menu and "提现 12.50" in menu, menu
    # 提现 全部 over ¥1,000: the amount in one line, and 1 to confirm; nothing created yet.
    before = await snapshot(h)
    ask = await h.say(user, "提现 全部")
    assert ask.count("\n") == 0 and "确认提现 ¥4,000.00" in ask and "回复 1" in ask, ask
    # Another command cancels it and is answered as itself; a 1 after that is just a 1.
    assert (await h.say(user, "收益")).startswith(f"{d.name}的收益")
    assert "分销员助手可以帮您" in await h.say(user, "1")
    assert await snapshot(h) == before

    # A new amount (a command with its argument) replaces the question; 1 creates that one.
    assert "确认提现 ¥4,000.00" in await h.say(user, "withdraw all")
    assert "确认提现 ¥2,500.00" in await h.say(user, "提现 2,500")
    fields = h.platform.message_fields(user, "text", content="1")
    first = h.platform.open_reply(await h.platform.post(h.http, fields))
    again = h.platform.open_reply(await h.platform.post(h.http, fields))  # WeChat's retry, same MsgId
    assert first == again and "提现申请已提交：¥2,500.00" in first["content"], (first, again)
    assert await pending_amounts(h, d.code) == [250_000]

    # The rules are checked again at the 1: the balance fell meanwhile.
    assert "确认提现 ¥1,200.00" in await h.say(user, "提现 1200")
    async with h.app[SESSIONMAKER]() as session, session.begin():
        await session.run_sync(lambda s: withdraw(s, d.id, 100_000, h.clock.now()))
    assert "可提现余额不足" in await h.say(user, "1")
    # ¥500.00 left: 提现 全部 at most ¥1,000 is created at once; then there is nothing left.
    assert "提现申请已提交：¥500.00" in await h.say(user, "提现 全部")
    assert "没有可提现的余额" in await h.say(user, "提现 全部")
    assert "余额不足" in await h.say(user, "提现 1,000.01")  # only what would be accepted is confirmed
    assert await pending_amounts(h, d.code) == [250_000, 100_000, 50_000]
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 0, "withdrawing_fen": 400_000,
                                   "withdrawn_fen": 0}
    await check_invariants(h)
