"""Batch approval of withdrawals (CONTRACT §10, issue 23 item 7): POST /api/withdrawals/approve on
both databases, each id decided (or refused) on its own exactly as the single approve decides it;
and the console's 提现 in Chromium: 批量批准 of the ticked rows with each outcome reported, a
distributor's open risk flag on their row before anyone presses 批准, and each approval's claim
state in the history."""

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
from domain.ledger import adjust, withdraw
from domain.payouts import out_bill_no
from storage.models import Distributor
from storage.models_ledger import PayoutBill, Withdrawal
from storage.models_risk import RiskFlag
from storage.tables import OUTBOX
from tests.conftest import Harness
from tests.console_support import sign_in
from tests.money_support import balance, check_invariants, money_harness, pay, seed, send


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0, min_withdraw_fen=1000) as harness:
        yield harness


async def pending_ids(h: Harness, d: Distributor) -> list[int]:
    status, body = await h.api("GET", "/withdrawals?status=pending")
    assert status == 200, body
    return [w["id"] for w in body["withdrawals"] if w["distributor_code"] == d.code]


async def test_each_id_is_decided_on_its_own(h: Harness) -> None:
    good, user = await seed(h)
    held, held_user = await seed(h)
    for d, u, order in ((good, user, "BA-1"), (held, held_user, "BA-2")):
        await pay(h, order, 50000, d)
        await send(h, order, "completed")
        assert "提现申请已提交" in await h.say(u, "提现 20")
    assert "提现申请已提交" in await h.say(user, "提现 10")
    first, second = await pending_ids(h, good)
    [suspended] = await pending_ids(h, held)
    assert (await h.api("POST", f"/withdrawals/{second}/approve"))[0] == 200
    assert (await h.api("POST", f"/distributors/{held.code}/suspend", json={"reason": "核查"}))[0] == 200

    # Bad lists change nothing.
    for body, status in (({"ids": []}, 422), ({"ids": list(range(1, 202))}, 422), ({"ids": [0]}, 422),
                         ({"ids": [str(first)]}, 400), ({}, 400), ({"ids": first}, 400)):
        answer = await h.api("POST", "/withdrawals/approve", json=body)
        assert answer[0] == status, (body, answer)
    assert await pending_ids(h, good) == [first]

    status, body = await h.api("POST", "/withdrawals/approve", json={"ids": [first, second, suspended, 999999, first]})
    assert status == 200, body
    results = body["results"]
    assert results[0] == {"id": first, "status": "approved"}
    assert [(r["id"], r.get("error")) for r in results[1:]] == [
        (second, "already_decided"), (suspended, "distributor_suspended"), (999999, "not_found")]
    assert all(r["message"] for r in results[1:])
    # Exactly as the single approve: the money, the notice, the refusals' own words.
    assert await balance(h, good) == {"pending_fen": 0, "available_fen": 2000, "withdrawing_fen": 0,
                                      "withdrawn_fen": 3000}
    assert (await balance(h, held))["withdrawing_fen"] == 2000
    single = await h.api("POST", f"/withdrawals/{suspended}/approve")
    assert (single[0], single[1]["message"]) == (409, results[2]["message"])
    await h.platform.wait_for(user.openid, lambda m: f"申请号 {first}" in str(m) and "已审核通过" in str(m))
    async with h.app[SESSIONMAKER]() as s:
        assert (await s.scalars(select(OUTBOX.c.key).where(OUTBOX.c.openid == held.openid,
                                                           OUTBOX.c.key.like("withdrawal:%")))).all() == []
    status, audit = await h.api("GET", "/audit?page=1")
    [entry] = [e for e in audit["entries"] if e["path"] == "/api/withdrawals/approve" and e["status"] == 200]
    assert entry["summary"].startswith(f"批量批准：已批准 1 笔（{first}）；未批准 3 笔：") and "已暂停" in entry["summary"]
    await check_invariants(h)


async def _queue(app: web.Application) -> dict[str, int]:
    """Two distributors with withdrawals waiting (one with an open 上级自购 flag) and three
    approvals paid through WeChat Pay at different points of their claim."""
    now = datetime.now(UTC)

    def work(s: Any) -> dict[str, int]:
        people = [Distributor(code=code, openid=f"o-{code}", phone=f"1370000{i:04d}", name=name, rank="junior",
                              status="active", registered_at=now)
                  for i, (code, name) in enumerate((("BATCHA", "孙清白"), ("BATCHF", "周可疑<b>")))]
        s.add_all(people)
        s.flush()
        clean, flagged = (d.id for d in people)
        s.add(RiskFlag(distributor_id=flagged, rule="self_dealing", detail="上级自购 SO-9", status="open",
                       open_key=f"{flagged}:self_dealing", created_at=now))
        ids: dict[str, int] = {}
        for d, key in ((clean, "a1"), (clean, "a2"), (flagged, "f1")):
            adjust(s, d, 5000, "测试入账", "test", now)
            ids[key] = withdraw(s, d, 1500, now) or 0
        for key, state, reason in (("sent", None, None), ("opened", "WAIT_USER_CONFIRM", None),
                                   ("expired", "FAIL", "OVERDUE_CLOSE")):
            w = Withdrawal(distributor_id=clean, amount_fen=1000, status="approved", requested_at=now, decided_at=now,
                           pay_transfer=True)
            s.add(w)
            s.flush()
            ids[key] = w.id
            if state:
                s.add(PayoutBill(withdrawal_id=w.id, attempt=1, out_bill_no=out_bill_no(w.id, 1, now), state=state,
                                 fail_reason=reason, created_at=now, updated_at=now))
        return ids
    return await app[WRITER].run(work)


async def test_the_batch_on_the_page(served: tuple[str, web.Application], page: Any) -> None:
    from playwright.async_api import expect
    base, app = served
    ids = await _queue(app)
    await sign_in(page, base)
    await page.get_by_role("link", name="提现", exact=True).click()

    # The flag is on its row before anyone presses 批准, and leads to 风险.
    flagged = page.get_by_role("form", name=f"提现申请 {ids['f1']}")
    await expect(flagged.get_by_role("link", name="上级自购")).to_have_attribute("href", "/admin/risk")
    await expect(flagged).to_contain_text("周可疑<b>")
    await expect(page.get_by_role("form", name=f"提现申请 {ids['a1']}")).not_to_contain_text("风险提示")
    # Each approval paid through WeChat Pay says where its claim stands.
    for key, words in (("sent", "已发送领取链接"), ("opened", "已打开链接，待确认收款"), ("expired", "已过期，可再次领取")):
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=str(ids[key]), exact=True))
        await expect(row).to_contain_text(words)

    await page.get_by_label(f"选择申请 {ids['a1']}").check()
    await page.get_by_label(f"选择申请 {ids['f1']}").check()
    await page.get_by_role("button", name="批量批准").click()
    status = page.get_by_role("status")
    await expect(status).to_contain_text(f"已批准 1 笔（{ids['a1']}）")
    await expect(status).to_contain_text(f"未批准 1 笔：申请 {ids['f1']} 不能批准：分销员 BATCHF 有未处理的风险提示")
    await expect(page.get_by_role("form", name=f"提现申请 {ids['a1']}")).to_have_count(0)
    await expect(page.get_by_role("form", name=f"提现申请 {ids['a2']}")).to_be_visible()  # not ticked: still waiting
    await expect(flagged).to_be_visible()

    await page.get_by_role("button", name="批量批准").click()  # nothing ticked
    await expect(status).to_contain_text("请先勾选要批准的提现申请")
