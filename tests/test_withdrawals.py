"""提现 in chat and the admin's decisions, over the webhook and the API, on both databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
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


async def funded(h: Any, fen: int) -> tuple[Any, Any]:
    """A distributor with `fen` available (commission at 10% of a completed order)."""
    d, user = await seed(h)
    await pay(h, f"SO-{d.code}", fen * 10, d)
    await send(h, f"SO-{d.code}", "completed")
    assert (await balance(h, d))["available_fen"] == fen
    return d, user


async def test_refusals_are_clear_and_change_nothing(h: Any) -> None:
    d, user = await funded(h, 5000)
    before = await snapshot(h)
    cases = {
        "提现": "当前可提现 ¥50.00",
        "提现 12.505": "两位小数",
        "提现 abc": "格式不对",
        "提现 -5": "大于 0",
        "提现 0": "大于 0",
        "提现 9.99": "至少 ¥10.00",
        "提现 50.01": "余额不足",
        "withdraw 1e3": "格式不对",
    }
    for text, expected in cases.items():
        reply = await h.say(user, text)
        assert expected in reply, (text, reply)
    assert await snapshot(h) == before
    stranger = h.user()
    assert "注册" in await h.say(stranger, "提现 10")


async def test_a_comma_is_a_thousands_separator_only_between_groups_of_three(h: Any) -> None:
    """提现 12,5 once became ¥125.00 and 提现 12，50 ¥1,250.00: now they create nothing and the reply
    says how to type the amount; 1,234.50 is ¥1,234.50."""
    d, user = await funded(h, 300000)
    before = await snapshot(h)
    for text in ("提现 12,5", "提现 12，50", "提现 1,2345", "提现 ,123", "提现 1,,234"):
        reply = await h.say(user, text)
        assert "提现 12.50" in reply and "提现 1,234.50" in reply and "千位" in reply, (text, reply)
    assert await snapshot(h) == before
    assert "确认提现 ¥1,234.50" in await h.say(user, "提现 1,234.50")  # over ¥1,000: confirmed first
    reply = await h.say(user, "1")
    assert "已提交" in reply and "¥1,234.50" in reply, reply
    reply = await h.say(user, "提现 1，000")
    assert "已提交" in reply and "¥1,000.00" in reply, reply
    status, body = await h.api("GET", "/withdrawals?status=pending")
    assert status == 200
    assert [w["amount_fen"] for w in body["withdrawals"] if w["distributor_code"] == d.code] == [123450, 100000]
    await check_invariants(h)


async def test_withdraw_then_approve_and_reject(h: Any) -> None:
    d, user = await funded(h, 5000)
    reply = await h.say(user, "提现 12.50")
    assert "已提交" in reply and "¥12.50" in reply
    assert "已提交" in await h.say(user, "withdraw 20")
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 1750, "withdrawing_fen": 3250,
                                   "withdrawn_fen": 0}
    status, body = await h.api("GET", "/withdrawals?status=pending")
    assert status == 200
    mine = [w for w in body["withdrawals"] if w["distributor_code"] == d.code]
    assert [(w["amount_fen"], w["status"]) for w in mine] == [(1250, "pending"), (2000, "pending")]
    assert set(mine[0]) >= {"id", "distributor_code", "amount_fen", "status", "requested_at"}
    first, second = mine[0]["id"], mine[1]["id"]

    status, w = await h.api("POST", f"/withdrawals/{first}/approve")
    assert status == 200 and w["status"] == "approved" and w["amount_fen"] == 1250
    before = await snapshot(h)
    status, err = await h.api("POST", f"/withdrawals/{first}/approve")
    assert status == 409 and err["error"] == "already_decided"
    status, err = await h.api("POST", f"/withdrawals/{first}/reject", json={"reason": "重复"})
    assert status == 409
    assert await snapshot(h) == before

    for body, code in (({}, 400), ({"reason": 5}, 400), ({"reason": "  "}, 422)):
        status, err = await h.api("POST", f"/withdrawals/{second}/reject", json=body)
        assert status == code, err
    status, err = await h.api("POST", "/withdrawals/999999/approve")
    assert status == 404
    assert await snapshot(h) == before

    status, w = await h.api("POST", f"/withdrawals/{second}/reject", json={"reason": "银行卡信息有误"})
    assert status == 200 and w["status"] == "rejected" and w["reason"] == "银行卡信息有误"
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 0,
                                   "withdrawn_fen": 1250}
    status, ledger = await h.api("GET", f"/distributors/{d.code}/ledger")
    assert [(e["kind"], e["amount_fen"]) for e in ledger["entries"]] == [
        ("commission", 5000), ("withdrawal", -1250), ("withdrawal", -2000), ("withdrawal_refund", 2000)]
    # The distributor hears of both decisions.
    await h.platform.wait_for(user.openid, lambda m: m.get("via") == "custom" and "已审核通过" in m.get("content", ""))
    await h.platform.wait_for(user.openid, lambda m: "银行卡信息有误" in m.get("content", ""))
    status, body = await h.api("GET", "/withdrawals?status=approved")
    assert [w["id"] for w in body["withdrawals"]] == [first]
    status, body = await h.api("GET", "/withdrawals?status=weird")
    assert status == 400
    await check_invariants(h)


async def test_twenty_concurrent_requests_never_overdraw(h: Any) -> None:
    d, user = await funded(h, 5000)
    replies = await asyncio.gather(*(h.say(user, "提现 10.00") for _ in range(20)))
    assert sum("已提交" in r for r in replies) == 5
    assert sum("余额不足" in r for r in replies) == 15
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 0, "withdrawing_fen": 5000,
                                   "withdrawn_fen": 0}
    await check_invariants(h)


async def test_twenty_concurrent_transactions_never_overdraw(h: Any) -> None:
    """Also when each request has its own transaction (as with several processes on PostgreSQL)."""
    d, _ = await funded(h, 5000)
    sessionmaker = h.app[SESSIONMAKER]

    async def one() -> int | None:
        async with sessionmaker() as session, session.begin():
            return await session.run_sync(withdraw, d.id, 1000, datetime.now(UTC))

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert sum(r is not None for r in results) == 5
    assert (await balance(h, d))["available_fen"] == 0
    await check_invariants(h)
