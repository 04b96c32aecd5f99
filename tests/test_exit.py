"""退出 / quit: confirmation, settlement, hand-over of the team, and what still happens after."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from sandbox.platform import Platform
from kit.app_keys import CONFIG, SESSIONMAKER, WRITER
from handlers.earnings import unfreeze_due
from storage.models_ledger import InviterChange
from tests.money_support import balance, check_invariants, money_harness, pay, seed, send


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr("domain.notices.NOTICE_WINDOW", timedelta(seconds=1))
    async with money_harness(db_url, platform, wechat_server, freeze_days=7) as harness:
        yield harness


async def test_cancel_keeps_everything(h: Any) -> None:
    d, user = await seed(h)
    assert "确认退出" in await h.say(user, "quit")
    assert "已取消" in await h.say(user, "取消")
    status, body = await h.api("GET", f"/distributors/{d.code}")
    assert body["status"] == "active"
    assert "确认退出" in await h.say(user, "退出")
    assert "请回复“确认退出”" in await h.say(user, "好的吧")
    assert (await h.api("GET", f"/distributors/{d.code}"))[1]["status"] == "active"


async def test_exit_settles_hands_over_and_pays_out_the_rest(h: Any) -> None:
    top, _ = await seed(h)
    leaver, user = await seed(h, inviter=top)
    kid1, _ = await seed(h, inviter=leaver)
    kid2, _ = await seed(h, inviter=leaver)
    grandkid, _ = await seed(h, inviter=kid1)
    app = h.app
    # 1290 made available, 1000 still frozen.
    await pay(h, "X1", 12900, leaver)
    await send(h, "X1", "completed")
    await unfreeze_due(app[WRITER], app[CONFIG], h.clock.now(), until=h.clock.now() + timedelta(days=8))
    await pay(h, "X2", 10000, leaver)
    await send(h, "X2", "completed")

    ask = await h.say(user, "退出")
    assert "¥12.90" in ask and "¥10.00" in ask and "2 位直属成员" in ask
    done = await h.say(user, "确认退出")
    assert "已退出" in done and "¥12.90" in done and "¥10.00" in done and "2 位直属成员" in done

    body = (await h.api("GET", f"/distributors/{leaver.code}"))[1]
    assert body["status"] == "exited"
    assert body["balance"] == {"pending_fen": 1000, "available_fen": 0, "withdrawing_fen": 1290, "withdrawn_fen": 0}
    for kid in (kid1, kid2):
        assert (await h.api("GET", f"/distributors/{kid.code}"))[1]["inviter_code"] == top.code
    assert (await h.api("GET", f"/distributors/{grandkid.code}"))[1]["inviter_code"] == kid1.code
    async with app[SESSIONMAKER]() as session:
        changes = (await session.scalars(select(InviterChange))).all()
    assert sorted(c.distributor_id for c in changes) == sorted([kid1.id, kid2.id])
    assert all(c.old_inviter_id == leaver.id and c.new_inviter_id == top.id for c in changes)

    status, body = await h.api("GET", "/withdrawals?status=pending")
    assert [(w["amount_fen"], w["source"]) for w in body["withdrawals"] if w["distributor_code"] == leaver.code] == [
        (1290, "exit")]

    # The frozen rest unfreezes on schedule and goes out through the same request path.
    await unfreeze_due(app[WRITER], app[CONFIG], h.clock.now(), until=h.clock.now() + timedelta(days=8))
    assert await balance(h, leaver) == {"pending_fen": 0, "available_fen": 0, "withdrawing_fen": 2290,
                                        "withdrawn_fen": 0}
    status, body = await h.api("GET", "/withdrawals?status=pending")
    assert sorted(w["amount_fen"] for w in body["withdrawals"] if w["distributor_code"] == leaver.code) == [1000, 1290]
    await h.platform.wait_for(user.openid, lambda m: "自动提交为提现申请" in m.get("content", ""))

    # Orders of the former team now earn the new inviter; the leaver earns nothing more.
    answer = await pay(h, "X3", 10000, kid2)
    assert [(c["distributor_code"], c["amount_fen"]) for c in answer["commissions"]] == [(kid2.code, 1000),
                                                                                        (top.code, 300)]
    assert "不能重新注册" in await h.say(user, "注册") or "已退出" in await h.say(user, "注册")
    await check_invariants(h)


async def test_top_level_exit_makes_invitees_top_level(h: Any) -> None:
    leaver, user = await seed(h)
    kid, _ = await seed(h, inviter=leaver)
    assert "1 位直属成员将转给总部" in await h.say(user, "退出")  # no inviter to hand them to
    reply = await h.say(user, "确认退出")
    assert "总部" in reply and "审核结果" not in reply  # nothing left to decide
    assert (await h.api("GET", f"/distributors/{kid.code}"))[1]["inviter_code"] is None
