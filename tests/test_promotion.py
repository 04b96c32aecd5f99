"""Ranks through HTTP and chat, on both databases: promotion at the exact line after a completed
order and by team size, 等级's figures and bars, the daily job, an admin's rank change and an
adjustment keeping the ledger's invariants (CONTRACT §3, §4.1, §5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER
from storage.models import Distributor
from storage.tables import RANK_CHANGES
from tests.money_support import balance, check_invariants, money_harness, pay, seed, send

RANKS = [
    {"key": "junior", "name": "初级推广员", "rates": [0.10, 0.03]},
    {"key": "gold", "name": "黄金合伙人", "rates": [0.15, 0.05], "min_sales_fen": 10000, "min_team_size": 2},
    {"key": "diamond", "name": "钻石合伙人", "rates": [0.2, 0.06], "min_sales_fen": 50000, "min_team_size": 3},
]


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    async with money_harness(db_url, platform, wechat_server, ranks=RANKS, freeze_days=0) as harness:
        yield harness


async def rank_of(h: Any, d: Distributor) -> str:
    status, body = await h.api("GET", f"/distributors/{d.code}")
    assert status == 200, body
    return body["rank"]


async def changes(h: Any, d: Distributor) -> list[dict[str, Any]]:
    status, body = await h.api("GET", f"/distributors/{d.code}/rank-changes")
    assert status == 200, body
    return body["changes"]


async def heard(h: Any, user: Any, *parts: str) -> str:
    """A message that reached the user with every part, as a customer-service or a template
    message (a seeded user has not written yet: their 48-hour window is closed)."""
    def text(m: dict[str, Any]) -> str:
        return m.get("content", "") + json.dumps(m.get("data", {}), ensure_ascii=False)
    found = await h.platform.wait_for(user.openid, lambda m: all(p in text(m) for p in parts))
    return text(found)


async def sell(h: Any, d: Distributor, order_no: str, fen: int) -> None:
    await pay(h, order_no, fen, d)
    await send(h, order_no, "completed")


async def test_promotion_at_the_exact_line_after_a_completed_order(h: Any) -> None:
    boss, boss_user = await seed(h)
    for _ in range(2):
        await seed(h, inviter=boss)
    await sell(h, boss, "P-1", 9999)
    await pay(h, "P-2", 1, boss)  # paid, not completed: does not count yet
    assert await rank_of(h, boss) == "junior"
    reply = await h.say(boss_user, "等级")
    assert "还差 ¥0.01" in reply and "▓" in reply and "99%" in reply, reply
    await send(h, "P-2", "completed")
    assert await rank_of(h, boss) == "gold"
    await heard(h, boss_user, "恭喜您升级为【黄金合伙人】", "15%", "5%")
    [change] = await changes(h, boss)
    assert (change["old_rank"], change["new_rank"], change["actor"]) == ("junior", "gold", "system")
    assert "¥100.00" in change["reason"]
    # The next order pays the new rate; a refund later never demotes.
    body = await pay(h, "P-3", 10000, boss)
    assert body["commissions"][0]["amount_fen"] == 1500
    await send(h, "P-1", "refunded", amount_fen=9999)
    assert await rank_of(h, boss) == "gold"
    await check_invariants(h)


async def test_team_size_counts_active_direct_invitees_only(h: Any) -> None:
    boss, boss_user = await seed(h)
    await sell(h, boss, "T-1", 20000)
    assert await rank_of(h, boss) == "junior"  # sales met, team 0 of 2
    first = h.user()
    await h.register(first, "13700000001", "李四", code=boss.code)
    assert await rank_of(h, boss) == "junior"
    reply = await h.say(boss_user, "等级")
    assert "1 / 2 人，还差 1 人" in reply and "个人销售 ¥200.00 / ¥100.00，已达标" in reply, reply
    second = h.user()
    await h.register(second, "13700000002", "王五", code=boss.code)  # the registration promotes at once
    assert await rank_of(h, boss) == "gold"
    await heard(h, boss_user, "黄金合伙人")


async def test_promotion_skips_ranks_and_the_job_changes_nothing_twice(h: Any) -> None:
    boss, _ = await seed(h)
    for _ in range(3):
        await seed(h, inviter=boss)
    await sell(h, boss, "J-1", 60000)  # promoted at once, straight to diamond
    assert await rank_of(h, boss) == "diamond"
    for _ in range(2):
        status, _ = await h.api("POST", "/jobs/ranks/run")
        assert status == 202
    assert [(c["old_rank"], c["new_rank"]) for c in await changes(h, boss)] == [("junior", "diamond")]
    async with h.app[SESSIONMAKER]() as session:
        assert await session.scalar(select(func.count()).select_from(RANK_CHANGES)) == 1


async def test_the_job_promotes_by_team_size(h: Any) -> None:
    boss, boss_user = await seed(h)
    await sell(h, boss, "K-1", 10000)
    for _ in range(2):
        await seed(h, inviter=boss)  # straight into the database: nothing promoted yet
    assert await rank_of(h, boss) == "junior"
    status, _ = await h.api("POST", "/jobs/ranks/run")
    assert status == 202
    await heard(h, boss_user, "黄金合伙人")
    assert await rank_of(h, boss) == "gold"


async def test_rank_shows_rates_and_says_so_at_the_top(h: Any) -> None:
    d, user = await seed(h, rank="diamond")
    reply = await h.say(user, "rank")
    assert "【我的等级】钻石合伙人" in reply and "20%" in reply and "6%" in reply
    assert "最高等级" in reply and "下一等级" not in reply
    j, juser = await seed(h)
    reply = await h.say(juser, "等级")
    assert "初级推广员" in reply and "下一等级：【黄金合伙人】" in reply and "还差 ¥100.00" in reply
    assert "还差 2 人" in reply and "░░░░░░░░░░ 0%" in reply
    clicked = await h.click(juser, "RANK")
    assert clicked is not None and "初级推广员" in clicked["content"]


async def test_an_admin_moves_a_rank_up_and_down_with_a_reason(h: Any) -> None:
    d, user = await seed(h)
    for body, field in (({"rank": "platinum", "reason": "x"}, "rank"), ({"rank": "gold"}, "reason"),
                        ({"rank": "gold", "reason": "  "}, "reason")):
        status, err = await h.api("POST", f"/distributors/{d.code}/rank", json=body)
        assert status == 422, (body, err)
        assert any(p["field"] == field for p in err["details"]), err
    status, _ = await h.api("POST", "/distributors/NOSUCH/rank", json={"rank": "gold", "reason": "x"})
    assert status == 404
    status, body = await h.api("POST", f"/distributors/{d.code}/rank", json={"rank": "diamond", "reason": "年度特批"})
    assert status == 200 and body["rank"] == "diamond" and body["code"] == d.code
    await heard(h, user, "钻石合伙人")
    status, body = await h.api("POST", f"/distributors/{d.code}/rank", json={"rank": "junior", "reason": "违规降级"})
    assert status == 200 and body["rank"] == "junior"
    await heard(h, user, "已调整为【初级推广员】")
    history = await changes(h, d)
    assert [(c["old_rank"], c["new_rank"], c["reason"], c["actor"]) for c in history] == [
        ("junior", "diamond", "年度特批", "admin"), ("diamond", "junior", "违规降级", "admin")]
    assert all(c["created_at"].endswith("+08:00") for c in history)
    # Demoted by hand, not promoted back by nobody's doing: the figures do not meet gold.
    status, _ = await h.api("POST", "/jobs/ranks/run")
    assert await rank_of(h, d) == "junior"


async def test_adjustments_keep_the_ledger_invariant(h: Any) -> None:
    d, user = await seed(h)
    await sell(h, d, "A-1", 10000)  # ¥10.00 available
    for body, code in (({"amount_fen": 0, "reason": "x"}, 422), ({"amount_fen": 500}, 422),
                       ({"amount_fen": 500, "reason": " "}, 422), ({"amount_fen": "5", "reason": "x"}, 400),
                       ({"amount_fen": 10**13, "reason": "x"}, 422)):
        status, err = await h.api("POST", f"/distributors/{d.code}/adjustments", json=body)
        assert status == code, (body, err)
    status, entry = await h.api("POST", f"/distributors/{d.code}/adjustments",
                                json={"amount_fen": 500, "reason": "活动补贴"})
    assert status == 201 and entry["kind"] == "adjustment" and entry["amount_fen"] == 500
    assert entry["reason"] == "活动补贴" and entry["actor"] == "admin" and entry["id"] > 0
    status, entry = await h.api("POST", f"/distributors/{d.code}/adjustments",
                                json={"amount_fen": -1800, "reason": "错发更正"})
    assert status == 201
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": -300, "withdrawing_fen": 0,
                                   "withdrawn_fen": 0}
    status, ledger = await h.api("GET", f"/distributors/{d.code}/ledger")
    assert [(e["kind"], e["amount_fen"]) for e in ledger["entries"]] == [
        ("commission", 1000), ("adjustment", 500), ("adjustment", -1800)]
    await heard(h, user, "错发更正", "−¥18.00")
    await check_invariants(h)
