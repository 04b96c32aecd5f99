"""Suspension through HTTP and chat on both databases (CONTRACT §4.12, §4.1 `suspended`): a
suspended distributor earns nothing (the levels above still do), cannot withdraw, and every chat
command but 客服 says so and why; reinstating restores everything but what was missed; both are
recorded and the distributor is told."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER
from storage.models_risk import Suspension
from tests.conftest import Harness
from tests.money_support import balance, check_invariants, money_harness, pay, seed, send


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0, min_withdraw_fen=1000) as harness:
        yield harness


def shares(answer: dict[str, object]) -> list[tuple[str, int, int]]:
    return [(c["distributor_code"], c["depth"], c["amount_fen"]) for c in answer["commissions"]]  # type: ignore[index]


async def test_a_suspended_distributor_earns_nothing_and_the_upline_still_does(h: Harness) -> None:
    top, _ = await seed(h)
    d, _ = await seed(h, inviter=top)
    status, body = await h.api("POST", f"/distributors/{d.code}/suspend", json={"reason": "刷单嫌疑"})
    assert status == 200 and body["status"] == "suspended" and body["code"] == d.code
    assert shares(await pay(h, "P1", 10000, d)) == [(top.code, 1, 300)]
    assert (await balance(h, d))["pending_fen"] == 0

    # A suspended inviter is skipped alike; the credited distributor still earns.
    assert (await h.api("POST", f"/distributors/{d.code}/reinstate", json={}))[0] == 200
    assert (await h.api("POST", f"/distributors/{top.code}/suspend", json={"reason": "核查中"}))[0] == 200
    assert shares(await pay(h, "P2", 10000, d)) == [(d.code, 0, 1000)]

    # Reinstated: both earn again; what was missed stays missed.
    status, body = await h.api("POST", f"/distributors/{top.code}/reinstate", json={"reason": "核查无误"})
    assert status == 200 and body["status"] == "active"
    assert shares(await pay(h, "P3", 10000, d)) == [(d.code, 0, 1000), (top.code, 1, 300)]
    assert (await balance(h, d))["pending_fen"] == 2000 and (await balance(h, top))["pending_fen"] == 600
    # Refunding an order paid while suspended reverses only what was paid.
    await send(h, "P1", "refunded", amount_fen=10000)
    assert (await balance(h, top))["pending_fen"] == 300
    await check_invariants(h)

    async with h.app[SESSIONMAKER]() as s:
        rows = (await s.scalars(select(Suspension).order_by(Suspension.id))).all()
    assert [(r.distributor_id, r.action, r.reason, r.actor) for r in rows] == [
        (d.id, "suspend", "刷单嫌疑", "admin"), (d.id, "reinstate", "恢复", "admin"),
        (top.id, "suspend", "核查中", "admin"), (top.id, "reinstate", "核查无误", "admin")]


async def test_chat_says_why_and_only_kefu_still_serves(h: Harness) -> None:
    d, user = await seed(h)
    await pay(h, "C1", 50000, d)
    await send(h, "C1", "completed")
    assert (await h.api("POST", f"/distributors/{d.code}/suspend", json={"reason": "多次上级自购"}))[0] == 200
    await h.platform.wait_for(user.openid, lambda m: "已被暂停" in str(m) and "多次上级自购" in str(m))
    for command in ("收益", "提现 20", "提现记录", "海报", "团队", "订单", "帮助", "注册"):
        reply = await h.say(user, command)
        assert "已暂停" in reply and "多次上级自购" in reply, (command, reply)
    assert (await balance(h, d))["withdrawing_fen"] == 0
    kefu = await h.say(user, "客服")
    assert "已暂停" not in kefu and "请直接发送您的问题" in kefu
    assert "工单" in await h.say(user, "为什么暂停我？")

    assert (await h.api("POST", f"/distributors/{d.code}/reinstate", json={"reason": "申诉通过"}))[0] == 200
    await h.platform.wait_for(user.openid, lambda m: "已恢复" in str(m))
    assert "已暂停" not in await h.say(user, "收益")
    assert "提现申请已提交" in await h.say(user, "提现 20")


async def test_no_withdrawal_of_a_suspended_distributor_is_approved(h: Harness) -> None:
    d, user = await seed(h)
    await pay(h, "W1", 50000, d)
    await send(h, "W1", "completed")
    assert "提现申请已提交" in await h.say(user, "提现 20")
    assert "提现申请已提交" in await h.say(user, "提现 10")
    first, second = [w["id"] for w in (await h.api("GET", "/withdrawals?status=pending"))[1]["withdrawals"]]
    assert (await h.api("POST", f"/distributors/{d.code}/suspend", json={"reason": "核查"}))[0] == 200
    status, body = await h.api("POST", f"/withdrawals/{first}/approve")
    assert status == 409 and body["error"] == "distributor_suspended"
    status, body = await h.api("POST", f"/withdrawals/{second}/reject", json={"reason": "账号暂停"})
    assert status == 200 and body["status"] == "rejected"
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3000, "withdrawing_fen": 2000, "withdrawn_fen": 0}
    assert (await h.api("POST", f"/distributors/{d.code}/reinstate", json={}))[0] == 200
    assert (await h.api("POST", f"/withdrawals/{first}/approve"))[0] == 200
    await check_invariants(h)


async def test_refusals(h: Harness) -> None:
    d, user = await seed(h)
    assert (await h.api("POST", f"/distributors/{d.code}/reinstate", json={}))[1]["error"] == "not_suspended"
    assert (await h.api("POST", f"/distributors/{d.code}/suspend", json={}))[0] == 400
    assert (await h.api("POST", f"/distributors/{d.code}/suspend", json={"reason": "  "}))[0] == 422
    assert (await h.api("POST", "/distributors/NOSUCH/suspend", json={"reason": "x"}))[0] == 404
    assert (await h.api("POST", f"/distributors/{d.code}/suspend", json={"reason": "x"}))[0] == 200
    status, body = await h.api("POST", f"/distributors/{d.code}/suspend", json={"reason": "again"})
    assert status == 409 and body["error"] == "not_active" and body["details"] == {"status": "suspended"}
    assert (await h.api("POST", f"/distributors/{d.code}/reinstate", json={}))[0] == 200
    # An exited distributor cannot be suspended.
    assert "确认退出" in await h.say(user, "退出")
    assert "已退出" in await h.say(user, "确认退出")
    status, body = await h.api("POST", f"/distributors/{d.code}/suspend", json={"reason": "x"})
    assert status == 409 and body["details"] == {"status": "exited"}
