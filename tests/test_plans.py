"""Commission plans over the real interfaces, on both databases (CONTRACT §8): a pack's per-SKU
rates replace the rank rates, a repeat purchase within the window earns the extra rate at depth 0
only, a plan change never touches booked commission, and the monthly team bonus is shown in 收益
and paid once by the `team-bonus` job for a finished month, whatever runs twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp.test_utils import TestServer

from domain.clock import FakeClock
from domain.formats import CHINA
from kit.scheduler import JOBS
from sandbox.platform import Platform
from tests.conftest import Harness, make_config
from tests.eventually import eventually
from tests.money_support import check_invariants, pay, seed, send
from tests.test_packs_support import MANIFEST, small_pack, upload, zip_of

PLANS = {"repeat": {"window_days": 30, "extra_rate": 0.02}, "team_cap_fen": 2_000,
         "team_tiers": [{"min_team_sales_fen": 10_000, "rate": 0.01}, {"min_team_sales_fen": 50_000, "rate": 0.05}]}
IMAGE_LINE = 'image = "images/sku1.png"'


def pack_with_rates(version: str, rates: str) -> bytes:
    manifest = MANIFEST.replace('version = "1"', f'version = "{version}"').replace(
        IMAGE_LINE, f"{IMAGE_LINE}\nrates = {rates}")
    return zip_of(small_pack(manifest))


def shares(answer: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(c["distributor_code"], c["depth"], c["amount_fen"]) for c in answer["commissions"]]


async def rewards(h: Harness, code: str) -> list[tuple[int, str]]:
    status, body = await h.api("GET", f"/distributors/{code}/ledger")
    assert status == 200, body
    return [(e["amount_fen"], e["kind"]) for e in body["entries"] if e["kind"] == "reward"]


async def test_plans_from_the_order_to_the_team_bonus(db_url: str, platform: Platform,
                                                      wechat_server: TestServer) -> None:
    clock = FakeClock(datetime(2026, 11, 2, 10, tzinfo=CHINA))
    config = make_config(db_url, distribution={"max_levels": 2, "freeze_days": 0}, rewards=PLANS)
    async with Harness(config, platform, wechat_server, clock=clock, reply_deadline=3.0) as h:
        boss, boss_user = await seed(h, name="王老板")
        m1, _ = await seed(h, inviter=boss)
        m2, _ = await seed(h, inviter=boss)
        # A product's rates go no deeper than max_levels: refused at upload.
        status, body = await upload(h, pack_with_rates("1", "[0.2, 0.05, 0.01]"))
        assert status == 422 and any(p["field"] == "products[0].rates" for p in body["details"]), body
        status, body = await upload(h, pack_with_rates("1", "[0.20, 0.05]"))
        assert status == 201, body

        # The SKU's own rates replace the rank rates (junior: 0.10, 0.03), for every depth.
        first = await pay(h, "PL-1", 40_000, m1, sku="sku-1", buyer_openid="o-buyer")
        assert shares(first) == [(m1.code, 0, 8_000), (boss.code, 1, 2_000)]
        # The same buyer again through m1 within 30 days: +0.02 at depth 0 only, one commission.
        clock.move(days=3)
        again = await pay(h, "PL-2", 20_000, m1, buyer_openid="o-buyer")
        assert shares(again) == [(m1.code, 0, 2_400), (boss.code, 1, 600)]
        # Through another distributor it is no repeat; without a buyer neither.
        other = await pay(h, "PL-3", 10_000, m2, buyer_openid="o-buyer")
        assert shares(other) == [(m2.code, 0, 1_000), (boss.code, 1, 300)]
        await send(h, "PL-3", "refunded", amount_fen=5_000)
        # A plan change never touches booked commission: new rates, then a full refund of PL-1
        # reverses exactly what was booked.
        status, _ = await upload(h, pack_with_rates("2", "[0.30, 0.10]"))
        assert status == 201
        refunded = await send(h, "PL-1", "refunded", amount_fen=40_000)
        assert [(c["amount_fen"], c["reversed_fen"]) for c in refunded["commissions"]] == [(8_000, 8_000),
                                                                                           (2_000, 2_000)]
        # Team sales in November: 20,000 + 10,000 − 5,000 (PL-1 refunded in full) = 25,000: tier 1.
        reply = await h.say(boss_user, "收益")
        assert "本月团队销售额：¥250.00，团队奖励预估：¥2.50" in reply, reply
        assert "团队再卖 ¥250.00 可达下一档" in reply, reply
        bigger = await pay(h, "PL-4", 60_000, m2)
        assert shares(bigger)[0] == (m2.code, 0, 6_000)  # no buyer: no repeat

        # The running month cannot be paid; a bad month is refused.
        for month, code in (("2026-11", "month_not_finished"), ("2026-13", "invalid_month"),
                            ("Nov", "invalid_month")):
            status, body = await h.api("POST", "/jobs/team-bonus/run", json={"month": month})
            assert (status, body["error"]) == (422, code), body
        # December: November is finished. 85,000 of sales reach tier 2 (5% = 4,250), capped at 2,000.
        clock.set(datetime(2026, 12, 10, 10, tzinfo=CHINA))
        late = await pay(h, "PL-5", 10_000, m1, buyer_openid="o-buyer")  # 35 days after PL-2: no repeat
        assert shares(late)[0] == (m1.code, 0, 1_000)
        for _ in range(2):
            status, body = await h.api("POST", "/jobs/team-bonus/run", json={"month": "2026-11"})
            assert status == 202 and body["month"] == "2026-11", body
        await eventually(lambda: rewards(h, boss.code), what="November's team bonus paid")
        await h.app[JOBS].by_name["team-bonus"].run(h.app)  # the scheduled run: the month before, nothing again
        status, _ = await h.api("POST", "/jobs/team-bonus/run")  # no body: the month before, too
        assert status == 202
        await h.settled()
        assert await rewards(h, boss.code) == [(2_000, "reward")]
        assert await rewards(h, m1.code) == [] and await rewards(h, m2.code) == []
        reply = await h.say(boss_user, "收益")
        assert "本月团队销售额：¥100.00，团队奖励预估：¥1.00" in reply and "团队再卖 ¥400.00 可达下一档" in reply, reply
        # The bonus was told as it was paid (a template message: the boss had not written lately).
        told = await h.platform.wait_for(boss_user.openid, lambda m: "团队奖励到账" in str(m))
        assert "2026年11月直属团队业绩奖励 ¥20.00" in str(told), told
        await h.app[JOBS].by_name["weekly-report"].run(h.app)  # the weekly report shows the same
        report = await h.platform.wait_for(boss_user.openid, lambda m: "【分销周报】" in m.get("content", ""))
        assert "团队再卖 ¥400.00 可达下一档" in report["content"], report
        await check_invariants(h)
