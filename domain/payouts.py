"""Payouts through WeChat Pay 商家转账 (CONTRACT §4.10): the bills of approved withdrawals, the
claim link that lets the distributor confirm one, and each bill's final state applied once with
its money and its notice. The calls to WeChat Pay are the feature's (handlers/payouts.py); these
are the rules, as units of work on storage.writer.

The money: a request moves it from available to withdrawing (domain.ledger.withdraw). With pay
on, an approval leaves it there while the distributor claims it:

    SUCCESS                      → withdrawal `paid`; withdrawing → withdrawn
    FAIL with OVERDUE_CLOSE      → still `approved`; the next claim makes a new bill (attempt + 1)
    any other FAIL, or CANCELLED → withdrawal `failed`; withdrawing → available, a withdrawal_refund
                                   entry (ref payout:<out_bill_no>)
    an admin's retry of `failed` → `approved` again; available → withdrawing, a withdrawal entry
                                   (ref payout:<the failed bill's out_bill_no>:retry); a new bill

A bill's row is written (state CREATING) before WeChat Pay is asked to create it, and its
out_bill_no is derived from the withdrawal and the attempt: a crash between the two calls finds
the bill again by that number, and nothing is ever created twice. The update that moves a row
into a final state is the one that moves the money, so a callback that comes twice, the job and
the callback at once, apply it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from domain.config import Config
from domain.formats import yuan
from domain.ledger import withdrawal_again, withdrawal_paid_out, withdrawal_returned
from domain.messages import Text
from domain.outbox_rows import Queued, enqueue_many, template_data
from domain.refusals import Refusal
from domain.signing import link_key, sign, verify
from domain.webhook_events import withdrawal_paid
from domain.suspension import check_payable
from storage.db import is_postgres
from storage.models import DistributorStatus
from storage.models_ledger import WithdrawalStatus
from storage.tables import DISTRIBUTORS, PAYOUT_BILLS, WITHDRAWALS

CREATING = "CREATING"  # ours: recorded, create sent (or about to be), its answer not stored yet
FINAL = frozenset({"SUCCESS", "FAIL", "CANCELLED"})
OVERDUE = "OVERDUE_CLOSE"
# Bills the payouts job asks WeChat Pay about: every state that is not final.
UNFINISHED = (CREATING, "ACCEPTED", "PROCESSING", "WAIT_USER_CONFIRM", "TRANSFERING", "CANCELING")
STATE_NAMES = {CREATING: "创建中", "ACCEPTED": "已受理", "PROCESSING": "处理中", "WAIT_USER_CONFIRM": "待确认收款",
               "TRANSFERING": "转账中", "SUCCESS": "已到账", "FAIL": "失败", "CANCELING": "撤销中",
               "CANCELLED": "已撤销"}
# WeChat Pay's fail_reason in words a distributor understands (PAYOUTS.md lists them).
FAIL_REASONS = {
    "NAME_NOT_CORRECT": "微信实名与登记姓名不一致",
    "REAL_NAME_CHECK_FAIL": "微信账户还没有完成实名认证",
    "OPENID_INVALID": "收款的微信账户无效",
    "TRANSFER_QUOTA_EXCEED": "超出了单笔转账限额",
    "DAY_RECEIVED_QUOTA_EXCEED": "您的微信零钱今日收款已达上限",
    "ACCOUNT_FROZEN": "微信账户已被冻结",
    "PAYEE_ACCOUNT_ABNORMAL": "收款的微信账户状态异常",
    "MCH_CANCEL": "转账已被撤销",
    "TRANSFER_RISK": "微信支付出于安全考虑拦截了这笔转账",
    OVERDUE: "超过 24 小时没有确认收款",
}
CLAIM_PURPOSE = "pay-claim"


# Where the claim of an approved withdrawal stands, as the console's 提现 shows it: the link sent
# (no bill yet), opened (a bill waits for the distributor's confirmation), confirmed (WeChat Pay is
# transferring), paid, expired (not confirmed within 24 h: the next opening makes a new bill).
CLAIM_WORDS = {"sent": "已发送领取链接", "opened": "已打开链接，待确认收款", "confirmed": "已确认收款，转账中",
               "paid": "已到账", "expired": "已过期，可再次领取", "failed": "转账失败"}
_CLAIMS = {CREATING: "opened", "ACCEPTED": "opened", "PROCESSING": "opened", "WAIT_USER_CONFIRM": "opened",
           "TRANSFERING": "confirmed", "SUCCESS": "paid", "CANCELLED": "failed"}


def claim_words(pay_transfer: bool, bill: dict[str, Any] | None) -> str:
    """The claim state of a withdrawal approved for WeChat Pay (`pay_transfer`) in Chinese, from
    its latest bill (`transfers`); "" for one paid out without it, or still pending."""
    if not pay_transfer:
        return ""
    if bill is None:
        return CLAIM_WORDS["sent"]
    if bill["state"] == "FAIL":
        return CLAIM_WORDS["expired" if bill["fail_reason"] == OVERDUE else "failed"]
    claim = _CLAIMS.get(bill["state"])
    return CLAIM_WORDS[claim] if claim else STATE_NAMES.get(bill["state"], bill["state"])


def reason_words(state: str, fail_reason: str | None) -> str:
    if state == "CANCELLED":
        return "转账已被撤销"
    if fail_reason in FAIL_REASONS:
        return FAIL_REASONS[fail_reason]
    return f"微信支付未能完成转账（{fail_reason or state}）"


def out_bill_no(withdrawal_id: int, attempt: int, requested_at: datetime) -> str:
    """The merchant's number of one attempt: recomputed the same after a restart. The request's
    second makes numbers of a database started afresh differ from an old one's ([0-9A-Za-z], ≤ 32)."""
    number = f"DB{withdrawal_id}A{attempt}T{int(requested_at.timestamp()):x}"
    assert len(number) <= 32, number
    return number


# ---- the claim link ------------------------------------------------------------------------------
def claim_token(config: Config, withdrawal_id: int, distributor_id: int) -> str:
    message = f"{withdrawal_id}.{distributor_id}"
    return f"{message}.{sign(link_key(config, CLAIM_PURPOSE), message)}"


def read_claim_token(config: Config, token: str) -> tuple[int, int] | None:
    """(withdrawal id, distributor id) of a genuine claim token, else None."""
    parts = token.split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 18 for p in parts[:2]):
        return None
    if not verify(link_key(config, CLAIM_PURPOSE), f"{parts[0]}.{parts[1]}", parts[2]):
        return None
    return int(parts[0]), int(parts[1])


def claim_url(config: Config, withdrawal_id: int, distributor_id: int) -> str:
    return f"{config.server.public_url}/pay/claim/{claim_token(config, withdrawal_id, distributor_id)}"


def queue_claim_link(session: Session, config: Config, *, withdrawal_id: int, distributor_id: int, openid: str,
                     amount_fen: int, key: str, now: datetime, again: str = "") -> None:
    """The chat message with the claim link (customer-service message; a template message with
    the link outside the 48-hour window)."""
    url = claim_url(config, withdrawal_id, distributor_id)
    head = again or f"您的提现申请（申请号 {withdrawal_id}）{yuan(amount_fen)} 已审核通过。"
    reply = Text(f"{head}\n请点开下面的链接，在微信里确认收款（24 小时内有效，过期可再点开领取）：\n{url}")
    enqueue_many(session, [Queued(key, openid, reply, template_data(reply, "提现待确认收款"), url)], now=now)


# ---- bills ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BillRow:
    id: int
    withdrawal_id: int
    attempt: int
    out_bill_no: str
    state: str
    fail_reason: str | None
    transfer_bill_no: str | None
    package_info: str | None


@dataclass(frozen=True)
class Claim:
    """What a claim link leads to: the withdrawal (status, amount, its distributor's openid and
    name) and its bill, `fresh` when this claim has just recorded it (create not yet sent)."""

    withdrawal_id: int
    status: str
    amount_fen: int
    openid: str
    name: str
    bill: BillRow | None
    fresh: bool = False
    suspended: bool = False  # the distributor is suspended: no new bill until reinstated


_BILL_COLUMNS = (PAYOUT_BILLS.c.id, PAYOUT_BILLS.c.withdrawal_id, PAYOUT_BILLS.c.attempt, PAYOUT_BILLS.c.out_bill_no,
                 PAYOUT_BILLS.c.state, PAYOUT_BILLS.c.fail_reason, PAYOUT_BILLS.c.transfer_bill_no,
                 PAYOUT_BILLS.c.package_info)


def latest_bill(session: Session, withdrawal_id: int) -> BillRow | None:
    row = session.execute(select(*_BILL_COLUMNS).where(PAYOUT_BILLS.c.withdrawal_id == withdrawal_id)
                          .order_by(PAYOUT_BILLS.c.attempt.desc()).limit(1)).first()
    return BillRow(*row) if row is not None else None


def bill_by_number(session: Session, number: str) -> BillRow | None:
    row = session.execute(select(*_BILL_COLUMNS).where(PAYOUT_BILLS.c.out_bill_no == number)).first()
    return BillRow(*row) if row is not None else None


def claim(session: Session, withdrawal_id: int, distributor_id: int, now: datetime) -> Claim | None:
    """Open a claim: the withdrawal's open bill, or a new one recorded (CREATING) when the
    withdrawal is approved and its last bill is final or missing. None for a withdrawal that is
    not that distributor's. The withdrawal's row is locked (PostgreSQL) so that two claims at once
    make one bill. A withdrawal approved while pay was off was paid by hand: it has no claim. A
    suspended distributor's claim makes no bill (`suspended`)."""
    w, d = WITHDRAWALS.c, DISTRIBUTORS.c
    stmt = (select(w.status, w.amount_fen, w.requested_at, d.openid, d.name, d.status.label("d_status"))
            .join(DISTRIBUTORS, d.id == w.distributor_id)
            .where(w.id == withdrawal_id, w.distributor_id == distributor_id, w.pay_transfer.is_(True)))
    if is_postgres(session):
        stmt = stmt.with_for_update(of=WITHDRAWALS)
    row = session.execute(stmt).first()
    if row is None:
        return None
    status, amount, requested_at, openid, name, standing = row
    bill = latest_bill(session, withdrawal_id)
    found = Claim(withdrawal_id, status, amount, openid, name, bill, suspended=standing == DistributorStatus.SUSPENDED)
    if found.suspended or status != WithdrawalStatus.APPROVED or (bill is not None and bill.state not in FINAL):
        return found
    attempt = bill.attempt + 1 if bill is not None else 1
    number = out_bill_no(withdrawal_id, attempt, requested_at)
    bid = session.execute(PAYOUT_BILLS.insert().returning(PAYOUT_BILLS.c.id), {
        "withdrawal_id": withdrawal_id, "attempt": attempt, "out_bill_no": number, "state": CREATING,
        "created_at": now, "updated_at": now}).scalar_one()
    return Claim(withdrawal_id, status, amount, openid, name,
                 BillRow(bid, withdrawal_id, attempt, number, CREATING, None, None, None), fresh=True)


def record(session: Session, config: Config, number: str, state: str, now: datetime, *,
           transfer_bill_no: str | None = None, fail_reason: str | None = None,
           package_info: str | None = None) -> str | None:
    """Store what WeChat Pay said of a bill (create's or query's answer, or a callback). A final
    state is applied (apply_final); an unfinished one updates the open row. What was done:
    "paid", "claimable", "failed", "recorded", or None when the bill was final already."""
    if state in FINAL:
        return apply_final(session, config, number, state, fail_reason, now, transfer_bill_no=transfer_bill_no)
    values: dict[str, Any] = {"state": state, "updated_at": now}
    if transfer_bill_no:
        values["transfer_bill_no"] = transfer_bill_no
    if package_info:
        values["package_info"] = package_info
    done = session.execute(update(PAYOUT_BILLS).where(PAYOUT_BILLS.c.out_bill_no == number,
                                                      PAYOUT_BILLS.c.state.not_in(FINAL)).values(**values))
    return "recorded" if done.rowcount == 1 else None


def apply_final(session: Session, config: Config, number: str, state: str, fail_reason: str | None,
                now: datetime, *, transfer_bill_no: str | None = None) -> str | None:
    """Apply a bill's final state exactly once: the conditional update of the bill decides who
    moves the money. None when it was applied before (or the number is not ours)."""
    values: dict[str, Any] = {"state": state, "fail_reason": fail_reason, "updated_at": now, "finished_at": now}
    if transfer_bill_no:
        values["transfer_bill_no"] = transfer_bill_no
    row = session.execute(
        update(PAYOUT_BILLS).where(PAYOUT_BILLS.c.out_bill_no == number, PAYOUT_BILLS.c.state.not_in(FINAL))
        .values(**values).returning(PAYOUT_BILLS.c.withdrawal_id)).first()
    if row is None:
        return None
    wid = row[0]
    w, d = WITHDRAWALS.c, DISTRIBUTORS.c
    did, amount, openid, code = session.execute(
        select(w.distributor_id, w.amount_fen, d.openid, d.code).join(DISTRIBUTORS, d.id == w.distributor_id)
        .where(w.id == wid)).one()
    key = f"payout:{number}"
    if state == "FAIL" and fail_reason == OVERDUE:
        queue_claim_link(session, config, withdrawal_id=wid, distributor_id=did, openid=openid, amount_fen=amount,
                         key=key, now=now, again=f"您的提现（申请号 {wid}）{yuan(amount)} 超过 24 小时没有确认收款，转账已关闭。"
                                         "款项仍为您保留，可以重新领取。")
        return "claimable"
    paid = state == "SUCCESS"
    moved = session.execute(update(WITHDRAWALS).where(w.id == wid, w.status == WithdrawalStatus.APPROVED).values(
        status=WithdrawalStatus.PAID if paid else WithdrawalStatus.FAILED,
        reason=None if paid else reason_words(state, fail_reason)))
    if moved.rowcount != 1:  # cannot happen: an approved withdrawal has one open bill at a time
        raise RuntimeError(f"payout bill {number} ended {state} but withdrawal {wid} was not approved")
    if paid:
        withdrawal_paid_out(session, did, amount)
        withdrawal_paid(session, config, withdrawal_id=wid, distributor_id=did, distributor_code=code,
                        amount_fen=amount, now=now)
        text = f"您的提现（申请号 {wid}）{yuan(amount)} 已转入您的微信零钱，请查收。"
    else:
        withdrawal_returned(session, did, wid, amount, key, now)
        text = (f"您的提现（申请号 {wid}）{yuan(amount)} 没有转账成功，原因：{reason_words(state, fail_reason)}。\n"
                "这笔钱已退回您的可提现余额，处理好后可以重新申请提现。")
    enqueue_many(session, [Queued(key, openid, Text(text))], now=now)
    return "paid" if paid else "failed"


# ---- an admin's retry of a failed transfer ---------------------------------------------------------
def retry(session: Session, config: Config, withdrawal_id: int, now: datetime) -> int:
    """A failed withdrawal becomes approved again: its money goes from available back to
    withdrawing, and the distributor gets a new claim link (the claim makes a new bill). The
    amount. Refusal: not_found, not_retryable (not failed), available_short (the money returned has
    been withdrawn again or reversed since; nothing changed), distributor_suspended or
    risk_flag_open (domain.suspension.check_payable)."""
    check_payable(session, withdrawal_id, doing="重试")
    w, d = WITHDRAWALS.c, DISTRIBUTORS.c
    row = session.execute(select(w.status, w.distributor_id, w.amount_fen, d.openid)
                          .join(DISTRIBUTORS, d.id == w.distributor_id).where(w.id == withdrawal_id)).first()
    if row is None:
        raise Refusal("not_found", f"No withdrawal {withdrawal_id}.", sentence=f"没有申请号为 {withdrawal_id} 的提现。")
    status, did, amount, openid = row
    bill = latest_bill(session, withdrawal_id)
    if bill is None or bill.state not in FINAL or session.execute(
            update(WITHDRAWALS).where(w.id == withdrawal_id, w.status == WithdrawalStatus.FAILED)
            .values(status=WithdrawalStatus.APPROVED, reason=None)).rowcount != 1:
        raise Refusal("not_retryable", f"Withdrawal {withdrawal_id} is {status}, not a failed transfer.",
                      sentence=f"申请 {withdrawal_id} 不是转账失败的提现，不能重试。", details={"status": status})
    if not withdrawal_again(session, did, withdrawal_id, amount, f"payout:{bill.out_bill_no}:retry", now):
        raise Refusal("available_short", f"The money of withdrawal {withdrawal_id} is no longer available.",
                      sentence=f"申请 {withdrawal_id} 退回的钱已不在可提现余额里（又提现了或被冲回），不能重试。")
    queue_claim_link(session, config, withdrawal_id=withdrawal_id, distributor_id=did, openid=openid,
                     amount_fen=amount, key=f"payout:{bill.out_bill_no}:retry", now=now,
                     again=f"您的提现（申请号 {withdrawal_id}）{yuan(amount)} 将重新为您转账。")
    return amount


def touch(session: Session, number: str, now: datetime) -> None:
    """The job asked about an unfinished bill and learnt nothing: its turn comes again later."""
    session.execute(update(PAYOUT_BILLS).where(PAYOUT_BILLS.c.out_bill_no == number,
                                               PAYOUT_BILLS.c.state.not_in(FINAL)).values(updated_at=now))


# ---- reads -----------------------------------------------------------------------------------------
def withdrawal_words(status: str, bill: dict[str, Any] | None, *, pay_transfer: bool, reason: str | None) -> str:
    """A withdrawal's state as the distributor reads it in chat (提现记录)."""
    if status == WithdrawalStatus.PENDING:
        return "待审核"
    if status == WithdrawalStatus.REJECTED:
        return f"未通过（{reason}）" if reason else "未通过"
    if status == WithdrawalStatus.PAID:
        return "已到账"
    if status == WithdrawalStatus.FAILED:
        return f"转账失败（{reason}）" if reason else "转账失败"
    if not pay_transfer:
        return "已打款"
    state = bill["state"] if bill else None
    if state == "FAIL" and bill and bill["fail_reason"] == OVERDUE:
        return "已过期，可重新领取"
    return {"WAIT_USER_CONFIRM": "待确认收款", "TRANSFERING": "转账中", "PROCESSING": "转账中",
            "CANCELING": "撤销中"}.get(state or "", "待领取")


def in_flight(session: Session, distributor_id: int) -> list[tuple[int, int, str]]:
    """A distributor's withdrawals on their way (requested or approved, not yet paid by transfer):
    (id, amount, words), oldest first, for 收益 and 订单."""
    w = WITHDRAWALS.c
    rows = session.execute(select(w.id, w.amount_fen, w.status, w.pay_transfer).where(
        w.distributor_id == distributor_id,
        (w.status == WithdrawalStatus.PENDING) | ((w.status == WithdrawalStatus.APPROVED) & w.pay_transfer.is_(True)))
        .order_by(w.id)).all()
    bills = transfers(session, [r.id for r in rows if r.status == WithdrawalStatus.APPROVED])
    return [(r.id, r.amount_fen, withdrawal_words(r.status, bills.get(r.id), pay_transfer=r.pay_transfer, reason=None))
            for r in rows]


def in_flight_summary(session: Session, distributor_id: int,
                      flying: list[tuple[int, int, str]] | None = None) -> str:
    """"（待审核 1 笔，待领取 1 笔）" for 收益 and 订单; "" when nothing is on its way."""
    flying = in_flight(session, distributor_id) if flying is None else flying
    counts: dict[str, int] = {}
    for _, _, words in flying:
        counts[words] = counts.get(words, 0) + 1
    return "（" + "，".join(f"{w} {n} 笔" for w, n in counts.items()) + "）" if counts else ""


def unfinished(session: Session, before: datetime, limit: int = 200) -> list[str]:
    """Bills the payouts job asks about: not final, untouched since `before`, oldest first."""
    return list(session.scalars(select(PAYOUT_BILLS.c.out_bill_no).where(
        PAYOUT_BILLS.c.state.in_(UNFINISHED), PAYOUT_BILLS.c.updated_at < before)
        .order_by(PAYOUT_BILLS.c.updated_at).limit(limit)))


def transfers(session: Session, withdrawal_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each withdrawal's latest bill as the API shows it ({out_bill_no, state, fail_reason}) and its
    number of attempts."""
    if not withdrawal_ids:
        return {}
    b = PAYOUT_BILLS.c
    last = (select(b.withdrawal_id, func.max(b.attempt).label("attempt")).where(b.withdrawal_id.in_(withdrawal_ids))
            .group_by(b.withdrawal_id).subquery())
    rows = session.execute(select(b.withdrawal_id, b.out_bill_no, b.state, b.fail_reason, b.attempt).join(
        last, (last.c.withdrawal_id == b.withdrawal_id) & (last.c.attempt == b.attempt))).all()
    return {wid: {"out_bill_no": no, "state": state, "fail_reason": reason, "attempts": attempt}
            for wid, no, state, reason, attempt in rows}
