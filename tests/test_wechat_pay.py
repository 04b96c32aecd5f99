"""The WeChat Pay client (wechat/pay.py) over real HTTP against the sandbox's emulator: requests
signed, answers and callbacks verified (forged, stale, probe, wrong serial refused), user_name
encrypted, errors classified (PayUnknown: query with the same number; PayRefused: nothing created),
and the signatures cross-checked with the `wechatpayv3` package."""

# ruff: noqa: F811 (tests take the fixtures imported from tests/pay_support.py by name)
from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3 import utils as wechatpayv3_utils

from sandbox.pay_emulator import PayEmulator
from wechat.pay import (
    EmulatorKeys,
    PayClient,
    PayKeys,
    PayRefused,
    PayUnknown,
    SignatureInvalid,
    sandbox_keys,
)
from wechat.pay_crypto import authorization, parse_authorization, signed_headers
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
    pay_url,
    write_public_pem,
)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# ---- a bill's life through the client -------------------------------------------------------------
async def test_create_answers_a_bill_waiting_for_the_user(client: PayClient, emulator: PayEmulator) -> None:
    bill = await create(client, "W1A1")
    assert bill.state == "WAIT_USER_CONFIRM"
    assert bill.package_info and bill.transfer_bill_no
    held = emulator.bills["W1A1"]
    assert (held.request["transfer_amount"], held.request["openid"]) == (1250, "o-user-1")
    assert held.request["transfer_remark"] == "佣金提现"  # UTF-8 as sent, and the signature covered it
    queried = await client.query_bill("W1A1")
    assert queried is not None
    assert (queried.state, queried.transfer_bill_no, queried.package_info) == (
        "WAIT_USER_CONFIRM", bill.transfer_bill_no, None)  # query never repeats the package


async def test_the_same_number_twice_is_the_same_bill(client: PayClient, emulator: PayEmulator) -> None:
    first = await create(client, "W1B1")
    again = await create(client, "W1B1")
    assert again == first
    assert list(emulator.bills) == ["W1B1"]
    with pytest.raises(PayRefused) as refused:
        await create(client, "W1B1", amount_fen=1300)
    assert (refused.value.status, refused.value.code, refused.value.retry_same) == (400, "INVALID_REQUEST", False)
    assert emulator.bills["W1B1"].request["transfer_amount"] == 1250


async def test_query_of_an_unknown_number_is_none(client: PayClient) -> None:
    assert await client.query_bill("NEVERMADE1") is None


async def test_cancel_before_confirmation(client: PayClient, emulator: PayEmulator, notify: NotifyEndpoint) -> None:
    await create(client, "W1C1", notify_url=notify.url)
    emulator.transfer_delay = 0.3
    cancelling = await client.cancel_bill("W1C1")
    assert cancelling.state == "CANCELING"
    await emulator.settle()
    queried = await client.query_bill("W1C1")
    assert queried is not None and queried.state == "CANCELLED"
    assert [b["state"] for b in notify.bills] == ["CANCELLED"]


async def test_user_name_is_encrypted_from_2000_yuan(client: PayClient, emulator: PayEmulator) -> None:
    emulator.max_amount_fen = 500_000
    await create(client, "W1D1", amount_fen=200_000, user_name="张三")
    assert emulator.bills["W1D1"].request["user_name"] == "张三"  # OAEP-decrypted by WeChat Pay's key
    await create(client, "W1D2", amount_fen=199_999, user_name="张三")
    assert "user_name" not in emulator.bills["W1D2"].request  # below ¥2,000 it is not sent
    with pytest.raises(ValueError, match="real name"):
        await create(client, "W1D3", amount_fen=200_000)
    assert "W1D3" not in emulator.bills


# ---- errors -------------------------------------------------------------------------------------
async def test_a_timeout_is_unknown_and_the_query_finds_the_bill(
        pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession, pay_server: TestServer,
        client: PayClient, emulator: PayEmulator) -> None:
    impatient = PayClient(pay_keys[0], http, pay_url(pay_server), timeout=0.3)
    emulator.inject("o-user-1", "TIMEOUT")
    with pytest.raises(PayUnknown):
        await create(impatient, "W2A1")
    found = await client.query_bill("W2A1")  # the bill was created all the same
    assert found is not None and found.state == "WAIT_USER_CONFIRM"
    again = await create(client, "W2A1")  # the same number: the same bill, now with its package
    assert again.transfer_bill_no == found.transfer_bill_no and again.package_info
    assert list(emulator.bills) == ["W2A1"]


async def test_a_server_error_is_unknown(client: PayClient, emulator: PayEmulator) -> None:
    emulator.inject(None, "SYSTEM_ERROR")
    with pytest.raises(PayUnknown, match="HTTP 500"):
        await create(client, "W2B1")
    assert await client.query_bill("W2B1") is None
    assert (await create(client, "W2B1")).state == "WAIT_USER_CONFIRM"


async def test_no_connection_is_unknown(pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession) -> None:
    nowhere = PayClient(pay_keys[0], http, "http://127.0.0.1:9/sandbox/pay/", timeout=2.0)
    with pytest.raises(PayUnknown, match="unreachable"):
        await nowhere.query_bill("W2C1")


@pytest.mark.parametrize(("code", "status", "retry_same"), [
    ("NOT_ENOUGH", 403, True), ("FREQUENCY_LIMITED", 429, True), ("NO_AUTH", 403, False),
    ("INVALID_REQUEST", 400, False)])
async def test_a_definite_refusal_carries_its_code(client: PayClient, emulator: PayEmulator, code: str,
                                                   status: int, retry_same: bool) -> None:
    emulator.inject("o-user-1", code)
    with pytest.raises(PayRefused) as refused:
        await create(client, "W2D1")
    assert (refused.value.status, refused.value.code, refused.value.retry_same) == (status, code, retry_same)
    assert emulator.bills == {}


async def test_an_amount_below_ten_fen_is_refused(client: PayClient) -> None:
    with pytest.raises(PayRefused) as refused:
        await create(client, "W2E1", amount_fen=9)
    assert (refused.value.status, refused.value.code) == (400, "INVALID_REQUEST")
    assert "0.1" in refused.value.message


async def test_our_request_signed_with_another_key_is_refused(
        pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession, pay_server: TestServer,
        emulator: PayEmulator) -> None:
    impostor = PayClient(dataclasses.replace(pay_keys[0], private_key=other_key()), http, pay_url(pay_server))
    with pytest.raises(PayRefused) as refused:
        await create(impostor, "W2F1")
    assert (refused.value.status, refused.value.code) == (401, "SIGN_ERROR")
    assert emulator.bills == {}


# ---- answers that do not verify -----------------------------------------------------------------
@pytest.mark.parametrize(("status", "body", "signed", "raised"), [
    (200, b"{}", True, PayUnknown),  # verified, but names no bill
    (200, b"<html>busy</html>", True, PayUnknown),
    (400, b'{"code": "INVALID_REQUEST", "message": "x"}', False, PayUnknown),  # a refusal nobody signed
    (400, b'{"code": "INVALID_REQUEST", "message": "x"}', True, PayRefused),
    (302, b"", True, PayUnknown),
])
async def test_only_a_signed_refusal_is_definite(pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession,
                                                 status: int, body: bytes, signed: bool, raised: type) -> None:
    wechat = pay_keys[1]

    async def answer(_: web.Request) -> web.Response:
        headers = signed_headers(wechat.private_key, wechat.public_key_id, body,
                                 timestamp=int(time.time())) if signed else {}
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = TestServer(app)
    await server.start_server()
    try:
        with pytest.raises(raised):
            await create(PayClient(pay_keys[0], http, str(server.make_url("/"))), "W3B1")
    finally:
        await server.close()


@pytest.mark.parametrize("forgery", ["key", "serial", "stale", "ahead"])
async def test_an_answer_that_does_not_verify_is_unknown(
        pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession, emulator: PayEmulator,
        pay_server: TestServer, forgery: str) -> None:
    keys, wechat_keys = pay_keys
    if forgery == "key":
        emulator.keys = dataclasses.replace(wechat_keys, private_key=other_key())
    elif forgery == "serial":
        emulator.keys = dataclasses.replace(wechat_keys, public_key_id="PUB_KEY_ID_SOMEONE_ELSE")
    else:
        emulator.answer_skew = -360 if forgery == "stale" else 360  # WeChat Pay allows ±300 s
    client = PayClient(keys, http, pay_url(pay_server))
    with pytest.raises(PayUnknown, match="does not verify"):
        await create(client, "W3A1")
    assert "W3A1" in emulator.bills  # it was created: only a query can tell


# ---- callbacks ----------------------------------------------------------------------------------
async def test_a_callback_decrypts_to_the_bill(client: PayClient, emulator: PayEmulator,
                                               notify: NotifyEndpoint) -> None:
    bill = await create(client, "W4A1", notify_url=notify.url)
    emulator.confirm(bill.package_info, "o-user-1")
    await emulator.settle()
    [got] = notify.bills
    assert (got["out_bill_no"], got["state"], got["transfer_bill_no"], got["transfer_amount"], got["openid"]) == (
        "W4A1", "SUCCESS", bill.transfer_bill_no, 1250, "o-user-1")
    assert got["mch_id"] == client.keys.mchid


async def test_callbacks_that_do_not_verify_are_refused(client: PayClient, emulator: PayEmulator,
                                                        pay_keys: tuple[PayKeys, EmulatorKeys],
                                                        notify: NotifyEndpoint) -> None:
    bill = await create(client, "W4B1", notify_url=notify.url)
    emulator.confirm(bill.package_info, None)
    await emulator.settle()
    [good] = [r for r in notify.received if r.bill is not None]
    now = float(good.headers["Wechatpay-Timestamp"])
    for within in (-300, 0, 300):
        assert client.read_notification(good.headers, good.body, now=now + within)["state"] == "SUCCESS"
    wechat_keys = pay_keys[1]

    def resigned(body: bytes, **kw: object) -> dict[str, str]:
        return signed_headers(wechat_keys.private_key, wechat_keys.public_key_id, body, timestamp=int(now), **kw)

    tampered = good.body[:-1] + b" }"  # the same JSON, other bytes
    cases = {
        "tampered body": (good.headers, tampered),
        "stale": (good.headers, good.body, now + 301),
        "from the future": (good.headers, good.body, now - 301),
        "probe": (resigned(good.body, signature="WECHATPAY/SIGNTEST/" + "A" * 40), good.body),
        "wrong serial": ({**resigned(good.body), "Wechatpay-Serial": "PUB_KEY_ID_SOMEONE_ELSE"}, good.body),
        "forged signature": (signed_headers(other_key(), wechat_keys.public_key_id, good.body,
                                            timestamp=int(now)), good.body),
        "not a notification": (resigned(b'{"id": "x"}'), b'{"id": "x"}'),
        "another APIv3 key": (resigned(_reencrypted(good.body)), _reencrypted(good.body)),
    }
    for name, (headers, body, *at) in cases.items():
        with pytest.raises(SignatureInvalid):
            client.read_notification(headers, body, now=at[0] if at else now)
            pytest.fail(name)
    # And the probe WeChat Pay sent before the first callback was answered 401.
    assert emulator.probes == [(notify.url, 401)]


def _reencrypted(body: bytes) -> bytes:
    from wechat.pay_crypto import encrypt_resource
    envelope = json.loads(body)
    envelope["resource"] = encrypt_resource(b"k" * 32, b'{"out_bill_no": "X", "state": "SUCCESS"}', "mch_payment")
    return json.dumps(envelope).encode()


# ---- keys ---------------------------------------------------------------------------------------
def test_sandbox_keys_are_made_once_and_kept_private(tmp_path: Path) -> None:
    keys, wechat = sandbox_keys(tmp_path / "keys", mchid="1900000009")
    again, wechat_again = sandbox_keys(tmp_path / "keys", mchid="1900000009")
    assert (again.merchant_serial, again.public_key_id, again.apiv3_key) == (
        keys.merchant_serial, keys.public_key_id, keys.apiv3_key)
    assert pem(again.private_key) == pem(keys.private_key)
    assert (wechat.mchid, wechat.merchant_serial, wechat.public_key_id) == (
        "1900000009", keys.merchant_serial, keys.public_key_id)
    assert len(keys.apiv3_key) == 32 and keys.public_key_id.startswith("PUB_KEY_ID_")
    for name in ("merchant_key.pem", "wechatpay_key.pem", "apiv3_key"):
        assert stat.S_IMODE(os.stat(tmp_path / "keys" / name).st_mode) == 0o600, name
    loaded = PayKeys.load(mchid="1900000009", merchant_serial=keys.merchant_serial,
                          private_key_path=tmp_path / "keys" / "merchant_key.pem",
                          apiv3_key=keys.apiv3_key.decode(), public_key_id=keys.public_key_id,
                          public_key_path=write_public_pem(tmp_path, wechat_again))
    assert pem(loaded.private_key) == pem(keys.private_key) and loaded.apiv3_key == keys.apiv3_key
    with pytest.raises(ValueError, match="32 bytes"):
        PayKeys.load(mchid="1", merchant_serial="s", private_key_path=tmp_path / "keys" / "merchant_key.pem",
                     apiv3_key="short", public_key_id="p", public_key_path=tmp_path / "wechatpay_public.pem")


# ---- cross-checked with the wechatpayv3 package ---------------------------------------------------
def _wechatpayv3(keys: PayKeys, wechat: EmulatorKeys) -> WeChatPay:
    public = wechat.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return WeChatPay(wechatpay_type=WeChatPayType.NATIVE, mchid=keys.mchid, private_key=pem(keys.private_key),
                     cert_serial_no=keys.merchant_serial, appid=APPID, apiv3_key=keys.apiv3_key.decode(),
                     public_key=public, public_key_id=keys.public_key_id)


def test_our_request_signature_is_wechatpayv3s(pay_keys: tuple[PayKeys, EmulatorKeys]) -> None:
    keys = pay_keys[0]
    body = json.dumps({"out_bill_no": "X1", "transfer_remark": "佣金提现"}, ensure_ascii=False)
    theirs = wechatpayv3_utils.build_authorization(
        "/v3/fund-app/mch-transfer/transfer-bills", "POST", keys.mchid, keys.merchant_serial,
        wechatpayv3_utils.load_private_key(pem(keys.private_key)), data=body, nonce_str="NONCE123")
    timestamp = int(parse_authorization(theirs)["timestamp"])
    ours = authorization(keys, "POST", "/v3/fund-app/mch-transfer/transfer-bills", body.encode(),
                         timestamp=timestamp, nonce="NONCE123")
    assert ours == theirs
    assert authorization(keys, "POST", "/v3/fund-app/mch-transfer/transfer-bills", body.encode() + b" ",
                         timestamp=timestamp, nonce="NONCE123") != theirs


async def test_the_emulator_accepts_wechatpayv3s_signature(
        pay_keys: tuple[PayKeys, EmulatorKeys], client: PayClient, http: aiohttp.ClientSession,
        pay_server: TestServer) -> None:
    keys = pay_keys[0]
    await create(client, "W5A1")
    path = "/sandbox/pay/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/W5A1"
    signed = wechatpayv3_utils.build_authorization(path, "GET", keys.mchid, keys.merchant_serial,
                                                   wechatpayv3_utils.load_private_key(pem(keys.private_key)))
    async with http.get(pay_server.make_url(path), headers={"Authorization": signed}) as resp:
        assert resp.status == 200
        body = await resp.text()
        # ...and wechatpayv3 verifies the emulator's answer with WeChat Pay's public key.
        h = resp.headers
        assert wechatpayv3_utils.rsa_verify(h["Wechatpay-Timestamp"], h["Wechatpay-Nonce"], body,
                                            h["Wechatpay-Signature"], keys.public_key)
        assert not wechatpayv3_utils.rsa_verify(h["Wechatpay-Timestamp"], h["Wechatpay-Nonce"], body + " ",
                                                h["Wechatpay-Signature"], keys.public_key)
    assert json.loads(body)["state"] == "WAIT_USER_CONFIRM"


async def test_wechatpayv3_reads_the_emulators_callback_as_we_do(
        pay_keys: tuple[PayKeys, EmulatorKeys], client: PayClient, emulator: PayEmulator,
        notify: NotifyEndpoint) -> None:
    bill = await create(client, "W5B1", notify_url=notify.url)
    emulator.inject("o-user-1", "NAME_NOT_CORRECT")
    emulator.confirm(bill.package_info, "o-user-1")
    await emulator.settle()
    [received] = [r for r in notify.received if r.bill is not None]
    theirs = _wechatpayv3(*pay_keys).callback(received.headers, received.body)
    assert theirs is not None and theirs["resource"] == received.bill
    assert received.bill["fail_reason"] == "NAME_NOT_CORRECT"
    # wechatpayv3 refuses the probe as well.
    [probe] = [r for r in notify.received if r.bill is None]
    assert probe.headers["Wechatpay-Signature"].startswith("WECHATPAY/SIGNTEST/")
    assert _wechatpayv3(*pay_keys).callback(probe.headers, probe.body) is None


async def test_wechatpayv3s_user_name_decrypts_in_the_emulator(
        pay_keys: tuple[PayKeys, EmulatorKeys], client: PayClient, http: aiohttp.ClientSession,
        pay_server: TestServer, emulator: PayEmulator) -> None:
    keys = pay_keys[0]
    emulator.max_amount_fen = 500_000
    body = json.dumps({"appid": APPID, "out_bill_no": "W5C1", "transfer_scene_id": "1005", "openid": "o-user-1",
                       "transfer_amount": 200_000, "transfer_remark": "佣金提现",
                       "transfer_scene_report_infos": REPORT_1005,
                       "user_name": wechatpayv3_utils.rsa_encrypt("李四", keys.public_key)})
    path = "/sandbox/pay/v3/fund-app/mch-transfer/transfer-bills"
    signed = wechatpayv3_utils.build_authorization(path, "POST", keys.mchid, keys.merchant_serial,
                                                   wechatpayv3_utils.load_private_key(pem(keys.private_key)),
                                                   data=body)
    async with http.post(pay_server.make_url(path), data=body, headers={
            "Authorization": signed, "Wechatpay-Serial": keys.public_key_id,
            "Content-Type": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()
    await eventually(lambda: "W5C1" in emulator.bills)
    assert emulator.bills["W5C1"].request["user_name"] == "李四"
