"""A contest edited before it starts and ended early (issue 23 item 8), through /api on both
databases: PATCH /api/contests/{id} until it starts (422 after), POST /api/contests/{id}/end
settling at that moment (409 before its start and once settled), the winners paid and told once,
and both changes in the audit trail; and the 比赛 page's 保存 and 结束 in Chromium (SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sandbox.platform import Platform
from tests.conftest import Harness, make_config
from tests.console_support import sign_in
from tests.eventually import eventually
from tests.money_support import balance, check_invariants, pay, seed
from tests.test_console_engage import contest_rows, local, pay as pay_in, seed_people
from tests.test_jobs import run_job


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    config = make_config(db_url, distribution={"freeze_days": 0})
    async with Harness(config, platform, wechat_server, reply_deadline=3.0) as harness:
        yield harness


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


async def test_edit_before_the_start_then_end_early(h: Harness) -> None:
    (a, ua), (b, ub) = [await seed(h, name=n) for n in ("张三", "李四")]
    for user in (ua, ub):
        user.last_interaction = h.platform.clock()  # inside the 48-hour window: plain chat messages
    t = h.clock.now()
    status, created = await h.api("POST", "/contests", json={
        "title": "周末冲刺赛", "metric": "sales", "starts_at": iso(t + timedelta(hours=1)),
        "ends_at": iso(t + timedelta(days=2)), "prizes_fen": [10000], "audience": "all"})
    assert status == 201 and created["status"] == "scheduled", created
    cid = created["id"]
    # Before its start: edited (title, window, prizes); a bad window or ending it is refused.
    status, body = await h.api("PATCH", f"/contests/{cid}", json={
        "title": "周末冲刺赛（加码）", "starts_at": iso(t - timedelta(hours=2)), "ends_at": iso(t + timedelta(days=1)),
        "prizes_fen": [30000, 10000]})
    assert status == 200 and body["title"] == "周末冲刺赛（加码）" and body["prizes_fen"] == [30000, 10000], body
    assert body["status"] == "running"  # its new start has passed: it runs at once
    status, body = await h.api("PATCH", f"/contests/{cid}", json={"title": "又改"})
    assert status == 422 and body["error"] == "contest_started", body
    status, scheduled = await h.api("POST", "/contests", json={
        "title": "下周赛", "metric": "sales", "starts_at": iso(t + timedelta(days=7)),
        "ends_at": iso(t + timedelta(days=8)), "prizes_fen": [], "audience": "all"})
    assert status == 201
    status, body = await h.api("PATCH", f"/contests/{scheduled['id']}", json={"ends_at": iso(t + timedelta(days=6))})
    assert status == 422 and body["error"] == "invalid_contest", body
    status, body = await h.api("POST", f"/contests/{scheduled['id']}/end")
    assert status == 409 and body["error"] == "contest_not_started", body
    assert (await h.api("POST", "/contests/987654/end"))[0] == 404
    assert (await h.api("PATCH", "/contests/987654", json={"title": "x"}))[0] == 404
    # Orders inside the new window (one before the old start) count; ended now, it settles now.
    await pay(h, "ED-A", 20000, a, occurred_at=iso(t - timedelta(minutes=90)))
    await pay(h, "ED-B", 5000, b, occurred_at=iso(t - timedelta(minutes=30)))
    h.clock.move(minutes=5)
    status, ended = await h.api("POST", f"/contests/{cid}/end")
    assert status == 200 and ended["status"] == "settled", ended
    assert ended["ends_at"] == ended["settled_at"] != created["ends_at"]  # its end moved to this moment
    assert ended["winners"] == [{"place": 1, "code": a.code, "prize_fen": 30000},
                                {"place": 2, "code": b.code, "prize_fen": 10000}]
    status, again = await h.api("POST", f"/contests/{cid}/end")
    assert status == 409 and again["error"] == "contest_settled", again
    await run_job(h, "contests")  # the job finds nothing more to do
    assert (await balance(h, a))["available_fen"] == 30000 and (await balance(h, b))["available_fen"] == 10000
    await check_invariants(h)

    async def told() -> bool:
        return all(any("结果揭晓" in str(m.get("content", "")) for m in u.timeline) for u in (ua, ub))
    await eventually(told, timeout=15, what="the results sent to the audience")
    await h.settled()
    assert sum("恭喜您在“周末冲刺赛（加码）”中获得第1名" in str(m.get("content", "")) for m in ua.timeline) == 1
    status, audit = await h.api("GET", "/audit")
    summaries = [e["summary"] for e in audit["entries"]]
    assert any(f"比赛 #{cid}" in s and "提前结束" in s for s in summaries), summaries
    assert any(f"比赛 #{cid} 修改了：标题、开始时间、结束时间、奖金（元）" in s for s in summaries), summaries


@pytest.mark.parametrize("page", ["desktop"], indirect=True)
async def test_the_contest_page_edits_then_ends_it(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    [a] = await seed_people(app, "王小明")
    await sign_in(page, base)
    await page.get_by_role("link", name="比赛", exact=True).click()
    real = datetime.now(UTC)
    await page.get_by_label("标题").fill("元旦冲刺赛")
    await page.get_by_label("开始时间").fill(local(real + timedelta(days=1)))
    await page.get_by_label("结束时间").fill(local(real + timedelta(days=3)))
    await page.get_by_label("奖金（元）").fill("100")
    await page.get_by_role("button", name="创建").click()
    await expect(page.get_by_role("status")).to_contain_text("已创建（未开始）")
    edit = page.get_by_role("form", name="修改比赛")
    await expect(edit.get_by_label("奖金（元）")).to_have_value("100.00")
    await edit.get_by_label("标题").fill("元旦冲刺赛<b>加码</b>")
    await edit.get_by_label("开始时间").fill(local(real - timedelta(hours=1)))
    await edit.get_by_label("奖金（元）").fill("300, 100")
    await edit.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("status")).to_contain_text("已保存（进行中）")
    await expect(page.get_by_role("heading", name="元旦冲刺赛<b>加码</b>")).to_be_visible()
    await expect(page.get_by_role("form", name="修改比赛")).to_have_count(0)  # started: no more edits
    await pay_in(base, "PG-1", 8800, a.code, at=real - timedelta(minutes=10))
    await page.get_by_role("button", name="结束").click()
    await expect(page.get_by_role("status")).to_contain_text("已提前结束并结算")
    winners = page.get_by_role("table", name="获奖名单")
    await expect(winners.get_by_role("row").filter(has_text="王小明")).to_contain_text("¥300.00")
    await expect(page.get_by_role("button", name="结束")).to_have_count(0)
    [row] = [r for r in await contest_rows(app) if not r.source]
    assert row.status == "settled" and row.prizes_fen == [30000, 10000] and row.ends_at <= datetime.now(UTC)
