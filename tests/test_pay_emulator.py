"""The sandbox's WeChat Pay emulator (sandbox/pay_emulator.py) over real HTTP: request signatures checked,
WeChat Pay's validation answers, the state machine and its controls (/sandbox/pay/confirm, expire,
inject, bills), callbacks retried until answered 2xx, duplicates, the probe, and the emulator run
apart from the sandbox."""

# ruff: noqa: F811 (tests take the fixtures imported from tests/pay_support.py by name)
from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sandbox.pay_emulator import PayEmulator, create_pay_app
from wechat.pay import EmulatorKeys, PayClient, PayKeys, PayRefused
from wechat.pay_crypto import authorization, encrypt_field
from tests.eventually import eventually
from tests.pay_support import (  # noqa: F401 (fixtures)
    APPID,
    REPORT_1005,
    NotifyEndpoint,
    client,
    create,
    emulator,
    http,
    notify,
    pay_keys,
    pay_server,
)

BILLS = "v3/fund-app/mch-transfer/transfer-bills"


def body_of(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"appid": APPID, "out_bill_no": "E1", "transfer_scene_id": "1005", "openid": "o-user-1",
                            "transfer_amount": 1250, "transfer_remark": "佣金提现",
                            "transfer_scene_report_infos": REPORT_1005}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


async def raw_call(http: aiohttp.ClientSession, server: TestServer, keys: PayKeys, method: str, path: str,
                   body: dict[str, Any] | None = None, *, timestamp: int | None = None, signed_path: str | None = None,
                   auth: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """A request to the emulator, signed as given (the path as sent unless `signed_path`)."""
    full = "/sandbox/pay/" + path
    raw = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
    auth = auth or authorization(keys, method, signed_path or full, raw,
                                 timestamp=int(time.time()) if timestamp is None else timestamp)
    async with http.request(method, server.make_url(full), data=raw or None, headers={
            "Authorization": auth, "Content-Type": "application/json", **(headers or {})}) as resp:
        return resp.status, await resp.json(content_type=None)


async def control(http: aiohttp.ClientSession, server: TestServer, name: str,
                  data: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    url = server.make_url("/sandbox/pay/" + name)
    async with (http.get(url) if data is None else http.post(url, json=data)) as resp:
        return resp.status, await resp.json()


# ---- request signatures -------------------------------------------------------------------------
async def test_only_a_valid_request_signature_is_served(pay_keys: tuple[PayKeys, EmulatorKeys],
                                                        http: aiohttp.ClientSession, pay_server: TestServer,
                                                        emulator: PayEmulator) -> None:
    import dataclasses

    from cryptography.hazmat.primitives.asymmetric import rsa
    keys = pay_keys[0]
    body = body_of()
    now = int(time.time())
    forged = dataclasses.replace(keys, private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    good = authorization(keys, "POST", "/sandbox/pay/" + BILLS, json.dumps(body, ensure_ascii=False).encode(),
                         timestamp=now)
    cases = {
        "another key": {"auth": authorization(forged, "POST", "/sandbox/pay/" + BILLS,
                                              json.dumps(body, ensure_ascii=False).encode(), timestamp=now)},
        "stale timestamp": {"timestamp": now - 360},
        "timestamp ahead": {"timestamp": now + 360},
        "path without the mount prefix": {"signed_path": "/" + BILLS},
        "wrong serial_no": {"auth": good.replace(keys.merchant_serial, "0" * 40)},
        "wrong mchid": {"auth": good.replace(f'mchid="{keys.mchid}"', 'mchid="1900000002"')},
        "probe signature": {"auth": good.replace(good.split('signature="')[1].split('"')[0],
                                                 "WECHATPAY/SIGNTEST/" + "A" * 40)},
        "other body": {"auth": good, "body": body_of(transfer_amount=99)},
        "no Authorization schema": {"auth": "Bearer x"},
    }
    for name, kw in cases.items():
        status, answer = await raw_call(http, pay_server, keys, "POST", BILLS, kw.pop("body", body), **kw)
        assert (status, answer["code"]) == (401, "SIGN_ERROR"), name
    assert emulator.bills == {}
    status, answer = await raw_call(http, pay_server, keys, "POST", BILLS, body, auth=good)
    assert (status, answer["state"]) == (200, "WAIT_USER_CONFIRM")
    assert [c[2] for c in emulator.calls] == [401] * len(cases) + [200]


# ---- validation as WeChat Pay answers it ----------------------------------------------------------
@pytest.mark.parametrize(("changes", "status", "code"), [
    ({"transfer_amount": 9}, 400, "INVALID_REQUEST"),
    ({"transfer_amount": 20_001}, 400, "INVALID_REQUEST"),  # above the default ¥200 cap
    ({"transfer_amount": 12.5}, 400, "PARAM_ERROR"),
    ({"transfer_scene_report_infos": None}, 400, "PARAM_ERROR"),
    ({"transfer_scene_report_infos": REPORT_1005[:1]}, 400, "PARAM_ERROR"),
    ({"transfer_scene_id": "1999"}, 400, "INVALID_REQUEST"),
    ({"out_bill_no": "W-1"}, 400, "PARAM_ERROR"),
    ({"out_bill_no": "A" * 33}, 400, "PARAM_ERROR"),
    ({"out_bill_no": ""}, 400, "PARAM_ERROR"),
    ({"openid": None}, 400, "PARAM_ERROR"),
    ({"transfer_remark": "佣" * 33}, 400, "PARAM_ERROR"),
    ({"appid": "wxother"}, 400, "INVALID_REQUEST"),
    ({"notify_url": "https://example.com/pay/notify?x=1"}, 400, "PARAM_ERROR"),
    ({"transfer_amount": 29, "user_name": "NAME"}, 400, "PARAM_ERROR"),  # never below ¥0.30
    ({"transfer_amount": 200_000}, 400, "PARAM_ERROR"),  # required from ¥2,000
    ({"transfer_amount": 200_000, "user_name": "not encrypted"}, 400, "PARAM_ERROR"),
])
async def test_a_bad_create_is_answered_as_wechat_pay_answers(
        pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession, pay_server: TestServer,
        emulator: PayEmulator, changes: dict[str, Any], status: int, code: str) -> None:
    emulator.max_amount_fen = 20_000 if changes.get("transfer_amount") == 20_001 else 500_000
    if changes.get("user_name") == "NAME":
        changes["user_name"] = encrypt_field(pay_keys[0].public_key, "张三")
    got_status, answer = await raw_call(http, pay_server, pay_keys[0], "POST", BILLS, body_of(**changes),
                                        headers={"Wechatpay-Serial": pay_keys[0].public_key_id})
    assert (got_status, answer["code"]) == (status, code), answer
    assert answer["message"]
    assert emulator.bills == {}


async def test_user_name_needs_the_serial_of_the_key_it_was_encrypted_for(
        pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession, pay_server: TestServer,
        emulator: PayEmulator) -> None:
    emulator.max_amount_fen = 500_000
    body = body_of(transfer_amount=200_000, user_name=encrypt_field(pay_keys[0].public_key, "张三"))
    status, answer = await raw_call(http, pay_server, pay_keys[0], "POST", BILLS, body)
    assert (status, answer["code"]) == (400, "PARAM_ERROR")
    status, answer = await raw_call(http, pay_server, pay_keys[0], "POST", BILLS, body,
                                    headers={"Wechatpay-Serial": pay_keys[0].public_key_id})
    assert status == 200 and emulator.bills["E1"].request["user_name"] == "张三"


async def test_unknown_numbers_and_malformed_bodies(pay_keys: tuple[PayKeys, EmulatorKeys],
                                                    http: aiohttp.ClientSession, pay_server: TestServer) -> None:
    status, answer = await raw_call(http, pay_server, pay_keys[0], "GET", BILLS + "/out-bill-no/NOPE1")
    assert (status, answer["code"]) == (404, "NOT_FOUND")
    status, answer = await raw_call(http, pay_server, pay_keys[0], "POST", BILLS + "/out-bill-no/NOPE1/cancel")
    assert (status, answer["code"]) == (404, "NOT_FOUND")
    status, answer = await raw_call(http, pay_server, pay_keys[0], "POST", BILLS, ["not", "an", "object"])  # type: ignore[arg-type]
    assert (status, answer["code"]) == (400, "PARAM_ERROR")


# ---- the state machine ----------------------------------------------------------------------------
async def test_confirm_transfers_then_succeeds(client: PayClient, emulator: PayEmulator, http: aiohttp.ClientSession,
                                               pay_server: TestServer, notify: NotifyEndpoint) -> None:
    emulator.transfer_delay = 0.3
    bill = await create(client, "S1", notify_url=notify.url)
    status, _ = await control(http, pay_server, "confirm", {"package": bill.package_info, "openid": "o-other"})
    assert status == 403  # only the receiver can confirm
    status, answer = await control(http, pay_server, "confirm", {"package": bill.package_info, "openid": "o-user-1"})
    assert (status, answer["state"]) == (200, "TRANSFERING")
    assert (await client.query_bill("S1")).state == "TRANSFERING"  # type: ignore[union-attr]
    status, _ = await control(http, pay_server, "confirm", {"package": bill.package_info, "openid": "o-user-1"})
    assert status == 409
    with pytest.raises(PayRefused) as refused:  # too late to cancel
        await client.cancel_bill("S1")
    assert (refused.value.status, refused.value.code) == (400, "INVALID_REQUEST")
    await emulator.settle()
    assert (await client.query_bill("S1")).state == "SUCCESS"  # type: ignore[union-attr]
    assert [(b["out_bill_no"], b["state"]) for b in notify.bills] == [("S1", "SUCCESS")]
    status, _ = await control(http, pay_server, "expire", {"out_bill_no": "S1"})
    assert status == 409
    status, _ = await control(http, pay_server, "confirm", {"package": "nothing", "openid": "o-user-1"})
    assert status == 404


async def test_expire_closes_the_bill_and_calls_back(client: PayClient, emulator: PayEmulator,
                                                     http: aiohttp.ClientSession, pay_server: TestServer,
                                                     notify: NotifyEndpoint) -> None:
    bill = await create(client, "S2", notify_url=notify.url)
    status, answer = await control(http, pay_server, "expire", {"out_bill_no": "S2"})
    assert (status, answer["state"], answer["fail_reason"]) == (200, "FAIL", "OVERDUE_CLOSE")
    status, _ = await control(http, pay_server, "confirm", {"package": bill.package_info, "openid": "o-user-1"})
    assert status == 409
    await emulator.settle()
    [got] = notify.bills
    assert (got["state"], got["fail_reason"]) == ("FAIL", "OVERDUE_CLOSE")


async def test_a_bill_left_24_hours_closes_by_itself(client: PayClient, emulator: PayEmulator) -> None:
    shift = [0.0]
    emulator.clock = lambda: time.time() + shift[0]
    await create(client, "S3")
    shift[0] = 24 * 3600 - 60
    assert (await client.query_bill("S3")).state == "WAIT_USER_CONFIRM"  # type: ignore[union-attr]
    shift[0] = 24 * 3600 + 1
    closed = await client.query_bill("S3")
    assert closed is not None and (closed.state, closed.fail_reason) == ("FAIL", "OVERDUE_CLOSE")


async def test_cancel_goes_through_canceling(client: PayClient, emulator: PayEmulator) -> None:
    emulator.transfer_delay = 0.3
    await create(client, "S4")
    assert (await client.cancel_bill("S4")).state == "CANCELING"
    assert (await client.cancel_bill("S4")).state == "CANCELING"  # asking again changes nothing
    await emulator.settle()
    assert (await client.query_bill("S4")).state == "CANCELLED"  # type: ignore[union-attr]
    assert (await client.cancel_bill("S4")).state == "CANCELLED"


async def test_accepted_first_then_waiting(client: PayClient, emulator: PayEmulator) -> None:
    emulator.inject(None, "ACCEPTED")
    first = await create(client, "S5")
    assert (first.state, first.package_info) == ("ACCEPTED", None)
    again = await create(client, "S5")  # retried with the same number, as an ACCEPTED bill must be
    assert again.state == "WAIT_USER_CONFIRM" and again.package_info
    assert again.transfer_bill_no == first.transfer_bill_no


# ---- failure injection ----------------------------------------------------------------------------
@pytest.mark.parametrize("reason", ["NAME_NOT_CORRECT", "TRANSFER_QUOTA_EXCEED"])
async def test_an_injected_failure_ends_the_bill_at_confirmation(
        client: PayClient, emulator: PayEmulator, http: aiohttp.ClientSession, pay_server: TestServer,
        notify: NotifyEndpoint, reason: str) -> None:
    other = await create(client, "I0", openid="o-user-2", notify_url=notify.url)
    status, _ = await control(http, pay_server, "inject", {"fail_reason": reason, "openid": "o-user-1"})
    assert status == 200
    bill = await create(client, "I1", notify_url=notify.url)
    await control(http, pay_server, "confirm", {"package": other.package_info, "openid": "o-user-2"})
    await control(http, pay_server, "confirm", {"package": bill.package_info, "openid": "o-user-1"})
    await emulator.settle()
    states = {b["out_bill_no"]: (b["state"], b.get("fail_reason")) for b in notify.bills}
    assert states == {"I0": ("SUCCESS", None), "I1": ("FAIL", reason)}
    assert emulator.fail_next == []


async def test_injected_errors_through_the_control_endpoint(client: PayClient, emulator: PayEmulator,
                                                            http: aiohttp.ClientSession,
                                                            pay_server: TestServer) -> None:
    status, _ = await control(http, pay_server, "inject", {"error": "NOT_A_THING"})
    assert status == 400
    status, _ = await control(http, pay_server, "inject", {"error": "SYSTEM_ERROR", "openid": "o-user-2"})
    assert status == 200
    assert (await create(client, "I2")).state == "WAIT_USER_CONFIRM"  # someone else's injection
    status, answer = await raw_call(http, pay_server, client.keys, "POST", BILLS,
                                    body_of(out_bill_no="I3", openid="o-user-2"))
    assert (status, answer["code"]) == (500, "SYSTEM_ERROR")
    assert "I3" not in emulator.bills


async def test_bills_lists_what_the_simulator_shows(client: PayClient, http: aiohttp.ClientSession,
                                                    pay_server: TestServer) -> None:
    bill = await create(client, "L1")
    await create(client, "L2", openid="o-user-2")
    status, answer = await control(http, pay_server, "bills")
    assert status == 200 and [b["out_bill_no"] for b in answer["bills"]] == ["L1", "L2"]
    first = answer["bills"][0]
    assert (first["state"], first["amount_fen"], first["package_info"], first["openid"]) == (
        "WAIT_USER_CONFIRM", 1250, bill.package_info, "o-user-1")
    async with http.get(pay_server.make_url("/sandbox/pay/bills"), params={"openid": "o-user-2"}) as resp:
        assert [b["out_bill_no"] for b in (await resp.json())["bills"]] == ["L2"]


# ---- callbacks ------------------------------------------------------------------------------------
async def test_callbacks_are_retried_until_answered_2xx(client: PayClient, emulator: PayEmulator,
                                                        notify: NotifyEndpoint) -> None:
    emulator.callback_timeout = 0.3
    notify.slow_seconds = 0.6
    notify.script = [500, "slow", 404, 204]
    bill = await create(client, "C1", notify_url=notify.url)
    emulator.confirm(bill.package_info, "o-user-1")
    await emulator.settle()
    assert [(d.attempt, d.status) for d in emulator.deliveries] == [(1, 500), (2, None), (3, 404), (4, 204)]
    assert len(set(notify.ids())) == 1  # one notification, delivered four times
    assert emulator.probes == [(notify.url, 401)]  # the probe came first, and was refused
    assert notify.received[0].bill is None and notify.received[0].answered == 401


async def test_callbacks_give_up_after_the_last_retry(client: PayClient, emulator: PayEmulator,
                                                      notify: NotifyEndpoint) -> None:
    notify.script = [503] * 10
    bill = await create(client, "C2", notify_url=notify.url)
    emulator.confirm(bill.package_info, "o-user-1")
    await emulator.settle()
    assert [d.status for d in emulator.deliveries] == [503] * len(emulator.callback_delays)


async def test_duplicate_callbacks(client: PayClient, emulator: PayEmulator, notify: NotifyEndpoint) -> None:
    emulator.duplicate_callbacks = True
    emulator.probes_enabled = False
    bill = await create(client, "C3", notify_url=notify.url)
    emulator.confirm(bill.package_info, "o-user-1")
    await emulator.settle()
    assert [(b["out_bill_no"], b["state"]) for b in notify.bills] == [("C3", "SUCCESS")] * 2
    ids = notify.ids()
    assert len(ids) == 2 and ids[0] == ids[1]
    assert emulator.probes == []


async def test_one_probe_per_notify_url(client: PayClient, emulator: PayEmulator, notify: NotifyEndpoint) -> None:
    for no in ("P1", "P2"):
        bill = await create(client, no, notify_url=notify.url)
        emulator.confirm(bill.package_info, "o-user-1")
        await emulator.settle()
    assert emulator.probes == [(notify.url, 401)]
    assert [b["out_bill_no"] for b in notify.bills] == ["P1", "P2"]


# ---- run apart ----------------------------------------------------------------------------------
async def test_the_emulator_runs_apart(pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession) -> None:
    emulator = PayEmulator(pay_keys[1], appid=APPID)
    emulator.transfer_delay = 0.01
    server = TestServer(create_pay_app(emulator))
    await server.start_server()
    try:
        client = PayClient(pay_keys[0], http, str(server.make_url("/")))
        bill = await create(client, "A1")
        emulator.confirm(bill.package_info, "o-user-1")
        await eventually(lambda: emulator.bills["A1"].state == "SUCCESS")
        assert (await client.query_bill("A1")).state == "SUCCESS"  # type: ignore[union-attr]
    finally:
        await server.close()
