"""Risk rules through HTTP and chat on both databases (CONTRACT §4.12): each rule at its threshold
(exactly at → no flag, one over → a flag), one open flag per distributor and rule, admins told of
each new flag, the flags' API (list, resolve by dismissing or suspending), the sign-up burst's
follow-up by the risk job, and an open flag making a withdrawal's approval 409."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select, update

from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER, WRITER
from storage.models import Distributor
from storage.models_risk import RiskFlag
from tests.conftest import Harness, make_config
from tests.money_support import balance, pay, seed, send
from tests.test_jobs import run_job

STAFF = ("oRiskStaffWang", "oRiskStaffLi")
_phones = itertools.count(1)


@asynccontextmanager
async def risk_harness(db_url: str, platform: Platform, wechat_server: TestServer,
                       **risk: Any) -> AsyncIterator[Harness]:
    config = make_config(db_url, admin={"notify_openids": list(STAFF)}, risk=risk,
                         distribution={"freeze_days": 0, "min_withdraw_fen": 1000})
    async with Harness(config, platform, wechat_server, reply_deadline=3.0) as h:
        for openid in STAFF:
            staff = h.platform.user(openid)
            staff.subscribed, staff.last_interaction = True, h.platform.clock()
        yield h


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    async with risk_harness(db_url, platform, wechat_server) as harness:
        yield harness


async def flags(h: Harness, status: str | None = "open") -> dict[str, Any]:
    status_code, body = await h.api("GET", "/risk/flags" + (f"?status={status}" if status else ""))
    assert status_code == 200, body
    return body


async def staff_told(h: Harness, *words: str) -> None:
    for openid in STAFF:
        await h.platform.wait_for(openid, lambda m: all(w in str(m.get("content")) for w in words))


async def test_burst_exactly_at_the_line_then_one_over(h: Harness) -> None:
    d, _ = await seed(h)
    other, _ = await seed(h)
    for i in range(20):
        await pay(h, f"B{i:02d}", 1000, d)
    await pay(h, "OTHER", 1000, other)
    assert await flags(h) == {"flags": [], "total": 0}
    await pay(h, "B20", 1000, d)
    body = await flags(h)
    assert body["total"] == 1
    flag = body["flags"][0]
    assert set(flag) >= {"id", "distributor_code", "rule", "detail", "created_at", "status"}
    assert (flag["distributor_code"], flag["rule"], flag["status"]) == (d.code, "burst", "open")
    assert flag["detail"].startswith("10 分钟内 21 笔已付款订单：B20")
    await staff_told(h, f"分销员 {d.code}", "订单激增", "21 笔")
    # One open flag per distributor and rule: more orders add nothing, and nobody is told again.
    await pay(h, "B21", 1000, d)
    assert (await flags(h))["total"] == 1
    assert sum("订单激增" in str(m.get("content")) for m in h.platform.users[STAFF[0]].timeline) == 1


async def test_refund_ratio_at_the_line_then_over(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with risk_harness(db_url, platform, wechat_server, refund_window=4, refund_ratio=0.5) as h:
        d, _ = await seed(h)
        for i in range(4):
            await pay(h, f"R{i}", 1000, d)
        await send(h, "R0", "refunded", amount_fen=1000)
        await send(h, "R1", "refunded", amount_fen=400)
        await send(h, "R1", "refunded", amount_fen=600)
        assert (await flags(h))["total"] == 0  # exactly half of the last four orders' amount
        await send(h, "R2", "refunded", amount_fen=10)
        body = await flags(h)
        assert [(f["distributor_code"], f["rule"]) for f in body["flags"]] == [(d.code, "refund_ratio")]
        assert "最近 4 笔订单退款 50%" in body["flags"][0]["detail"] and "R2" in body["flags"][0]["detail"]
        await staff_told(h, "退款率高", d.code)


async def test_self_dealing_within_max_levels(h: Harness) -> None:
    top, top_user = await seed(h)
    mid, mid_user = await seed(h, inviter=top)
    d, _ = await seed(h, inviter=mid)
    # The inviter's inviter is beyond max_levels (2): no flag.
    await pay(h, "S1", 10000, d, buyer_openid=top_user.openid)
    assert (await flags(h))["total"] == 0
    answer = await pay(h, "S2", 10000, d, buyer_openid=mid_user.openid)
    assert [c["distributor_code"] for c in answer["commissions"]] == [d.code]  # the buyer earns nothing
    body = await flags(h)
    assert [(f["distributor_code"], f["rule"]) for f in body["flags"]] == [(d.code, "self_dealing")]
    assert "S2" in body["flags"][0]["detail"] and mid.code in body["flags"][0]["detail"]
    await staff_told(h, "上级自购", d.code)


async def _register(h: Harness, inviter: Distributor) -> str:
    return await h.register(h.user(), f"137{next(_phones):08d}", "李四", code=inviter.code)


async def test_signup_burst_and_the_silent_recruits_seven_days_on(h: Harness) -> None:
    inviter, _ = await seed(h)
    earlier = [(await seed(h, inviter=inviter))[0] for _ in range(28)]
    old, _ = await seed(h, inviter=inviter)  # an hour and more ago: not counted
    async with h.app[SESSIONMAKER]() as s, s.begin():
        await s.execute(update(Distributor).where(Distributor.id == old.id)
                        .values(registered_at=datetime.now(UTC) - timedelta(minutes=61)))
    await _register(h, inviter)
    await _register(h, inviter)  # the 30th within the hour
    assert (await flags(h))["total"] == 0
    await _register(h, inviter)  # the 31st
    body = await flags(h)
    assert [(f["distributor_code"], f["rule"]) for f in body["flags"]] == [(inviter.code, "signup_burst")]
    assert "1 小时内直接邀请 31 人注册" in body["flags"][0]["detail"]
    await staff_told(h, "注册激增", inviter.code)
    fid = body["flags"][0]["id"]
    status, _ = await h.api("POST", f"/risk/flags/{fid}/resolve", json={"action": "dismiss", "reason": "年会拉新"})
    assert status == 200

    app, start = h.app, h.clock.now()
    # Six days on nothing is due; seven days on, none of the 31 has sold: a new flag.
    h.clock.set(start + timedelta(days=6, minutes=1))
    assert await run_job(h, "risk") == 0
    h.clock.set(start + timedelta(days=7, minutes=1))
    for openid in STAFF:  # the staff wrote to the account meanwhile: within WeChat's 48 hours
        h.platform.users[openid].last_interaction = h.platform.clock()
    assert await run_job(h, "risk") == 1
    body = await flags(h)
    assert [(f["distributor_code"], f["rule"]) for f in body["flags"]] == [(inviter.code, "signup_burst")]
    assert "31 人至今无一人成交" in body["flags"][0]["detail"] and body["flags"][0]["id"] != fid
    await staff_told(h, "无一人成交", inviter.code)
    # Looked at once: the job again changes nothing.
    assert await run_job(h, "risk") == 0
    async with app[SESSIONMAKER]() as s:
        assert await s.scalar(select(func.count()).select_from(RiskFlag)) == 2
    assert earlier  # (the seeded recruits)


async def test_a_burst_whose_recruits_sold_is_left_alone(db_url: str, platform: Platform,
                                                         wechat_server: TestServer) -> None:
    async with risk_harness(db_url, platform, wechat_server, signup_burst=2) as h:
        inviter, _ = await seed(h)
        codes = [await _register(h, inviter) for _ in range(3)]
        assert (await flags(h))["total"] == 1
        recruit = (await h.api("GET", f"/distributors/{codes[1]}"))[1]
        async with h.app[SESSIONMAKER]() as s:
            d = await s.scalar(select(Distributor).where(Distributor.code == recruit["code"]))
        await pay(h, "SOLD1", 1000, d)
        h.clock.move(days=8)
        assert await run_job(h, "risk") == 1
        body = await flags(h)
        assert body["total"] == 1 and "无一人成交" not in body["flags"][0]["detail"]


async def test_the_job_runs_through_the_jobs_api(h: Harness) -> None:
    status, body = await h.api("POST", "/jobs/risk/run")
    assert status == 202, body
    for _ in range(100):
        job = next(j for j in (await h.api("GET", "/jobs"))[1]["jobs"] if j["name"] == "risk")
        if job["last_status"]:
            break
        await asyncio.sleep(0.05)
    assert job["last_status"] == "ok", job


async def test_resolving_flags(h: Harness) -> None:
    top, top_user = await seed(h)
    a, _ = await seed(h, inviter=top)
    b, b_user = await seed(h, inviter=top)
    await pay(h, "A1", 1000, a, buyer_openid=top_user.openid)
    await pay(h, "B1", 1000, b, buyer_openid=top_user.openid)
    by_code = {f["distributor_code"]: f["id"] for f in (await flags(h))["flags"]}
    assert set(by_code) == {a.code, b.code}

    status, body = await h.api("POST", f"/risk/flags/{by_code[a.code]}/resolve",
                               json={"action": "dismiss", "reason": "家人代买，已核实"})
    assert status == 200, body
    assert (body["status"], body["reason"], body["resolved_by"]) == ("dismissed", "家人代买，已核实", "admin")
    status, body = await h.api("POST", f"/risk/flags/{by_code[a.code]}/resolve",
                               json={"action": "suspend", "reason": "again"})
    assert status == 409 and body["error"] == "already_resolved"
    assert (await h.api("GET", f"/distributors/{a.code}"))[1]["status"] == "active"

    status, body = await h.api("POST", f"/risk/flags/{by_code[b.code]}/resolve",
                               json={"action": "suspend", "reason": "上级自购刷佣金"})
    assert status == 200 and body["status"] == "suspended"
    assert (await h.api("GET", f"/distributors/{b.code}"))[1]["status"] == "suspended"
    await h.platform.wait_for(b_user.openid, lambda m: "已被暂停" in str(m) and "上级自购刷佣金" in str(m))
    assert "上级自购刷佣金" in await h.say(b_user, "收益")

    assert (await flags(h))["total"] == 0
    assert (await flags(h, "dismissed"))["total"] == 1 and (await flags(h, None))["total"] == 2
    # A dismissed flag lets the rule fire again.
    await pay(h, "A2", 1000, a, buyer_openid=top_user.openid)
    assert [f["distributor_code"] for f in (await flags(h))["flags"]] == [a.code]

    assert (await h.api("POST", "/risk/flags/999999/resolve", json={"action": "dismiss", "reason": "x"}))[0] == 404
    assert (await h.api("POST", f"/risk/flags/{by_code[a.code]}/resolve", json={"action": "ban", "reason": "x"}))[0] == 422
    assert (await h.api("POST", f"/risk/flags/{by_code[a.code]}/resolve", json={"action": "dismiss"}))[0] == 400
    assert (await h.api("GET", "/risk/flags?status=gone"))[0] == 400


async def test_an_open_flag_makes_approval_409(h: Harness) -> None:
    top, top_user = await seed(h)
    d, user = await seed(h, inviter=top)
    await pay(h, "W1", 20000, d)
    await send(h, "W1", "completed")
    assert "提现申请已提交" in await h.say(user, "提现 15")
    wid = (await h.api("GET", "/withdrawals?status=pending"))[1]["withdrawals"][0]["id"]
    await pay(h, "W2", 1000, d, buyer_openid=top_user.openid)
    fid = (await flags(h))["flags"][0]["id"]

    status, body = await h.api("POST", f"/withdrawals/{wid}/approve")
    assert status == 409 and body["error"] == "risk_flag_open" and body["details"]["flags"] == [fid]
    assert (await h.api("GET", f"/withdrawals/{wid}"))[1]["status"] == "pending"
    assert (await balance(h, d))["withdrawing_fen"] == 1500

    assert (await h.api("POST", f"/risk/flags/{fid}/resolve", json={"action": "dismiss", "reason": "ok"}))[0] == 200
    status, body = await h.api("POST", f"/withdrawals/{wid}/approve")
    assert status == 200 and body["status"] == "approved"


async def test_rules_off(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with risk_harness(db_url, platform, wechat_server, enabled=False, burst_orders=1) as h:
        d, _ = await seed(h)
        for i in range(3):
            await pay(h, f"OFF{i}", 1000, d)
        assert (await flags(h))["total"] == 0


# ---- the console ---------------------------------------------------------------------------------
async def test_console_risk_page_suspend_and_reinstate(served: tuple[str, Any], page: Any) -> None:
    from playwright.async_api import expect

    from domain.ledger import adjust, withdraw
    from tests.console_support import no_sideways_scroll, order_event, sign_in
    base, app = served
    now = datetime.now(UTC)

    def work(s: Any) -> int:
        top = Distributor(code="RISKUP", openid="o-risk-up", phone="13900000011", name="王上线", rank="junior",
                          status="active", registered_at=now)
        s.add(top)
        s.flush()
        d = Distributor(code="RISKDN", openid="o-risk-dn", phone="13900000012", name="赵下线", rank="junior",
                        status="active", registered_at=now, inviter_id=top.id)
        s.add(d)
        s.flush()
        adjust(s, d.id, 10000, "测试入账", "test", now)
        wid = withdraw(s, d.id, 2000, now)
        assert wid is not None
        return wid
    wid = await app[WRITER].run(work)
    await order_event(base, event_id="evt-risk-1", order_no="SO-RISK-1", type="paid", amount_fen=12900,
                      distributor_code="RISKDN", buyer_openid="o-risk-up")

    await sign_in(page, base)
    await page.get_by_role("link", name="提现", exact=True).click()
    await page.get_by_role("form", name=f"提现申请 {wid}").get_by_role("button", name="批准").click()
    await expect(page.get_by_role("status")).to_contain_text("有未处理的风险提示")

    await page.get_by_role("link", name="风险", exact=True).click()
    await expect(page.get_by_role("heading", name="风险", exact=True)).to_be_visible()
    await no_sideways_scroll(page)
    flag = page.get_by_role("form", name=re.compile(r"风险提示 #\d+"))
    await expect(flag).to_contain_text("上级自购")
    await expect(flag).to_contain_text("SO-RISK-1")
    await flag.get_by_label("原因").fill("上级自购套佣金")
    await flag.get_by_role("button", name="暂停").click()
    await expect(page.get_by_role("status")).to_contain_text("已暂停该分销员")
    await expect(page.get_by_text("没有待处理的风险提示")).to_be_visible()

    await page.goto(base + "/admin/distributors/RISKDN")
    await expect(page.get_by_text("已暂停").first).to_be_visible()
    await expect(page.get_by_role("cell", name="上级自购套佣金")).to_be_visible()
    await no_sideways_scroll(page)
    await page.get_by_label("恢复原因").fill("申诉通过")
    await page.get_by_role("button", name="恢复").click()
    await expect(page.get_by_role("status")).to_contain_text("已恢复")
    await expect(page.get_by_role("cell", name="申诉通过")).to_be_visible()
    await page.get_by_label("暂停原因").fill("再次核查")
    await page.get_by_role("button", name="暂停").click()
    await expect(page.get_by_role("status")).to_contain_text("已暂停，已通知分销员")

    await page.get_by_role("link", name="提现", exact=True).click()
    await page.get_by_role("form", name=f"提现申请 {wid}").get_by_role("button", name="批准").click()
    await expect(page.get_by_role("status")).to_contain_text("已暂停，恢复前不能批准其提现")
