"""Refusals: a person's request that the rules do not allow, in one vocabulary for every surface.

A `Refusal` names its kind by a code from `CODES` (what /api answers as "error"), which fixes the
HTTP status; it carries an English sentence for /api's "message", the Chinese sentence a person
reads in chat and on the console, and details (/api's "details"). Raise it wherever the rule
lives, however deep; each surface translates it once:

- /api: kit.api's middleware answers `{"error": code, "message", "details"}` with the status;
- the console: kit.console's guard sends the admin back to the form's page with the sentence;
- chat: the update's SAVEPOINT rolls back and kit.chat's `refusal_reply` is the reply.

It is a `storage.group_commit.Refused`: in a batch (webhook updates, order events) the item is
rolled back alone and nothing is logged. Code that must react to one kind catches `Refusal` and
reads `code`; a subclass exists only where callers catch it by type (`AmountError`).
"""

from __future__ import annotations

from typing import Any

from storage.group_commit import Refused

# code → (HTTP status, the Chinese sentence when the refusal gives none of its own)
CODES: dict[str, tuple[int, str]] = {
    # requests /api could not read
    "bad_query": (400, "查询参数有误。"),
    "malformed_json": (400, "请求内容不是有效的 JSON。"),
    "not_multipart": (400, "请用 multipart/form-data 上传。"),
    "no_pack": (400, "请选择要上传的内容包（zip 文件）。"),
    "empty_pack": (400, "上传的内容包是空的。"),
    "too_large": (413, "上传的内容太大了。"),
    "not_found": (404, "没有找到。"),
    # values the rules refuse
    "invalid_amount": (422, "金额格式不对。"),
    "invalid_question": (422, "请直接发送您的问题。"),
    "invalid_transition": (422, "订单当前的状态不允许这个变化。"),
    "refund_too_large": (422, "退款金额超过了订单剩余的金额。"),
    "unknown_distributor": (422, "没有这个推广码的分销员。"),
    "unknown_order": (422, "没有这个订单。"),
    "inviter_self": (422, "不能把分销员设为自己的邀请人。"),
    "inviter_cycle": (422, "新邀请人在该分销员的团队中，更换后会形成循环。"),
    "inviter_inactive": (422, "新邀请人不是正常状态，不能作为邀请人。"),
    "contest_started": (422, "比赛已经开始，不能再修改。"),
    "below_minimum": (422, "提现金额低于单笔最低金额。"),
    "above_maximum": (422, "提现金额超过了单笔上限。"),
    "month_not_finished": (422, "这个月还没有结束，团队奖励在次月发放。"),
    # states that do not allow it (now)
    "available_short": (409, "可提现余额不足。"),
    "already_decided": (409, "已经处理过了。"),
    "already_resolved": (409, "已经处理过了。"),
    "already_started": (409, "已经开始了，不能取消。"),
    "contest_settled": (409, "比赛已经结算，不能再结束。"),
    "contest_not_started": (409, "比赛还没有开始，不能提前结束；可以修改它的时间。"),
    "not_active": (409, "分销员不是正常状态。"),
    "not_suspended": (409, "没有被暂停。"),
    "not_retryable": (409, "不是转账失败的提现，不能重试。"),
    "distributor_suspended": (409, "分销员已暂停，恢复前不能批准其提现。"),
    "risk_flag_open": (409, "分销员有未处理的风险提示，请先在“风险”页处理。"),
    "order_exists": (409, "这个订单已经支付过了。"),
    "pack_exists": (409, "这个版本的内容包已经存在。"),
    "staff_exists": (409, "这个账号已经存在。"),
    "ticket_closed": (409, "工单已关闭，不能再回复。"),
    "too_many_tickets": (429, "您等待回复的问题太多了，请等客服回复后再提新问题。"),
}
# Codes named after a request body's noun (kit.api: invalid_contest, malformed_rejection, ...).
FAMILIES: dict[str, tuple[int, str]] = {
    "malformed_": (400, "提交的内容缺少字段或格式不对。"),
    "invalid_": (422, "提交的内容不符合要求。"),
}


def kind_of(code: str) -> tuple[int, str]:
    """The HTTP status and the default Chinese sentence of `code`; KeyError for a code nobody
    declared (add it to CODES, with its status and sentence)."""
    found = CODES.get(code) or next((kind for prefix, kind in FAMILIES.items() if code.startswith(prefix)), None)
    if found is None:
        raise KeyError(f"unknown refusal code {code!r}: declare it in domain.refusals.CODES")
    return found


class Refusal(Refused):
    """A request refused by the rules: `code` (its status follows), `message` (English, /api),
    `sentence` (Chinese, chat and console; the code's own when not given), `details` (/api)."""

    def __init__(self, code: str, message: str = "", *, sentence: str = "", details: Any = None):
        self.status, default = kind_of(code)
        self.code, self.sentence, self.details = code, sentence or default, details
        self.message = message or self.sentence
        super().__init__(self.message)
