"""An admin moves a distributor to another inviter (CONTRACT §10, issue 23 item 6), over HTTP on
both databases and through the distributor's page in Chromium: every refusal changes nothing;
commissions booked before the move stay where they were, later ones go up the new chain; the
change is kept with who, why and when, audited, and the distributor and both inviters are told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER, WRITER
from storage.models import Distributor
from storage.tables import DISTRIBUTORS, INVITER_CHANGES, OUTBOX
from tests.conftest import Harness
from tests.console_support import sign_in
from tests.money_support import balance, check_invariants, money_harness, pay, seed


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0) as harness:
        yield harness


def shares(answer: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(c["distributor_code"], c["depth"], c["amount_fen"]) for c in answer["commissions"]]


async def move(h: Harness, code: str, **body: Any) -> tuple[int, Any]:
    return await h.api("POST", f"/distributors/{code}/inviter", json=body)


async def test_refusals_then_a_move_that_keeps_the_past(h: Harness) -> None:
    top, top_user = await seed(h, name="王一")
    mid, mid_user = await seed(h, inviter=top, name="李二")
    low, low_user = await seed(h, inviter=mid, name="张三")
    other, other_user = await seed(h, name="赵四")
    assert shares(await pay(h, "IC-1", 10000, low)) == [(low.code, 0, 1000), (mid.code, 1, 300)]
    before = await balance(h, mid)

    # A cycle of three (top → mid → low): nobody may go below their own team; nor be their own inviter.
    for code, inviter, error in ((top.code, low.code, "inviter_cycle"), (top.code, mid.code, "inviter_cycle"),
                                 (mid.code, low.code, "inviter_cycle"), (low.code, low.code, "inviter_self")):
        status, body = await move(h, code, inviter_code=inviter, reason="调整")
        assert (status, body["error"]) == (422, error), (code, inviter, body)
    assert (await move(h, "NOSUCH", inviter_code=other.code, reason="调整"))[0] == 404
    status, body = await move(h, low.code, inviter_code="NOSUCH", reason="调整")
    assert status == 404 and body["error"] == "not_found"
    for reasonless in ({}, {"reason": "  "}, {"reason": ""}):
        status, body = await move(h, low.code, inviter_code=other.code, **reasonless)
        assert status == 422 and body["error"] == "invalid_inviter_change", (reasonless, body)
    assert (await h.api("POST", f"/distributors/{other.code}/suspend", json={"reason": "核查"}))[0] == 200
    status, body = await move(h, low.code, inviter_code=other.code, reason="调整")
    assert status == 422 and body["error"] == "inviter_inactive"
    assert (await h.api("POST", f"/distributors/{other.code}/reinstate", json={}))[0] == 200
    async with h.app[SESSIONMAKER]() as s:
        assert (await s.scalars(select(INVITER_CHANGES.c.id))).all() == []
        assert (await s.scalar(select(DISTRIBUTORS.c.inviter_id).where(DISTRIBUTORS.c.id == low.id))) == mid.id

    # The move: the answer is the distributor as GET gives it; a second identical move changes nothing.
    status, body = await move(h, low.code.lower(), inviter_code=other.code.lower(), reason="  原邀请人不再跟进  ")
    assert status == 200 and body["code"] == low.code and body["inviter_code"] == other.code
    assert (await h.api("GET", f"/distributors/{low.code}"))[1] == body
    assert (await move(h, low.code, inviter_code=other.code, reason="再来一次"))[1] == body

    # Past commissions stay as booked; the next order pays the new upline.
    assert await balance(h, mid) == before
    assert shares(await pay(h, "IC-2", 10000, low)) == [(low.code, 0, 1000), (other.code, 1, 300)]
    assert (await balance(h, mid))["pending_fen"] == 300 and (await balance(h, other))["pending_fen"] == 300
    await check_invariants(h)

    # Kept with who, why and when; audited; the three people told.
    async with h.app[SESSIONMAKER]() as s:
        rows = (await s.execute(select(INVITER_CHANGES))).all()
    assert [(r.distributor_id, r.old_inviter_id, r.new_inviter_id, r.reason, r.actor, r.note) for r in rows] == [
        (low.id, mid.id, other.id, "admin", "admin", "原邀请人不再跟进")]
    status, audit = await h.api("GET", "/audit?page=1")
    assert any(e["summary"].startswith(f"更换邀请人：{low.code} → {other.code}") and e["status"] == 200
               for e in audit["entries"]), audit
    await h.platform.wait_for(low_user.openid, lambda m: "邀请人已调整为 赵*" in str(m) and "原邀请人不再跟进" in str(m))
    await h.platform.wait_for(mid_user.openid, lambda m: "张*" in str(m) and "不再是您的直属成员" in str(m))
    await h.platform.wait_for(other_user.openid, lambda m: "张*" in str(m) and "已调整为您的直属成员" in str(m))

    # A top-level distributor (no old inviter) may be placed under someone: two notices.
    status, body = await move(h, other.code, inviter_code=top.code, reason="并入王一团队")
    assert status == 200 and body["inviter_code"] == top.code
    async with h.app[SESSIONMAKER]() as s:
        keys = (await s.scalars(select(OUTBOX.c.key).where(OUTBOX.c.key.like("inviter:%")))).all()
    assert sorted(k.split(":")[2] for k in keys) == ["distributor", "distributor", "new", "new", "old"]


async def _tree(app: web.Application) -> None:
    now = datetime.now(UTC)

    def work(s: Any) -> None:
        ids: dict[str, int] = {}
        for code, name, inviter in (("MOVTOP", "周大", None), ("MOVKID", "吴二<script>", "MOVTOP"),
                                    ("MOVNEW", "郑三", None)):
            d = Distributor(code=code, openid=f"o-{code}", phone=f"1360000{len(ids):04d}", name=name, rank="junior",
                            status="active", inviter_id=ids.get(inviter or ""), registered_at=now)
            s.add(d)
            s.flush()
            ids[code] = d.id
    await app[WRITER].run(work)


async def test_the_inviter_form(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    await _tree(app)
    await sign_in(page, base)
    await page.goto(f"{base}/admin/distributors/MOVTOP")
    form = page.get_by_role("form", name="更换邀请人")
    await form.get_by_label("新邀请人推广码").fill("MOVKID")
    await form.get_by_label("原因").fill("试试")
    await form.get_by_role("button", name="更换").click()
    await expect(page.get_by_role("status")).to_contain_text("MOVKID 在 MOVTOP 的团队（下线）中")
    await expect(page.get_by_role("status")).to_have_class("flash error")

    await page.goto(f"{base}/admin/distributors/MOVKID")
    form = page.get_by_role("form", name="更换邀请人")
    await form.get_by_label("新邀请人推广码").fill("movnew")
    await form.get_by_label("原因").fill("区域调整")
    await form.get_by_role("button", name="更换").click()
    await expect(page.get_by_role("status")).to_contain_text("已将 MOVKID 的邀请人更换为 MOVNEW")
    await expect(page.get_by_role("link", name="郑三（MOVNEW）")).to_be_visible()
    await expect(page.get_by_role("row", name="MOVTOP → MOVNEW")).to_contain_text("区域调整")
    async with app[SESSIONMAKER]() as s:
        [actor] = (await s.scalars(select(INVITER_CHANGES.c.actor))).all()
    assert actor.startswith("console:")
