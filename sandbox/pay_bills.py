"""WeChat Pay's transfer bills as the emulator (sandbox/pay_emulator.py) keeps them: the limits and
codes, the checks of a create request, and the bill as WeChat Pay's answers and callbacks show it."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from wechat.pay_crypto import EmulatorKeys, decrypt_field, encrypt_resource

CHINA = timezone(timedelta(hours=8))
OUT_BILL_NO = re.compile(r"[0-9A-Za-z]{1,32}")
MIN_AMOUNT_FEN = 10
USER_NAME_FROM_FEN = 200_000
USER_NAME_NEVER_BELOW_FEN = 30
CONFIRM_WITHIN_SECONDS = 24 * 3600
# The report fields each scene requires (1000 现金营销, 1005 佣金报酬).
SCENE_REPORTS = {"1000": frozenset({"活动名称", "奖励说明"}), "1005": frozenset({"岗位类型", "报酬说明"})}
ERROR_STATUS = {"PARAM_ERROR": 400, "INVALID_REQUEST": 400, "SIGN_ERROR": 401, "NO_AUTH": 403, "NOT_ENOUGH": 403,
                "NOT_FOUND": 404, "FREQUENCY_LIMITED": 429, "SYSTEM_ERROR": 500}
ERROR_MESSAGE = {"NO_AUTH": "商户无此接口权限", "NOT_ENOUGH": "运营账户余额不足", "FREQUENCY_LIMITED": "频率超限",
                 "SYSTEM_ERROR": "系统错误", "PARAM_ERROR": "参数错误", "INVALID_REQUEST": "无效请求"}
# Injected at create: an error answer (nothing created), TIMEOUT (created, the answer comes too late)
# or ACCEPTED (created, answered ACCEPTED without a package until the next look-up).
CREATE_INJECTIONS = frozenset(ERROR_STATUS) - {"SIGN_ERROR", "NOT_FOUND"} | {"TIMEOUT", "ACCEPTED"}
# Injected at the user's confirmation: the bill ends FAIL with this reason.
FAIL_REASONS = frozenset({"NAME_NOT_CORRECT", "REAL_NAME_CHECK_FAIL", "OPENID_INVALID", "TRANSFER_QUOTA_EXCEED",
                          "DAY_RECEIVED_QUOTA_EXCEED", "ACCOUNT_FROZEN", "PAYEE_ACCOUNT_ABNORMAL", "TRANSFER_RISK"})
CANCELLABLE = frozenset({"ACCEPTED", "PROCESSING", "WAIT_USER_CONFIRM"})


class PayApiError(Exception):
    def __init__(self, code: str, message: str = ""):
        super().__init__(message or ERROR_MESSAGE.get(code, code))
        self.code = code
        self.status = ERROR_STATUS[code]


@dataclass
class Injection:
    what: str  # a CREATE_INJECTIONS code or a FAIL_REASONS reason
    openid: str | None = None  # None: whoever comes next


@dataclass
class EmulatedBill:
    out_bill_no: str
    transfer_bill_no: str
    request: dict[str, Any]  # the create body, user_name decrypted: a repeat must match it
    state: str
    created_at: float
    updated_at: float
    package_info: str
    fail_reason: str | None = None

    @property
    def openid(self) -> str:
        return self.request["openid"]

    def as_json(self) -> dict[str, Any]:
        """For the simulator page and tests (the sandbox shows the decrypted name)."""
        r = self.request
        return {"out_bill_no": self.out_bill_no, "transfer_bill_no": self.transfer_bill_no, "state": self.state,
                "fail_reason": self.fail_reason, "openid": r["openid"], "amount_fen": r["transfer_amount"],
                "remark": r["transfer_remark"], "user_name": r.get("user_name"), "notify_url": r.get("notify_url"),
                "package_info": self.package_info if self.state == "WAIT_USER_CONFIRM" else None,
                "create_time": rfc3339(self.created_at), "update_time": rfc3339(self.updated_at)}


@dataclass
class Delivery:
    out_bill_no: str
    state: str
    attempt: int
    status: int | None  # the product's HTTP status; None: timeout or no connection


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, CHINA).isoformat(timespec="seconds")


def validated(body: dict[str, Any], *, appid: str, keys: EmulatorKeys, max_amount_fen: int,
              wechatpay_serial: str | None) -> dict[str, Any]:
    """The create body checked as WeChat Pay checks it, user_name decrypted; raises PayApiError."""

    def need(ok: bool, message: str, code: str = "PARAM_ERROR") -> None:
        if not ok:
            raise PayApiError(code, message)

    strings = ("appid", "out_bill_no", "transfer_scene_id", "openid", "transfer_remark")
    for name in strings:
        need(isinstance(body.get(name), str) and body[name] != "", f"输入源“/body/{name}”映射到字段“{name}”必填性规则校验失败")
    need(body["appid"] == appid, "appid与mch_id不匹配", "INVALID_REQUEST")
    need(OUT_BILL_NO.fullmatch(body["out_bill_no"]) is not None, "商户单号只能是数字和字母，长度不超过32")
    amount = body.get("transfer_amount")
    need(isinstance(amount, int) and not isinstance(amount, bool), "转账金额必须是整数，单位为分")
    need(amount >= MIN_AMOUNT_FEN, "转账金额不能低于0.1元", "INVALID_REQUEST")
    need(amount <= max_amount_fen, "转账金额超出单笔限额", "INVALID_REQUEST")
    need(len(body["transfer_remark"]) <= 32, "转账备注不能超过32个字符")
    required = SCENE_REPORTS.get(body["transfer_scene_id"])
    need(required is not None, "转账场景ID不存在或未开通", "INVALID_REQUEST")
    infos = body.get("transfer_scene_report_infos")
    need(isinstance(infos, list) and all(
        isinstance(i, dict) and isinstance(i.get("info_type"), str) and isinstance(i.get("info_content"), str)
        and i["info_content"] for i in infos), "transfer_scene_report_infos 格式错误")
    need(required <= {i["info_type"] for i in infos}, "转账场景报备信息不完整：需要" + "、".join(sorted(required)))
    notify_url = body.get("notify_url")
    if notify_url is not None:
        parts = urlsplit(str(notify_url))
        need(parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query,
             "notify_url 必须是不带参数的完整URL")
    request = dict(body)
    if "user_name" in body:
        need(amount >= USER_NAME_NEVER_BELOW_FEN, "转账金额低于0.3元时不可传入收款用户姓名")
        need(wechatpay_serial == keys.public_key_id, "Wechatpay-Serial 与加密所用的微信支付公钥不一致")
        try:
            request["user_name"] = decrypt_field(keys.private_key, str(body["user_name"]))
        except ValueError:
            raise PayApiError("PARAM_ERROR", "user_name 解密失败") from None
    else:
        need(amount < USER_NAME_FROM_FEN, "转账金额大于等于2000元时，收款用户姓名必填")
    return request


def bill_answer(bill: EmulatedBill, mchid: str, *, full: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"out_bill_no": bill.out_bill_no, "transfer_bill_no": bill.transfer_bill_no,
                            "create_time": rfc3339(bill.created_at), "state": bill.state}
    if bill.fail_reason:
        data["fail_reason"] = bill.fail_reason
    if full:  # query: the bill's fields, never the package
        r = bill.request
        data |= {"mch_id": mchid, "appid": r["appid"], "transfer_amount": r["transfer_amount"],
                 "transfer_remark": r["transfer_remark"], "openid": r["openid"],
                 "update_time": rfc3339(bill.updated_at)}
    elif bill.state == "WAIT_USER_CONFIRM":
        data["package_info"] = bill.package_info
    return data


def notification(keys: EmulatorKeys, bill: EmulatedBill, now: float) -> bytes:
    """MCHTRANSFER.BILL.FINISHED with the bill encrypted for the merchant (AEAD_AES_256_GCM)."""
    r = bill.request
    resource = {"out_bill_no": bill.out_bill_no, "transfer_bill_no": bill.transfer_bill_no, "state": bill.state,
                "mch_id": keys.mchid, "transfer_amount": r["transfer_amount"], "openid": r["openid"],
                "create_time": rfc3339(bill.created_at), "update_time": rfc3339(bill.updated_at)}
    if bill.fail_reason:
        resource["fail_reason"] = bill.fail_reason
    plaintext = json.dumps(resource, ensure_ascii=False).encode()
    return json.dumps({
        "id": str(uuid.uuid4()), "create_time": rfc3339(now), "resource_type": "encrypt-resource",
        "event_type": "MCHTRANSFER.BILL.FINISHED", "summary": "商家转账单据终态通知",
        "resource": encrypt_resource(keys.apiv3_key, plaintext, "mch_payment")}, ensure_ascii=False).encode()
