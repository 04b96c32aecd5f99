"""Withdrawals' rules, where chat, the API and the console all meet them: what a distributor may
request (the limits: the minimum, WeChat Pay's smallest and largest transfer, the available
balance) and an admin's decision with the distributor's notice. Each refusal is a
domain.refusals.Refusal, which every surface translates in its one place.

A request is one conditional update of the balance row (domain.ledger.withdraw: available ≥
amount), so concurrent requests can never overdraw, however many arrive at once and on however
many processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from domain.config import Config
from domain.config_sections import MIN_TRANSFER_FEN
from domain.formats import plain_yuan, yuan
from domain.ledger import balance, decide_withdrawal, withdraw
from domain.messages import Text
from domain.outbox_rows import enqueue
from domain.payouts import queue_claim_link
from domain.refusals import Refusal
from domain.suspension import check_payable
from domain.webhook_events import withdrawal_paid
from storage.group_commit import Failed, Refused, each_in_savepoint
from storage.tables import DISTRIBUTORS, WITHDRAWALS

MAX_BATCH = 200  # withdrawals approved by one batch request
CONFIRM_ABOVE_FEN = 100_000  # a chat request above ¥1,000 is confirmed first (CONTRACT §5)


def check_amount(config: Config, amount_fen: int) -> None:
    """The limits of one request, before any balance is read: the configured minimum and, with
    WeChat Pay on, its smallest and largest transfer (Refusal: below_minimum, above_maximum)."""
    minimum, pay, asked = config.distribution.min_withdraw_fen, config.pay, yuan(amount_fen)
    if amount_fen < minimum:
        raise Refusal("below_minimum", sentence=f"单笔提现至少 {yuan(minimum)}，您申请的是 {asked}。")
    if pay.on and amount_fen < MIN_TRANSFER_FEN:
        raise Refusal("below_minimum", sentence=f"微信零钱单笔到账至少 {yuan(MIN_TRANSFER_FEN)}，您申请的是 {asked}。")
    if pay.on and amount_fen > pay.max_transfer_fen:
        raise Refusal("above_maximum", sentence=f"单笔提现最多 {yuan(pay.max_transfer_fen)}（微信转账的单笔上限），"
                      f"您申请的是 {asked}。请分成几笔申请，例如：提现 {plain_yuan(pay.max_transfer_fen)}")


def _short(amount_fen: int, available_fen: int) -> Refusal:
    return Refusal("available_short", sentence=f"可提现余额不足：您申请 {yuan(amount_fen)}，当前可提现 "
                   f"{yuan(available_fen)}。待结算的佣金在订单完成并过了冻结期后才能提现。",
                   details={"available_fen": available_fen})


def check_request(session: Session, config: Config, distributor_id: int, amount_fen: int) -> None:
    """What request_withdrawal would refuse, checked without changing anything (before chat asks
    to confirm a large amount: only a request that would be accepted is confirmed)."""
    check_amount(config, amount_fen)
    available = balance(session, distributor_id)["available_fen"]
    if available < amount_fen:
        raise _short(amount_fen, available)


def request_withdrawal(session: Session, config: Config, distributor_id: int, amount_fen: int, now: datetime) -> int:
    """A distributor's request within the limits (check_amount) and the available balance
    (Refusal available_short, nothing changed); the new withdrawal's id."""
    check_amount(config, amount_fen)
    wid = withdraw(session, distributor_id, amount_fen, now)
    if wid is None:
        raise _short(amount_fen, balance(session, distributor_id)["available_fen"])
    return wid


def withdrawal_select() -> Select[Any]:
    """Withdrawals with their distributor's code, as the API and the console list them."""
    w, d = WITHDRAWALS.c, DISTRIBUTORS.c
    return select(w.id, d.code, w.amount_fen, w.status, w.source, w.reason, w.requested_at, w.decided_at).join(
        DISTRIBUTORS, d.id == w.distributor_id)


def decide_and_tell(session: Session, config: Config, wid: int, approve: bool, now: datetime,
                    reason: str | None = None) -> Any:
    """Decide a pending withdrawal and queue the distributor's notice; the withdrawal's row
    (withdrawal_select). Refusal: not_found, already_decided, and for an approval
    distributor_suspended or risk_flag_open (domain.suspension.check_payable). With pay on, an
    approval leaves the money withdrawing and the notice carries the claim link."""
    if approve:
        check_payable(session, wid)
    decided = decide_withdrawal(session, wid, approve, now, reason, paid_out=not config.pay.on)
    if decided is None:
        raise Refusal("not_found", f"No withdrawal {wid}.", sentence=f"没有申请号为 {wid} 的提现。")
    row = session.execute(withdrawal_select().where(WITHDRAWALS.c.id == wid)).one()
    openid = session.scalar(select(DISTRIBUTORS.c.openid).where(DISTRIBUTORS.c.id == decided["distributor_id"]))
    if approve and config.pay.on:
        queue_claim_link(session, config, withdrawal_id=wid, distributor_id=decided["distributor_id"], openid=openid,
                         amount_fen=row.amount_fen, key=f"withdrawal:{wid}:decided", now=now)
        return row
    if approve:
        withdrawal_paid(session, config, withdrawal_id=wid, distributor_id=decided["distributor_id"],
                        distributor_code=row.code, amount_fen=row.amount_fen, now=now)
    amount = yuan(row.amount_fen)
    text = (f"您的提现申请（申请号 {wid}）{amount} 已审核通过，款项将尽快到账。" if approve else
            f"您的提现申请（申请号 {wid}）{amount} 未通过审核，原因：{reason}\n这笔钱已退回您的可提现余额。")
    enqueue(session, f"withdrawal:{wid}:decided", openid, Text(text), now=now)
    return row


@dataclass(frozen=True)
class Approval:
    """One withdrawal of a batch: its status once approved, or why it was not."""

    id: int
    status: str | None = None
    refusal: Refusal | None = None


def approve_each(session: Session, config: Config, ids: Sequence[int], now: datetime) -> list[Approval]:
    """Approve each of these withdrawals (once each, in the order given) exactly as one approval
    does (decide_and_tell), each in its own SAVEPOINT: a refused one is rolled back alone and
    reported with its refusal, the others are approved, all in one transaction."""
    def approve(s: Session, wid: int) -> Approval:
        return Approval(wid, status=decide_and_tell(s, config, wid, True, now).status)

    def refused(wid: int, error: Refused) -> Approval:
        assert isinstance(error, Refusal), error
        return Approval(wid, refusal=error)
    outcomes = each_in_savepoint(session, list(dict.fromkeys(ids)), approve, refused)
    for outcome in outcomes:
        if isinstance(outcome, Failed):  # not a rule's refusal: nothing of the batch is kept
            raise outcome.error
    return [o for o in outcomes if isinstance(o, Approval)]
