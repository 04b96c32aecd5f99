"""分销设置 (CONTRACT §10): GET/PATCH /api/settings over real HTTP on both databases (the shape,
every refusal changing nothing, a change in force at once here and within the poll in a second
process on the same database, for what happens next only), the console's page in Chromium, and
the rule that features read the programme settings in force, never the startup configuration."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kit import live_settings
from kit.live_settings import SETTINGS
from sandbox.platform import Platform
from tests.conftest import Harness, make_config
from tests.console_support import sign_in
from tests.eventually import eventually
from tests.money_support import money_harness, pay, seed

REFUSED = [  # (body, the field the refusal names)
    ({"distribution": {"max_levels": 4}, "reason": "扩大团队"}, "distribution.max_levels"),
    ({"ranks": [{"key": "junior", "rates": ["0.10", "0.03", "0.01"]}], "reason": "三级"}, "ranks.junior.rates"),
    ({"ranks": [{"key": "gold", "rates": ["1.5", "0.05"]}], "reason": "翻倍"}, "ranks.gold.rates"),
    ({"ranks": [{"key": "platinum", "name": "铂金"}], "reason": "新等级"}, "ranks.platinum.name"),
    ({"distribution": {"freeze_days": 3}}, "reason"),
    ({"distribution": {"freeze_days": 3}, "reason": "  "}, "reason"),
]


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    async with money_harness(db_url, platform, wechat_server, freeze_days=7) as harness:
        yield harness


async def test_settings_change_through_the_api_for_what_comes_next_in_every_process(
        h: Harness, db_url: str, platform: Platform, wechat_server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    status, before = await h.api("GET", "/settings")
    assert status == 200 and before["overrides"] == []
    assert before["distribution"] == {"max_levels": 2, "freeze_days": 7, "min_withdraw_fen": 1000,
                                      "monthly_cap_fen": 0, "self_purchase": False}
    assert before["ranks"][0] == {"key": "junior", "name": "初级推广员", "rates": ["0.10", "0.03"],
                                  "min_sales_fen": 0, "min_team_size": 0}
    for body, field in REFUSED:
        status, answer = await h.api("PATCH", "/settings", json=body)
        assert status == 422 and answer["error"] == "invalid_settings", (body, answer)
        assert field in [d["field"] for d in answer["details"]], (body, answer)
    assert "三级" in (await h.api("PATCH", "/settings", json=REFUSED[0][0]))[1]["details"][0]["problem"]
    assert await h.api("GET", "/settings") == (200, before)  # nothing changed

    seller, user = await seed(h)
    booked = await pay(h, "SO-S1", 10000, seller)
    assert booked["commissions"][0]["amount_fen"] == 1000
    monkeypatch.setattr(live_settings, "POLL_SECONDS", 0.2)  # the second process polls faster than 2 s
    other = await Harness(make_config(db_url), platform, wechat_server, clock=h.clock).start()
    try:
        status, after = await h.api("PATCH", "/settings", json={
            "distribution": {"freeze_days": 3, "min_withdraw_fen": 50000},
            "ranks": [{"key": "junior", "rates": ["0.2", "0.05"]}], "reason": "十二月促销"})
        assert status == 200, after
        assert after["distribution"]["freeze_days"] == 3 and after["ranks"][0]["rates"] == ["0.2", "0.05"]
        freeze = next(o for o in after["overrides"] if o["key"] == "distribution.freeze_days")
        assert freeze["value"] == 3 and freeze["config"] == 7 and freeze["by"] == "admin"
        assert freeze["reason"] == "十二月促销"
        assert [o["key"] for o in after["overrides"]] == ["distribution.freeze_days", "distribution.min_withdraw_fen",
                                                          "ranks.junior.rates"]

        async def seen_there() -> bool:
            return (await other.api("GET", "/settings"))[1] == after
        await eventually(seen_there, what="the second process adopts the change")

        assert (await pay(h, "SO-S2", 10000, seller))["commissions"][0]["amount_fen"] == 2000  # the new rate
        status, first = await h.api("GET", "/orders/SO-S1")
        assert first["commissions"][0]["rate"] == "0.10" and first["commissions"][0]["amount_fen"] == 1000  # as booked
    finally:
        await other.close()
    h.platform.webhook_url = h.url + "/wechat"  # the second process had taken WeChat's webhook
    assert "¥500.00" in await h.say(user, "提现 20")  # chat reads the minimum in force
    status, audit = await h.api("GET", "/audit")
    assert any("冻结天数 7→3" in e["summary"] for e in audit["entries"]), audit


async def test_the_settings_page_saves_a_change_and_refuses_the_fourth_level(
        served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await sign_in(page, base)
    await page.get_by_role("link", name="分销设置").click()
    await expect(page.get_by_role("heading", name="分销设置")).to_be_visible()
    await page.get_by_label("冻结天数").fill("3")
    await page.get_by_label("原因").fill("<script>alert(1)</script>年底促销")
    await page.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("status")).to_contain_text("冻结天数 7→3")
    overrides = page.get_by_role("table", name="覆盖 config.toml 的设置")
    await expect(overrides.get_by_role("row").filter(has_text="冻结天数")).to_contain_text("<script>alert(1)</script>")
    await expect(page.get_by_role("table", name="修改历史")).to_contain_text("年底促销")
    assert app[SETTINGS].config.distribution.freeze_days == 3

    await page.get_by_label("分销层级").fill("4")
    await page.get_by_label("原因").fill("扩大团队")
    await page.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("status")).to_contain_text("法律规定最多三级分销")
    await expect(page.get_by_label("分销层级")).to_have_value("2")
    assert app[SETTINGS].config.distribution.max_levels == 2


def test_features_read_the_settings_in_force() -> None:
    """A feature reads the configuration through kit.live_settings.live_config (or ctx.config), never
    the startup configuration: a changed rate or minimum would be missed."""
    handlers = Path(__file__).parent.parent / "handlers"
    found = [f"{p.name}: {m.group(0)}" for p in sorted(handlers.glob("*.py"))
             for m in re.finditer(r"\[CONFIG\]|import[^\n]*\bCONFIG\b", p.read_text(encoding="utf-8"))]
    assert found == []
