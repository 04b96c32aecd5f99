"""A stand-in for WeChat Pay's 商家转账 (transfer-bills) as its documentation describes it: signed
requests checked (401 SIGN_ERROR), answers signed with WeChat Pay's key, the bill's states, the
validation errors WeChat Pay answers, idempotent create by out_bill_no, the user's confirmation
(确认收款) and the 24-hour close, callbacks (encrypted, retried, sometimes twice, after a probe that
must fail verification), and failure injection. Facts in shared/PAYOUTS.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from domain.clock import Clock
from sandbox.pay_bills import (
    CANCELLABLE,
    CONFIRM_WITHIN_SECONDS,
    CREATE_INJECTIONS,
    ERROR_STATUS,
    FAIL_REASONS,
    Delivery,
    EmulatedBill,
    Injection,
    PayApiError,
    bill_answer,
    notification,
    rfc3339,
    validated,
)
from wechat.pay_crypto import (
    MAX_SKEW_SECONDS,
    PROBE_PREFIX,
    EmulatorKeys,
    parse_authorization,
    request_message,
    signature_valid,
    signed_headers,
)


class PayEmulator:
    def __init__(self, keys: EmulatorKeys, *, appid: str, http: aiohttp.ClientSession | None = None,
                 clock: Callable[[], float] | None = None, wall: Clock | None = None):
        self.keys = keys
        self.appid = appid
        # WeChat Pay's own clock signs (`wall`: real time unless given); `clock` dates the bills (the
        # 24-hour close), which a test moves alone.
        self.wall = wall or Clock()
        self.clock: Callable[[], float] = clock or self.wall.epoch
        self.http = http
        self._own_http: aiohttp.ClientSession | None = None
        # Knobs (the sandbox's short delays; WeChat Pay's are 0 s, 15 s ×10, 300 s ×10, 1,800 s ×44).
        self.max_amount_fen = 20_000  # ¥200: WeChat Pay's default cap per bill
        self.callback_delays: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0, 15.0, 30.0, 60.0)
        self.callback_timeout = 5.0
        self.duplicate_callbacks = False
        self.probes_enabled = True
        self.transfer_delay = 0.1  # TRANSFERING → SUCCESS/FAIL, CANCELING → CANCELLED
        self.timeout_delay = 15.0  # an injected TIMEOUT holds the answer this long (beyond the client's)
        self.answer_skew = 0.0  # seconds added to answers' Wechatpay-Timestamp (a skewed clock)
        # State.
        self.bills: dict[str, EmulatedBill] = {}
        self.fail_next: list[Injection] = []
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status) of every WeChat Pay call
        self.deliveries: list[Delivery] = []
        self.probes: list[tuple[str, int | None]] = []  # (notify_url, the product's status): must be 401
        self._probed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count(1)
        self.routes = self._route_table()

    # ---- failure injection ------------------------------------------------------------------------
    def inject(self, openid: str | None, what: str) -> None:
        """The next create (an error code, TIMEOUT, ACCEPTED) or confirmation (a fail_reason) of
        `openid` (None: anyone's) goes this way."""
        if what not in CREATE_INJECTIONS and what not in FAIL_REASONS:
            raise ValueError(f"cannot inject {what!r}")
        self.fail_next.append(Injection(what, openid))

    def _take(self, kinds: frozenset[str], openid: str) -> str | None:
        for i, inj in enumerate(self.fail_next):
            if inj.what in kinds and inj.openid in (None, openid):
                del self.fail_next[i]
                return inj.what
        return None

    # ---- WeChat Pay's API -------------------------------------------------------------------------
    def create(self, body: dict[str, Any], wechatpay_serial: str | None) -> tuple[EmulatedBill, str | None]:
        """The bill (new or the same again) and what was injected; raises PayApiError."""
        request = validated(body, appid=self.appid, keys=self.keys, max_amount_fen=self.max_amount_fen,
                            wechatpay_serial=wechatpay_serial)
        injected = self._take(CREATE_INJECTIONS, request["openid"])
        if injected in ERROR_STATUS:
            raise PayApiError(injected)
        bill = self.bills.get(request["out_bill_no"])
        if bill is not None:
            if bill.request != request:
                raise PayApiError("INVALID_REQUEST", "商户单号重复，请求参数与原单不一致")
            return bill, injected
        now = self.clock()
        bill = EmulatedBill(
            out_bill_no=request["out_bill_no"], request=request, created_at=now, updated_at=now,
            transfer_bill_no=f"1330{self.keys.mchid}{int(now)}{next(self._seq):06d}",
            state="WAIT_USER_CONFIRM", package_info="AB" + secrets.token_urlsafe(48))
        self.bills[bill.out_bill_no] = bill
        if injected == "ACCEPTED":  # answered as still being accepted; waits for the user from the next look-up
            return dataclasses.replace(bill, state="ACCEPTED"), injected
        return bill, injected

    def query(self, out_bill_no: str) -> EmulatedBill:
        bill = self.bills.get(out_bill_no)
        if bill is None:
            raise PayApiError("NOT_FOUND", "记录不存在")
        return bill

    def cancel(self, out_bill_no: str) -> EmulatedBill:
        bill = self.query(out_bill_no)
        if bill.state in CANCELLABLE:
            self._set(bill, "CANCELING")
            self._later(self.transfer_delay, bill, "CANCELLED", "MCH_CANCEL")
        elif bill.state not in ("CANCELING", "CANCELLED"):
            raise PayApiError("INVALID_REQUEST", f"当前单据状态为{bill.state}，不允许撤销")
        return bill

    # ---- the user and time --------------------------------------------------------------------
    def confirm(self, package: str, openid: str | None) -> EmulatedBill:
        """The user pressed 确认收款: TRANSFERING, then SUCCESS (or FAIL with an injected reason)."""
        self.close_overdue()
        bill = next((b for b in self.bills.values() if b.package_info == package), None)
        if bill is None:
            raise LookupError("没有这笔转账")
        if openid is not None and openid != bill.openid:
            raise PermissionError("只有收款用户本人可以确认收款")
        if bill.state != "WAIT_USER_CONFIRM":
            raise ValueError(f"这笔转账当前状态为{bill.state}，不能确认收款")
        self._set(bill, "TRANSFERING")
        reason = self._take(FAIL_REASONS, bill.openid)
        self._later(self.transfer_delay, bill, "FAIL" if reason else "SUCCESS", reason)
        return bill

    def expire(self, out_bill_no: str) -> EmulatedBill:
        """The 24 hours ran out without a confirmation: FAIL / OVERDUE_CLOSE."""
        bill = self.bills.get(out_bill_no)
        if bill is None:
            raise LookupError("没有这笔转账")
        if bill.state not in ("ACCEPTED", "PROCESSING", "WAIT_USER_CONFIRM"):
            raise ValueError(f"这笔转账当前状态为{bill.state}，不会过期")
        self._finish(bill, "FAIL", "OVERDUE_CLOSE")
        return bill

    def close_overdue(self) -> None:
        for bill in list(self.bills.values()):
            if bill.state == "WAIT_USER_CONFIRM" and self.clock() - bill.created_at >= CONFIRM_WITHIN_SECONDS:
                self._finish(bill, "FAIL", "OVERDUE_CLOSE")

    def _set(self, bill: EmulatedBill, state: str, reason: str | None = None) -> None:
        bill.state, bill.updated_at = state, self.clock()
        if reason is not None:
            bill.fail_reason = reason

    def _finish(self, bill: EmulatedBill, state: str, reason: str | None) -> None:
        self._set(bill, state, reason)
        if bill.request.get("notify_url"):
            self._spawn(self._notify(bill))

    def _later(self, delay: float, bill: EmulatedBill, state: str, reason: str | None) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            self._finish(bill, state, reason)
        self._spawn(later())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait until every pending transition and callback has run (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_http is not None:
            await self._own_http.close()
            self._own_http = None

    # ---- callbacks --------------------------------------------------------------------------------
    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        if self.http is None and self._own_http is None:
            self._own_http = aiohttp.ClientSession()
        http = self.http or self._own_http
        assert http is not None
        try:
            async with http.post(url, data=body, headers={**headers, "Content-Type": "application/json"},
                                 timeout=aiohttp.ClientTimeout(total=self.callback_timeout)) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _notify(self, bill: EmulatedBill) -> None:
        url, state = bill.request["notify_url"], bill.state
        body = notification(self.keys, bill, self.clock())  # one notification: retries and duplicates repeat its id
        if self.probes_enabled and url not in self._probed:
            self._probed.add(url)
            probe = PROBE_PREFIX + secrets.token_urlsafe(64)
            headers = signed_headers(self.keys.private_key, self.keys.public_key_id, body,
                                     timestamp=int(self.wall.epoch()), signature=probe)
            self.probes.append((url, await self._post(url, body, headers)))
        copies = 2 if self.duplicate_callbacks else 1
        for attempt, delay in enumerate(self.callback_delays, 1):
            await asyncio.sleep(delay)
            headers = signed_headers(self.keys.private_key, self.keys.public_key_id, body,
                                     timestamp=int(self.wall.epoch()))
            status = await self._post(url, body, headers)
            self.deliveries.append(Delivery(bill.out_bill_no, state, attempt, status))
            if status is not None and 200 <= status < 300:
                copies -= 1
                if copies == 0:
                    return

    # ---- HTTP -------------------------------------------------------------------------------------
    def _answer(self, status: int, data: dict[str, Any]) -> web.Response:
        body = json.dumps(data, ensure_ascii=False).encode()
        headers = {"Request-ID": uuid.uuid4().hex}
        if status != 401:  # WeChat Pay signs an answer only to a request whose signature it verified
            headers |= signed_headers(self.keys.private_key, self.keys.public_key_id, body,
                                      timestamp=int(self.wall.epoch() + self.answer_skew))
        return web.Response(status=status, body=body, headers=headers, content_type="application/json")

    def _signature_error(self, request: web.Request, body: bytes) -> str | None:
        auth = parse_authorization(request.headers.get("Authorization", ""))
        if not all(auth.get(k) for k in ("mchid", "nonce_str", "signature", "timestamp", "serial_no")):
            return "Authorization 格式错误"
        if auth["mchid"] != self.keys.mchid or auth["serial_no"] != self.keys.merchant_serial:
            return "商户号或商户证书序列号错误"
        if not auth["timestamp"].isdigit() or abs(self.wall.epoch() - int(auth["timestamp"])) > MAX_SKEW_SECONDS:
            return "请求时间戳与服务器时间相差超过5分钟"
        message = request_message(request.method, request.raw_path, auth["timestamp"], auth["nonce_str"], body)
        if not signature_valid(self.keys.merchant_public_key, message, auth["signature"]):
            return "签名错误"
        return None

    async def _api(self, request: web.Request) -> web.Response:
        raw = await request.read()
        response = await self._api_answer(request, raw)
        self.calls.append((request.method, request.path, response.status))
        return response

    async def _api_answer(self, request: web.Request, raw: bytes) -> web.Response:
        error = self._signature_error(request, raw)
        if error:
            return self._answer(401, {"code": "SIGN_ERROR", "message": error})
        self.close_overdue()
        no, action = request.match_info.get("no"), request.match_info.get("action")
        try:
            if no is None:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise PayApiError("PARAM_ERROR", "请求体不是合法的JSON") from None
                if not isinstance(body, dict):
                    raise PayApiError("PARAM_ERROR", "请求体不是JSON对象")
                bill, injected = self.create(body, request.headers.get("Wechatpay-Serial"))
                answer = bill_answer(bill, self.keys.mchid, full=False)
                if injected == "TIMEOUT":  # created, but the answer arrives after the client gave up
                    await asyncio.sleep(self.timeout_delay)
                return self._answer(200, answer)
            if action == "cancel":
                bill = self.cancel(no)
                return self._answer(200, {"out_bill_no": bill.out_bill_no, "transfer_bill_no": bill.transfer_bill_no,
                                          "state": bill.state, "update_time": rfc3339(bill.updated_at)})
            return self._answer(200, bill_answer(self.query(no), self.keys.mchid, full=True))
        except PayApiError as e:
            return self._answer(e.status, {"code": e.code, "message": str(e)})

    async def _confirm(self, request: web.Request) -> web.Response:
        data = await _json(request)
        openid = data.get("openid")
        return _bill_answer(lambda: self.confirm(str(data.get("package", "")), str(openid) if openid else None))

    async def _expire(self, request: web.Request) -> web.Response:
        data = await _json(request)
        return _bill_answer(lambda: self.expire(str(data.get("out_bill_no", ""))))

    async def _inject(self, request: web.Request) -> web.Response:
        data = await _json(request)
        what = data.get("fail_reason") or data.get("error")
        openid = data.get("openid")
        try:
            self.inject(str(openid) if openid else None, str(what))
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"ok": True, "pending": [i.__dict__ for i in self.fail_next]})

    async def _bills(self, request: web.Request) -> web.Response:
        self.close_overdue()
        openid = request.query.get("openid")
        bills = [b.as_json() for b in self.bills.values() if openid in (None, b.openid)]
        return web.json_response({"bills": bills})

    def _route_table(self) -> web.RouteTableDef:
        routes = web.RouteTableDef()
        bills = "/v3/fund-app/mch-transfer/transfer-bills"
        routes.post(bills)(self._api)
        routes.get(bills + "/out-bill-no/{no}")(self._api)
        routes.post(bills + "/out-bill-no/{no}/{action:cancel}")(self._api)
        routes.post("/confirm")(self._confirm)
        routes.post("/expire")(self._expire)
        routes.post("/inject")(self._inject)
        routes.get("/bills")(self._bills)
        return routes


def _bill_answer(control: Callable[[], Any]) -> web.Response:
    """A control endpoint's answer: the bill, or why not (no such bill 404, not this user's 403,
    not in a state that allows it 409)."""
    try:
        bill = control()
    except LookupError as e:
        return web.json_response({"error": str(e)}, status=404)
    except PermissionError as e:
        return web.json_response({"error": str(e)}, status=403)
    except ValueError as e:
        return web.json_response({"error": str(e)}, status=409)
    return web.json_response(bill.as_json())


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def create_pay_app(emulator: PayEmulator) -> web.Application:
    """The emulator's routes as an app (mounted at /sandbox/pay/); stopping it stops its callbacks."""
    app = web.Application()
    app.add_routes(emulator.routes)

    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        yield
        await emulator.close()

    app.cleanup_ctx.append(lifetime)
    return app
