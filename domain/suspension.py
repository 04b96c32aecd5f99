"""Suspension (CONTRACT §4.12, §4.1 `suspended`): an admin suspends a distributor, with a reason,
by hand or by resolving a risk flag; reinstating makes them active again.

While suspended a distributor earns no commission (domain.commission skips a receiver that is not
active; the levels above still earn), cannot withdraw (kit.chat's guard refuses every command but
客服, telling the reason; an admin cannot approve their withdrawals, nor can a transfer be claimed
or retried), and is not an inviter anyone can join. Reinstating restores all of that from then on;
what was not earned while suspended stays unearned. Every suspension and reinstatement is a row
(who, why, when) and the distributor is told in chat.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.messages import Text
from domain.outbox_rows import Queued, enqueue_many, template_data
from domain.refusals import Refusal
from storage.models import DistributorStatus
from storage.models_risk import FlagStatus
from storage.tables import DISTRIBUTORS, RISK_FLAGS, SUSPENSIONS, WITHDRAWALS

SUSPEND, REINSTATE = "suspend", "reinstate"
DISMISS = "dismiss"


def _record(session: Session, distributor_id: int, action: str, reason: str, actor: str, now: datetime,
            flag_id: int | None = None) -> int:
    return session.execute(SUSPENSIONS.insert().returning(SUSPENSIONS.c.id), {
        "distributor_id": distributor_id, "action": action, "reason": reason, "actor": actor, "flag_id": flag_id,
        "created_at": now}).scalar_one()


def _tell(session: Session, key: str, openid: str, text: str, title: str, now: datetime) -> None:
    reply = Text(text)
    enqueue_many(session, [Queued(key, openid, reply, template_data(reply, title))], now=now)


def suspend(session: Session, distributor_id: int, reason: str, actor: str, now: datetime,
            flag_id: int | None = None) -> None:
    """Suspend an active distributor (one conditional update, so two admins at once suspend once)."""
    d = DISTRIBUTORS.c
    row = session.execute(update(DISTRIBUTORS).where(d.id == distributor_id, d.status == DistributorStatus.ACTIVE)
                          .values(status=DistributorStatus.SUSPENDED).returning(d.openid, d.code)).first()
    if row is None:
        status = session.scalar(select(d.status).where(d.id == distributor_id))
        words = "已经暂停了" if status == DistributorStatus.SUSPENDED else "已退出的分销员不能暂停"
        raise Refusal("not_active", f"The distributor is {status}; only an active distributor can be suspended.",
                      sentence=f"不能暂停：{words}。", details={"status": status})
    sid = _record(session, distributor_id, SUSPEND, reason, actor, now, flag_id)
    _tell(session, f"suspension:{sid}", row.openid,
          f"您的分销员账号（{row.code}）已被暂停。\n原因：{reason}\n暂停期间不计佣金，也不能提现。"
          "如有疑问请回复“客服”。", "账号暂停通知", now)


def reinstate(session: Session, distributor_id: int, reason: str, actor: str, now: datetime) -> None:
    d = DISTRIBUTORS.c
    row = session.execute(update(DISTRIBUTORS).where(d.id == distributor_id, d.status == DistributorStatus.SUSPENDED)
                          .values(status=DistributorStatus.ACTIVE).returning(d.openid, d.code)).first()
    if row is None:
        status = session.scalar(select(d.status).where(d.id == distributor_id))
        raise Refusal("not_suspended", f"The distributor is {status}, not suspended.", sentence="不能恢复：没有被暂停。",
                      details={"status": status})
    sid = _record(session, distributor_id, REINSTATE, reason, actor, now)
    _tell(session, f"suspension:{sid}", row.openid,
          f"您的分销员账号（{row.code}）已恢复，可以正常推广和提现了。\n暂停期间的订单不计佣金。", "账号恢复通知", now)


def resolve(session: Session, flag_id: int, action: str, reason: str, actor: str, now: datetime) -> None:
    """Dismiss an open flag, or resolve it by suspending its distributor (already suspended: the
    flag is resolved all the same). Refusal: no such flag (not_found), resolved before, or the
    distributor has exited (dismiss it instead)."""
    f = RISK_FLAGS.c
    status = FlagStatus.SUSPENDED if action == SUSPEND else FlagStatus.DISMISSED
    row = session.execute(update(RISK_FLAGS).where(f.id == flag_id, f.status == FlagStatus.OPEN)
                          .values(status=status, open_key=None, resolved_at=now, resolved_by=actor, reason=reason)
                          .returning(f.distributor_id)).first()
    if row is None:
        current = session.scalar(select(f.status).where(f.id == flag_id))
        if current is None:
            raise Refusal("not_found", f"No risk flag {flag_id}.", sentence=f"没有风险提示 #{flag_id}。")
        raise Refusal("already_resolved", f"Flag {flag_id} was already resolved ({current}).",
                      sentence=f"风险提示 #{flag_id}：已经处理过了。", details={"status": current})
    if action == SUSPEND:
        current = session.scalar(select(DISTRIBUTORS.c.status).where(DISTRIBUTORS.c.id == row.distributor_id))
        if current == DistributorStatus.ACTIVE:
            suspend(session, row.distributor_id, reason, actor, now, flag_id)
        elif current != DistributorStatus.SUSPENDED:
            raise Refusal("not_active", f"The distributor is {current}; dismiss the flag instead.",
                          sentence=f"风险提示 #{flag_id}：分销员已退出，不能暂停，请选择忽略。", details={"status": current})


# ---- what suspension and open flags stop -----------------------------------------------------------
def reason_of(session: Session, distributor_id: int) -> str:
    """Why a suspended distributor is suspended: the reason of their latest suspension."""
    s = SUSPENSIONS.c
    return session.scalar(select(s.reason).where(s.distributor_id == distributor_id, s.action == SUSPEND)
                          .order_by(s.id.desc()).limit(1)) or "未说明"


def suspended_text(session: Session, distributor_id: int) -> str:
    return (f"您的分销员账号已暂停，原因：{reason_of(session, distributor_id)}\n"
            "暂停期间不计佣金，也不能提现或使用这个功能。如有疑问请回复“客服”。")


def check_payable(session: Session, withdrawal_id: int, doing: str = "批准") -> None:
    """Before an admin approves (or retries, `doing="重试"`, the transfer of) a withdrawal: its
    distributor must not be suspended nor have an open risk flag (Refusal, 409). An unknown
    withdrawal passes (the decision itself refuses it: not_found)."""
    w, d, f = WITHDRAWALS.c, DISTRIBUTORS.c, RISK_FLAGS.c
    row = session.execute(select(d.id, d.code, d.status).join(DISTRIBUTORS, d.id == w.distributor_id)
                          .where(w.id == withdrawal_id)).first()
    if row is None:
        return
    if row.status == DistributorStatus.SUSPENDED:
        raise Refusal("distributor_suspended", f"Distributor {row.code} is suspended; their withdrawals cannot be "
                      "approved until they are reinstated.",
                      sentence=f"申请 {withdrawal_id} 不能{doing}：分销员 {row.code} 已暂停，恢复前不能批准其提现。",
                      details={"distributor_code": row.code})
    flags = session.execute(select(f.id, f.rule).where(f.distributor_id == row.id, f.status == FlagStatus.OPEN)
                            .order_by(f.id)).all()
    if flags:
        raise Refusal("risk_flag_open", f"Distributor {row.code} has an open risk flag ({flags[0].rule}, "
                      f"#{flags[0].id}); resolve it before approving their withdrawals.",
                      sentence=f"申请 {withdrawal_id} 不能{doing}：分销员 {row.code} 有未处理的风险提示"
                      f"（#{flags[0].id}），请先在“风险”页处理。",
                      details={"distributor_code": row.code, "flags": [r.id for r in flags]})


def history(session: Session, distributor_id: int) -> list[Any]:
    """Suspensions and reinstatements, newest first (the distributor's page)."""
    s = SUSPENSIONS.c
    return list(session.execute(select(SUSPENSIONS).where(s.distributor_id == distributor_id)
                                .order_by(s.id.desc())).all())
