"""The whole money path in the sandbox, as a newcomer would see it: register in chat, the shop
posts an order, 收益 shows it with its chart, notices arrive batched, withdraw, the admin approves."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER
from storage.models import OutboxMessage
from tests.eventually import eventually
from tests.money_support import check_invariants, event, money_harness, post_event


@pytest.fixture(autouse=True)
def short_notice_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("domain.notices.NOTICE_WINDOW", timedelta(seconds=1))


async def test_sandbox_money_flow(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0, min_withdraw_fen=1000) as h:
        alice, bob = h.user(), h.user()
        code_a = await h.register(alice, "13800138000", "张三")
        code_b = await h.register(bob, "13900139000", "李四", scene=code_a)

        status, answer = await post_event(h, event("SO1001", "paid", amount_fen=12900, distributor_code=code_b,
                                                   buyer_openid="o-buyer", sku="SKU-1"))
        assert status == 200
        assert [(c["distributor_code"], c["amount_fen"]) for c in answer["commissions"]] == [(code_b, 1290),
                                                                                             (code_a, 387)]
        await h.platform.wait_for(bob.openid, lambda m: "新佣金入账" in m.get("content", "")
                                  and "¥12.90" in m["content"])
        status, _ = await post_event(h, event("SO1001", "completed"))
        assert status == 200
        await h.platform.wait_for(bob.openid, lambda m: "佣金已解冻" in m.get("content", ""))

        reply = await h.say(bob, "收益")
        assert "今日：¥12.90" in reply and "可提现：¥12.90" in reply
        image = await h.platform.wait_for(bob.openid, lambda m: m.get("type") == "image")
        assert image["media_id"] in h.platform.media

        assert "已提交" in await h.say(bob, "提现 12.90")
        status, pending = await h.api("GET", "/withdrawals?status=pending")
        [w] = [w for w in pending["withdrawals"] if w["distributor_code"] == code_b]
        status, decided = await h.api("POST", f"/withdrawals/{w['id']}/approve")
        assert status == 200 and decided["status"] == "approved"
        await h.platform.wait_for(bob.openid, lambda m: "已审核通过" in m.get("content", ""))
        status, body = await h.api("GET", f"/distributors/{code_b}")
        assert body["balance"] == {"pending_fen": 0, "available_fen": 0, "withdrawing_fen": 0, "withdrawn_fen": 1290}
        await check_invariants(h)


async def test_a_burst_of_orders_makes_one_notice(db_url: str, platform: Platform,
                                                  wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, freeze_days=7) as h:
        user = h.user()
        code = await h.register(user, "13700137000", "王五")
        results = await asyncio.gather(*(post_event(h, event(f"B{i}", "paid", amount_fen=1000, distributor_code=code))
                                         for i in range(12)))
        assert all(status == 200 for status, _ in results)
        async with h.app[SESSIONMAKER]() as session:
            notices = (await session.scalars(select(OutboxMessage).where(
                OutboxMessage.openid == user.openid, OutboxMessage.key.like("credit:%")))).all()
        assert sum(n.payload["merge"]["n"] for n in notices) == 12
        assert len(notices) <= 2  # one per one-second window: the burst may straddle a boundary
        def sent() -> list[str]:
            return [m["content"] for m in user.timeline if "新佣金入账" in m.get("content", "")]
        await eventually(lambda: len(sent()) >= len(notices), what="each notice, once its window is over")
        await h.settled()  # and nothing more
        texts = sent()
        assert len(texts) == len(notices)
        assert "12 笔订单，共 ¥12.00" in texts[0] or len(texts) == 2
