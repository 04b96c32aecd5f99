"""Payouts through WeChat Pay 商家转账 (CONTRACT §4.10), through chat and HTTP against the sandbox's
emulator, on both databases: approve → claim → confirm → callback → paid; duplicated, replayed and
forged callbacks; a name mismatch refunds, and the console's 重试 pays it with a new bill; an
expired bill is claimed again with a new number; the payouts job finishes a bill whose callback
never came; 提现 limits, 提现记录, and 收益/订单 showing what is in flight."""

from __future__ import annotations

import html as htmllib
import re
import time
from typing import Any, Self

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from app.factory import create_app
from sandbox.pay_emulator import PayEmulator
from sandbox.pay_bills import notification
from sandbox.platform import Platform
from wechat.pay import EmulatorKeys, PayKeys
from wechat.pay_crypto import signed_headers
from sandbox.jssdk_standin import signature_valid
from tests import pay_support, payouts_support
from tests.conftest import ADMIN_TOKEN, make_config
from tests.db_support import migrated_sqlite
from tests.eventually import eventually
from tests.test_jobs import jobs, until_runs
from tests.money_support import balance, check_invariants, pay, seed, send, snapshot
from tests.payouts_support import PayHarness, claim_links, json_script, pay_config
from tests.serve_support import free_port

# The emulator's fixtures: the keys (tests/pay_support.py), the emulator and its server (tests/payouts_support.py).
pay_keys, emulator, pay_wechat = pay_support.pay_keys, payouts_support.emulator, payouts_support.pay_wechat


@pytest.fixture
async def h(db_url: str, tmp_path: Any, platform: Platform, pay_wechat: TestServer,
            pay_keys: tuple[PayKeys, EmulatorKeys]) -> Any:
    config = pay_config(db_url, pay_keys[0], tmp_path / "keys", pay_wechat)
    async with PayHarness(config, platform, pay_wechat, reply_deadline=3.0) as harness:
        yield harness


async def funded(h: Any, fen: int, name: str = "张三") -> tuple[Any, Any]:
    d, user = await seed(h, name=name)
    await pay(h, f"SO-{d.code}", fen * 10, d)
    await send(h, f"SO-{d.code}", "completed")
    assert (await balance(h, d))["available_fen"] == fen
    return d, user


async def request_and_approve(h: Any, user: Any, text: str = "提现 12.50") -> int:
    reply = await h.say(user, text)
    assert "已提交" in reply and "领取链接" in reply, reply
    wid = int(re.search(r"申请号 (\d+)", reply).group(1))
    status, w = await h.api("POST", f"/withdrawals/{wid}/approve")
    assert status == 200 and w["status"] == "approved", w
    return wid


async def next_link(h: Any, user: Any, count: int) -> str:
    """The count-th claim link sent to the user (waits for it)."""
    links = await eventually(lambda: len(found := claim_links(h.platform, user.openid)) >= count and found,
                             what=f"claim link #{count}")
    return links[count - 1]


async def open_link(h: Any, url: str) -> tuple[int, str]:
    async with h.http.get(url) as resp:
        return resp.status, await resp.text()


async def withdrawal(h: Any, wid: int) -> dict[str, Any]:
    status, body = await h.api("GET", f"/withdrawals/{wid}")
    assert status == 200, body
    return body


async def wait_status(h: Any, wid: int, expected: str, timeout: float = 10) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        w = await withdrawal(h, wid)
        return w if w["status"] == expected else None
    return await eventually(reached, timeout, what=f"withdrawal {wid} is {expected}")


async def press(h: Any, page: str, button: str) -> None:
    """What the page's sandbox button does: POST to the emulator with the page's own data."""
    data = dict(re.findall(r'data-([a-z]+)="([^"]*)"', page))
    transfer = json_script(page, "transfer")
    body = ({"package": transfer["package"], "openid": htmllib.unescape(data["openid"])} if button == "confirm"
            else {"out_bill_no": htmllib.unescape(data["bill"])})
    async with h.http.post(htmllib.unescape(data[button]), json=body) as resp:
        assert resp.status == 200, await resp.text()


async def test_approve_claim_confirm_callback_paid(h: Any, emulator: PayEmulator) -> None:
    d, user = await funded(h, 5000)
    wid = await request_and_approve(h, user)
    # Approved is not paid: the money stays withdrawing until WeChat Pay says SUCCESS.
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 1250,
                                   "withdrawn_fen": 0}
    assert "transfer" not in await withdrawal(h, wid)
    await check_invariants(h)
    link = await next_link(h, user, 1)
    assert link.startswith(h.url + f"/pay/claim/{wid}.{d.id}.")
    # Another distributor's link, or a forged one, opens nothing and creates nothing.
    forged = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    for bad in (forged, f"{h.url}/pay/claim/{wid}.{d.id + 1}.{link.rsplit('.', 1)[1]}"):
        assert (await open_link(h, bad))[0] == 404
    assert emulator.bills == {}

    status, page = await open_link(h, link)
    assert status == 200, page
    config, transfer = json_script(page, "wx-config"), json_script(page, "transfer")
    assert set(config) == {"appId", "timestamp", "nonceStr", "signature", "jsApiList"}
    assert "requestMerchantTransfer" in config["jsApiList"]
    assert signature_valid(h.platform, config, link)  # signed with the live jsapi_ticket and this URL
    assert not signature_valid(h.platform, config, link + "x")
    assert transfer["mchId"] == h.config.pay.mchid and transfer["appId"] == h.config.wechat.app_id
    (bill,) = emulator.bills.values()
    assert transfer["package"] == bill.package_info and bill.request["transfer_amount"] == 1250
    assert bill.request["notify_url"] == h.url + "/pay/notify"
    assert "确认收款" in page and "让它过期" in page
    w = await withdrawal(h, wid)
    assert w["status"] == "approved"
    assert w["transfer"] == {"out_bill_no": bill.out_bill_no, "state": "WAIT_USER_CONFIRM", "fail_reason": None}
    # Opening the link again serves the same bill.
    again = (await open_link(h, link))[1]
    assert json_script(again, "transfer")["package"] == bill.package_info and len(emulator.bills) == 1

    await press(h, page, "confirm")
    w = await wait_status(h, wid, "paid")
    assert w["transfer"]["state"] == "SUCCESS"
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 0,
                                   "withdrawn_fen": 1250}
    await h.platform.wait_for(user.openid, lambda m: "已转入您的微信零钱" in m.get("content", ""))
    await check_invariants(h)
    assert "已到账" in (await open_link(h, link))[1] and len(emulator.bills) == 1
    assert all(status == 401 for _, status in emulator.probes) and emulator.probes  # the probe was refused
    reply = await h.say(user, "收益")
    assert "已提现：¥12.50" in reply and "提现中" not in reply
    history = await h.say(user, "提现记录")
    assert f"申请号 {wid} ¥12.50 已到账" in history


async def test_duplicated_replayed_and_forged_callbacks_change_nothing(h: Any, emulator: PayEmulator) -> None:
    emulator.duplicate_callbacks = True
    d, user = await funded(h, 5000)
    wid = await request_and_approve(h, user, "提现 20")
    status, page = await open_link(h, await next_link(h, user, 1))
    assert status == 200
    # Forged: no signature, a wrong one, a probe's, a stale timestamp: 401 and nothing changes.
    before = await snapshot(h)
    body = b'{"id":"x","resource_type":"encrypt-resource","resource":{}}'
    for headers in ({}, {"Wechatpay-Signature": "AAAA", "Wechatpay-Timestamp": "1700000000", "Wechatpay-Nonce": "n",
                         "Wechatpay-Serial": h.config.pay.public_key_id},
                    {"Wechatpay-Signature": "WECHATPAY/SIGNTEST/abc", "Wechatpay-Timestamp": "1", "Wechatpay-Nonce": "n",
                     "Wechatpay-Serial": h.config.pay.public_key_id}):
        async with h.http.post(h.url + "/pay/notify", data=body, headers=headers) as resp:
            assert resp.status == 401, await resp.text()
    assert await snapshot(h) == before
    await press(h, page, "confirm")
    await wait_status(h, wid, "paid")
    await emulator.settle()
    answered = [x.status for x in emulator.deliveries if x.out_bill_no == (await withdrawal(h, wid))["transfer"]["out_bill_no"]]
    assert answered.count(204) == 2  # the same callback twice, both answered 204
    # A replay of a genuine callback, signed afresh: answered, applied no second time.
    (bill,) = emulator.bills.values()
    raw = notification(emulator.keys, bill, time.time())
    after = await snapshot(h)
    async with h.http.post(h.url + "/pay/notify", data=raw, headers={
            **signed_headers(emulator.keys.private_key, emulator.keys.public_key_id, raw, timestamp=int(time.time())),
            "Content-Type": "application/json"}) as resp:
        assert resp.status == 204
    # The same genuine body with a timestamp ten minutes old: refused.
    async with h.http.post(h.url + "/pay/notify", data=raw, headers=signed_headers(
            emulator.keys.private_key, emulator.keys.public_key_id, raw, timestamp=int(time.time()) - 600)) as resp:
        assert resp.status == 401
    assert await snapshot(h) == after
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3000, "withdrawing_fen": 0,
                                   "withdrawn_fen": 2000}
    await h.settled()  # the notice goes through the outbox
    notices = [m for m in h.platform.users[user.openid].timeline if "已转入您的微信零钱" in m.get("content", "")]
    assert len(notices) == 1
    await check_invariants(h)


async def test_name_mismatch_refunds_and_the_console_retry_pays_with_a_new_bill(
        h: Any, emulator: PayEmulator, pay_wechat: TestServer) -> None:
    d, user = await funded(h, 5000, name="李四")
    wid = await request_and_approve(h, user)
    link = await next_link(h, user, 1)
    page = (await open_link(h, link))[1]
    async with h.http.post(pay_wechat.make_url("/pay/inject"), json={"fail_reason": "NAME_NOT_CORRECT",
                                                                      "openid": user.openid}) as resp:
        assert resp.status == 200, await resp.text()
    await press(h, page, "confirm")
    w = await wait_status(h, wid, "failed")
    first = w["transfer"]["out_bill_no"]
    assert w["transfer"] == {"out_bill_no": first, "state": "FAIL", "fail_reason": "NAME_NOT_CORRECT"}
    assert w["reason"] == "微信实名与登记姓名不一致"
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 5000, "withdrawing_fen": 0, "withdrawn_fen": 0}
    await h.platform.wait_for(user.openid, lambda m: "微信实名与登记姓名不一致" in m.get("content", "")
                              and "已退回" in m.get("content", ""))
    _, ledger = await h.api("GET", f"/distributors/{d.code}/ledger")
    assert [(e["kind"], e["amount_fen"]) for e in ledger["entries"]] == [
        ("commission", 5000), ("withdrawal", -1250), ("withdrawal_refund", 1250)]
    await check_invariants(h)
    assert "转账失败（微信实名与登记姓名不一致）" in await h.say(user, "提现记录")
    # The old link now tells what happened and creates nothing.
    assert "微信实名与登记姓名不一致" in (await open_link(h, link))[1] and len(emulator.bills) == 1

    # The console shows the transfer's state and reason; 重试 moves the money back to withdrawing
    # and sends a new claim link, which makes a new bill.
    async with console(h) as (http, csrf):
        async with http.get(h.url + "/admin/withdrawals") as resp:
            text = await resp.text()
        shown = re.sub(r"<[^>]+>", "", text)
        assert "失败：微信实名与登记姓名不一致（NAME_NOT_CORRECT）" in shown and "重试" in shown, shown
        async with http.post(f"{h.url}/admin/withdrawals/{wid}/retry", data={"csrf_token": csrf}) as resp:
            assert "将重新转账 ¥12.50" in await resp.text()
        async with http.post(f"{h.url}/admin/withdrawals/{wid}/retry", data={"csrf_token": csrf}) as resp:
            assert "不是转账失败的提现" in await resp.text()
    assert (await withdrawal(h, wid))["status"] == "approved"
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 1250, "withdrawn_fen": 0}
    await check_invariants(h)
    page = (await open_link(h, await next_link(h, user, 2)))[1]
    second = json_script(page, "transfer")["package"]
    assert len(emulator.bills) == 2 and (await withdrawal(h, wid))["transfer"]["out_bill_no"] not in (first,)
    assert emulator.bills[(await withdrawal(h, wid))["transfer"]["out_bill_no"]].package_info == second
    await press(h, page, "confirm")
    await wait_status(h, wid, "paid")
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 0, "withdrawn_fen": 1250}
    _, ledger = await h.api("GET", f"/distributors/{d.code}/ledger")
    assert [(e["kind"], e["amount_fen"]) for e in ledger["entries"]] == [
        ("commission", 5000), ("withdrawal", -1250), ("withdrawal_refund", 1250), ("withdrawal", -1250)]
    await check_invariants(h)


async def test_an_expired_bill_is_claimed_again_with_a_new_number(h: Any, emulator: PayEmulator) -> None:
    d, user = await funded(h, 5000)
    wid = await request_and_approve(h, user)
    link = await next_link(h, user, 1)
    page = (await open_link(h, link))[1]
    first = (await withdrawal(h, wid))["transfer"]["out_bill_no"]
    await press(h, page, "expire")

    async def failed() -> dict[str, Any] | None:
        w = await withdrawal(h, wid)
        return w if w["transfer"]["state"] == "FAIL" else None
    w = await eventually(failed, what="the transfer fails")
    assert w["status"] == "approved" and w["transfer"]["fail_reason"] == "OVERDUE_CLOSE"
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 1250, "withdrawn_fen": 0}
    await check_invariants(h)
    await h.platform.wait_for(user.openid, lambda m: "超过 24 小时没有确认收款" in m.get("content", ""))
    assert link == await next_link(h, user, 2)  # the notice carries the same link: claimable again
    assert "已过期，可重新领取" in await h.say(user, "提现记录")
    page = (await open_link(h, link))[1]
    second = (await withdrawal(h, wid))["transfer"]["out_bill_no"]
    assert second != first and set(emulator.bills) == {first, second}
    assert emulator.bills[first].state == "FAIL"
    await press(h, page, "confirm")
    await wait_status(h, wid, "paid")
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 0, "withdrawn_fen": 1250}
    await check_invariants(h)


async def test_unknown_outcomes_keep_the_number_and_definite_refusals_refund(h: Any, emulator: PayEmulator) -> None:
    d, user = await funded(h, 5000)
    wid = await request_and_approve(h, user)
    link = await next_link(h, user, 1)
    emulator.inject(user.openid, "SYSTEM_ERROR")  # a 500: the outcome is unknown
    status, page = await open_link(h, link)
    assert status == 503 and "稍后" in page
    number = (await withdrawal(h, wid))["transfer"]["out_bill_no"]
    assert (await withdrawal(h, wid))["transfer"]["state"] == "CREATING" and emulator.bills == {}
    emulator.inject(user.openid, "ACCEPTED")  # accepted, the package not ready yet
    pages = [await open_link(h, link) for _ in range(3)]
    assert pages[0][0] == 200 and "正在处理" in pages[0][1]
    assert list(emulator.bills) == [number]  # the same number throughout, one bill
    assert json_script(pages[-1][1], "transfer")["package"] == emulator.bills[number].package_info
    assert (await withdrawal(h, wid))["transfer"]["state"] == "WAIT_USER_CONFIRM"
    await check_invariants(h)

    # A definite refusal of a bill WeChat Pay does not have: the attempt fails, the money goes back.
    other = int(re.search(r"申请号 (\d+)", await h.say(user, "提现 20")).group(1))
    assert (await h.api("POST", f"/withdrawals/{other}/approve"))[0] == 200
    emulator.inject(user.openid, "INVALID_REQUEST")
    status, page = await open_link(h, await next_link(h, user, 2))
    assert status == 200 and "转账没有成功" in page and "INVALID_REQUEST" in page
    w = await withdrawal(h, other)
    assert w["status"] == "failed" and w["transfer"]["fail_reason"] == "INVALID_REQUEST"
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 1250,
                                   "withdrawn_fen": 0}
    assert len(emulator.bills) == 1
    await check_invariants(h)


async def test_the_payouts_job_finishes_a_bill_whose_callback_never_came(h: Any, emulator: PayEmulator) -> None:
    emulator.callback_delays = ()  # WeChat Pay never calls back
    emulator.probes_enabled = False
    d, user = await funded(h, 5000)
    wid = await request_and_approve(h, user)
    page = (await open_link(h, await next_link(h, user, 1)))[1]
    await press(h, page, "confirm")
    await emulator.settle()
    (bill,) = emulator.bills.values()
    assert bill.state == "SUCCESS" and (await withdrawal(h, wid))["status"] == "approved"
    assert (await h.api("POST", "/jobs/payouts/run"))[0] == 202
    w = await wait_status(h, wid, "paid")
    assert w["transfer"]["state"] == "SUCCESS"
    assert await balance(h, d) == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 0, "withdrawn_fen": 1250}
    # Run again: nothing more happens.
    before = await snapshot(h)
    runs = (await jobs(h))["payouts"]["runs"]
    assert (await h.api("POST", "/jobs/payouts/run"))[0] == 202
    assert "payouts" in await jobs(h)
    await until_runs(h, "payouts", runs + 1)
    assert await snapshot(h) == before
    await check_invariants(h)


async def test_chat_limits_history_and_withdrawals_in_flight(h: Any) -> None:
    _, user = await funded(h, 50000)
    before = await snapshot(h)
    assert "最多 ¥200.00" in (above := await h.say(user, "提现 200.01")) and "例如：提现 200.00" in above, above
    assert await snapshot(h) == before
    assert "还没有提现记录" in await h.say(user, "提现记录")
    first = int(re.search(r"申请号 (\d+)", await h.say(user, "提现 200")).group(1))
    second = int(re.search(r"申请号 (\d+)", await h.say(user, "提现 10")).group(1))
    await h.api("POST", f"/withdrawals/{first}/approve")
    history = await h.say(user, "withdrawals")
    assert f"申请号 {first} ¥200.00 待领取" in history and f"申请号 {second} ¥10.00 待审核" in history
    assert f"/pay/claim/{first}." in history and f"/pay/claim/{second}." not in history
    earnings = await h.say(user, "收益")
    assert "提现中：¥210.00" in earnings and "待审核 1 笔" in earnings and "待领取 1 笔" in earnings
    orders = await h.say(user, "订单")
    assert "提现中 2 笔" in orders and "¥210.00" in orders
    await check_invariants(h)


async def test_the_minimum_transfer_applies_when_the_minimum_withdrawal_is_lower(
        db_url: str, tmp_path: Any, platform: Platform, pay_wechat: TestServer,
        pay_keys: tuple[PayKeys, EmulatorKeys]) -> None:
    config = pay_config(db_url, pay_keys[0], tmp_path / "keys", pay_wechat)
    config = config.model_copy(update={"distribution": config.distribution.model_copy(update={"min_withdraw_fen": 1})})
    async with PayHarness(config, platform, pay_wechat, reply_deadline=3.0) as h:
        _, user = await funded(h, 500)
        assert "至少 ¥0.10" in await h.say(user, "提现 0.09")
        assert "已提交" in await h.say(user, "提现 0.10")


class console:
    """A signed-in console session over plain HTTP: (client, csrf_token)."""

    def __init__(self, h: Any):
        self.h = h
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> tuple[aiohttp.ClientSession, str]:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with self.http.get(self.h.url + "/admin/") as resp:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text()).group(1)
        async with self.http.post(self.h.url + "/admin/login", data={"token": ADMIN_TOKEN, "csrf_token": token}) as resp:
            assert resp.status == 200, await resp.text()
        async with self.http.get(self.h.url + "/admin/withdrawals") as resp:
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text()).group(1)
        return self.http, csrf

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()


class SandboxWalk:
    """The built-in sandbox on a real port (its WeChat, its WeChat Pay emulator, keys made under the
    data folder), driven like a person at the simulator and an admin with curl."""

    def __init__(self, db_url: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = make_config(db_url, server={"port": self.port, "public_url": self.base},
                                  distribution={"freeze_days": 0}, pay={"mode": "sandbox"})
        self.auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self.openid = ""

    async def __aenter__(self) -> Self:
        self.server = TestServer(create_app(self.config), port=self.port)
        await self.server.start_server()
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.server.close()

    async def sim(self, text: str) -> str:
        async with self.http.post(self.base + "/sandbox/sim/send", json={"openid": self.openid, "type": "text",
                                                                         "content": text}) as resp:
            return ((await resp.json())["reply"] or {}).get("content", "")

    async def to_claim_link(self) -> tuple[int, str]:
        """A distributor with ¥20 available asks 提现 12.50, the admin approves with the API; the
        withdrawal and the claim link as the simulator shows it."""
        async with self.http.post(self.base + "/sandbox/sim/users", json={"nickname": "小王"}) as resp:
            self.openid = (await resp.json())["openid"]
        async with self.http.post(self.base + "/sandbox/sim/send", json={"openid": self.openid,
                                                                         "type": "subscribe"}) as resp:
            assert resp.status == 200
        await self.sim("注册")
        await self.sim("13912345678")
        code = re.search(r"推广码：([A-Z0-9]{6})", await self.sim("王小明")).group(1)
        for event in ({"type": "paid", "amount_fen": 20000, "distributor_code": code}, {"type": "completed"}):
            async with self.http.post(self.base + "/api/orders/events", headers=self.auth, json={
                    "event_id": f"walk-{event['type']}", "order_no": "WALK-1", **event}) as resp:
                assert resp.status == 200, await resp.text()
        wid = int(re.search(r"申请号 (\d+)", await self.sim("提现 12.50")).group(1))
        async with self.http.post(f"{self.base}/api/withdrawals/{wid}/approve", headers=self.auth) as resp:
            assert (await resp.json())["status"] == "approved"
        async def claim_link() -> list[str]:
            async with self.http.get(self.base + "/sandbox/sim/messages", params={"openid": self.openid}) as resp:
                return [m for item in (await resp.json())["messages"]
                        for m in payouts_support.CLAIM.findall(item.get("content", ""))]
        found = await eventually(claim_link, what="the simulator shows a claim link")
        assert found[0].startswith(self.base + "/pay/claim/")
        return wid, found[0]

    async def wait_paid(self, wid: int) -> None:
        async def paid() -> bool:
            async with self.http.get(f"{self.base}/api/withdrawals/{wid}", headers=self.auth) as resp:
                return (await resp.json())["status"] == "paid"
        await eventually(paid, what=f"withdrawal {wid} is paid")


async def test_sandbox_walk(db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's "done when": 提现 12.50 in the simulator, the admin approves with the API, the
    simulator shows the claim link, the confirm page pays, and 收益 shows it withdrawn."""
    monkeypatch.chdir(tmp_path)  # the sandbox's keys go to ./data/pay-sandbox with PostgreSQL
    async with SandboxWalk(db_url) as walk:
        wid, link = await walk.to_claim_link()
        async with walk.http.get(link) as resp:
            assert resp.status == 200
            page = await resp.text()
        data = dict(re.findall(r'data-([a-z]+)="([^"]*)"', page))
        assert htmllib.unescape(data["confirm"]) == walk.base + "/sandbox/pay/confirm"
        async with walk.http.post(htmllib.unescape(data["confirm"]), json={
                "package": json_script(page, "transfer")["package"], "openid": walk.openid}) as resp:
            assert resp.status == 200, await resp.text()
        await walk.wait_paid(wid)
        earnings = await walk.sim("收益")
        assert "已提现：¥12.50" in earnings and "可提现：¥7.50" in earnings, earnings
    assert db_url.startswith("sqlite") or (tmp_path / "data" / "pay-sandbox").is_dir()


@pytest.mark.parametrize("page", ["phone"], indirect=True)  # a distributor opens it on their phone
async def test_the_confirm_page_in_a_browser(tmp_path: Any, page: Any) -> None:
    """The page's own script in Chromium (no WeixinJSBridge): the sandbox's 确认收款 pays."""
    async with SandboxWalk(migrated_sqlite(tmp_path)) as walk:
        wid, link = await walk.to_claim_link()
        answer = await page.goto(link)
        # The page's own script runs by its hash: the policy allows no other inline script.
        script_src = next(d for d in answer.headers["content-security-policy"].split(";") if "script-src" in d)
        assert "'sha256-" in script_src and "'unsafe-inline'" not in script_src
        await page.get_by_role("button", name="确认收款").click()
        await page.get_by_role("status").filter(has_text="已确认收款").wait_for()
        await walk.wait_paid(wid)
        await page.reload()
        await page.get_by_text("已转入您的微信零钱").wait_for()


async def test_outside_the_48_hour_window_the_claim_link_comes_as_a_template_message(h: Any) -> None:
    _, user = await funded(h, 5000)
    reply = await h.say(user, "提现 12.50")
    wid = int(re.search(r"申请号 (\d+)", reply).group(1))
    user.last_interaction = h.platform.clock() - 49 * 3600
    assert (await h.api("POST", f"/withdrawals/{wid}/approve"))[0] == 200
    item = await h.platform.wait_for(user.openid, lambda m: m.get("via") == "template"  # not 佣金已解冻's
                                     and m["data"]["first"]["value"] == "提现待确认收款")
    assert item["template_id"] == "tmpl-notice" and "/pay/claim/" in item["url"]
    assert (await open_link(h, item["url"]))[0] == 200


async def test_with_pay_off_nothing_changes(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    config = make_config(db_url, distribution={"freeze_days": 0, "min_withdraw_fen": 1000})
    async with PayHarness(config, platform, wechat_server, reply_deadline=3.0) as h:
        d, user = await funded(h, 50000)
        reply = await h.say(user, "提现 300")  # no transfer ceiling without pay
        assert "已提交" in reply and "领取链接" not in reply
        wid = int(re.search(r"申请号 (\d+)", reply).group(1))
        status, w = await h.api("POST", f"/withdrawals/{wid}/approve")
        assert status == 200 and w["status"] == "approved"
        assert await balance(h, d) == {"pending_fen": 0, "available_fen": 20000, "withdrawing_fen": 0,
                                       "withdrawn_fen": 30000}
        await h.platform.wait_for(user.openid, lambda m: "已审核通过，款项将尽快到账" in m.get("content", ""))
        assert "transfer" not in await withdrawal(h, wid)
        history = await h.say(user, "提现记录")
        assert f"申请号 {wid} ¥300.00 已打款" in history and "/pay/claim/" not in history
        assert (await open_link(h, f"{h.url}/pay/claim/{wid}.{d.id}.{'0' * 32}"))[0] == 404
        async with h.http.post(h.url + "/pay/notify", data=b"{}") as resp:
            assert resp.status == 404
        assert (await h.api("POST", "/jobs/payouts/run"))[0] == 202
        await check_invariants(h)
