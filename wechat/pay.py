"""A thin async client for WeChat Pay's 商家转账 (transfer-bills): create, query by out_bill_no,
cancel, and reading the callback. Signatures and encryption in wechat/pay_crypto.py.

The one rule a caller must keep: after PayUnknown the bill may exist, so query with the same
out_bill_no before anything else, and never pay the same withdrawal under a new number then.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from domain.clock import Clock
from wechat.pay_crypto import (
    EmulatorKeys,
    PayError,
    PayKeys,
    SignatureInvalid,
    authorization,
    decrypt_resource,
    encrypt_field,
    sandbox_keys,
    verify_signed,
)

__all__ = ["Bill", "EmulatorKeys", "PayClient", "PayError", "PayKeys", "PayRefused", "PayUnknown",
           "SignatureInvalid", "sandbox_keys"]

TRANSFER_BILLS = "v3/fund-app/mch-transfer/transfer-bills"
USER_NAME_FROM_FEN = 200_000  # user_name is required from ¥2,000
USER_NAME_NEVER_BELOW_FEN = 30  # and must not be sent below ¥0.30
RETRY_SAME_CODES = frozenset({"NOT_ENOUGH", "FREQUENCY_LIMITED"})
FINAL_STATES = frozenset({"SUCCESS", "FAIL", "CANCELLED"})


@dataclass(frozen=True)
class Bill:
    out_bill_no: str
    state: str  # ACCEPTED, PROCESSING, WAIT_USER_CONFIRM, TRANSFERING, SUCCESS, FAIL, CANCELING, CANCELLED
    transfer_bill_no: str | None = None
    fail_reason: str | None = None
    package_info: str | None = None  # only from create: store it, query does not repeat it

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_answer(cls, data: Mapping[str, Any]) -> Bill:
        """The bill in a verified 2xx answer; one without a number or state leaves the outcome unknown."""
        if not isinstance(data.get("out_bill_no"), str) or not isinstance(data.get("state"), str):
            raise PayUnknown("WeChat Pay's answer names no bill and state")
        return cls(out_bill_no=data["out_bill_no"], state=data["state"],
                   transfer_bill_no=data.get("transfer_bill_no"), fail_reason=data.get("fail_reason") or None,
                   package_info=data.get("package_info") or None)


class PayUnknown(PayError):
    """The outcome is unknown (5xx, timeout, connection error, an answer that fails verification):
    query by the same out_bill_no before anything else."""


class PayRefused(PayError):
    """A definite 4xx: nothing was created (or changed)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"WeChat Pay refused (HTTP {status}) {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def retry_same(self) -> bool:
        """Retry later with the SAME out_bill_no (the operating account is short, or too many calls)."""
        return self.code in RETRY_SAME_CODES or self.status == 429


class PayClient:
    def __init__(self, keys: PayKeys, http: aiohttp.ClientSession, base_url: str, *, timeout: float = 10.0,
                 clock: Clock | None = None):
        self.keys = keys
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self._http = http
        self._clock = clock or Clock()

    # ---- the calls ----------------------------------------------------------------------------
    async def create_bill(self, *, appid: str, out_bill_no: str, openid: str, amount_fen: int, remark: str,
                          scene_id: str, report_infos: list[dict[str, str]], notify_url: str,
                          user_name: str | None = None) -> Bill:
        """Create the transfer bill; the same out_bill_no with the same fields answers the same bill."""
        if isinstance(amount_fen, bool) or not isinstance(amount_fen, int):
            raise TypeError("amount_fen is an int of fen")
        body: dict[str, Any] = {
            "appid": appid, "out_bill_no": out_bill_no, "transfer_scene_id": scene_id, "openid": openid,
            "transfer_amount": amount_fen, "transfer_remark": remark,
            "transfer_scene_report_infos": report_infos, "notify_url": notify_url}
        if amount_fen >= USER_NAME_FROM_FEN:
            if not user_name:
                raise ValueError("WeChat Pay needs the receiver's real name from ¥2,000")
            body["user_name"] = encrypt_field(self.keys.public_key, user_name)
        return Bill.from_answer(await self._call("POST", TRANSFER_BILLS, body))

    async def query_bill(self, out_bill_no: str) -> Bill | None:
        """The bill as WeChat Pay has it now; None when it does not know the number (404 NOT_FOUND)."""
        try:
            return Bill.from_answer(await self._call("GET", f"{TRANSFER_BILLS}/out-bill-no/{out_bill_no}"))
        except PayRefused as e:
            if e.status == 404 and e.code == "NOT_FOUND":
                return None
            raise

    async def cancel_bill(self, out_bill_no: str) -> Bill:
        """Cancel a bill the user has not confirmed yet: CANCELING, then CANCELLED (with a callback)."""
        data = await self._call("POST", f"{TRANSFER_BILLS}/out-bill-no/{out_bill_no}/cancel")
        return Bill.from_answer({"out_bill_no": out_bill_no, **data})

    # ---- the callback -------------------------------------------------------------------------
    def read_notification(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
                          ) -> dict[str, Any]:
        """Verify a callback (signature, serial, ±300 s; probes fail) and decrypt its resource: the
        bill (out_bill_no, transfer_bill_no, state, mch_id, transfer_amount, openid, fail_reason?, ...).
        Raises SignatureInvalid, also for a body that is not a valid notification."""
        verify_signed(self.keys.public_key, self.keys.public_key_id, headers, body,
                      now=self._clock.epoch() if now is None else now)
        try:
            envelope = json.loads(body)
            resource = envelope["resource"]
            if envelope.get("resource_type") != "encrypt-resource" or not isinstance(resource, dict):
                raise ValueError(envelope.get("resource_type"))
        except (ValueError, KeyError, TypeError):
            raise SignatureInvalid("not a WeChat Pay notification") from None
        try:
            bill = json.loads(decrypt_resource(self.keys.apiv3_key, resource))
        except ValueError:
            raise SignatureInvalid("the resource is not JSON") from None
        if not isinstance(bill, dict) or "out_bill_no" not in bill or "state" not in bill:
            raise SignatureInvalid("the resource is not a transfer bill")
        return bill

    # ---- transport ----------------------------------------------------------------------------
    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = URL(self.base_url + path, encoded=True)
        # Chinese as UTF-8, not \u escapes; the signature covers exactly these bytes.
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Authorization": authorization(self.keys, method, url.raw_path_qs, raw, timestamp=int(self._clock.epoch())),
            "Accept": "application/json",
            # Names the public key WeChat Pay signs its answer with, and the one user_name is encrypted for.
            "Wechatpay-Serial": self.keys.public_key_id,
            "User-Agent": "distbot",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http.request(method, url, data=raw if body is not None else None, headers=headers,
                                          allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                status, answer, answer_headers = resp.status, await resp.read(), resp.headers
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PayUnknown(f"WeChat Pay unreachable: {e or type(e).__name__}") from e
        if status >= 500 or status < 200 or 300 <= status < 400:
            raise PayUnknown(f"WeChat Pay answered HTTP {status}")
        # A 401 means our own signature was refused, and WeChat Pay cannot sign that answer. Every
        # other answer must verify: a forged 4xx would let a caller pay again under a new number.
        if status != 401:
            try:
                verify_signed(self.keys.public_key, self.keys.public_key_id, answer_headers, answer,
                              now=self._clock.epoch())
            except SignatureInvalid as e:
                raise PayUnknown(f"WeChat Pay's answer (HTTP {status}) does not verify: {e}") from e
        try:
            data = json.loads(answer) if answer else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise PayUnknown(f"WeChat Pay answered HTTP {status} without a JSON object")
        if status >= 400:
            raise PayRefused(status, str(data.get("code", "")), str(data.get("message", "")))
        return data
