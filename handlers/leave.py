"""Leaving the programme: 退出 / quit, confirmed with 确认退出 (取消 aborts).

On exit nothing is deleted:
- the distributor's status becomes `exited` and distributor commands refuse them from then on;
- the available balance becomes a final withdrawal request (an admin decides it as any other);
- pending commission still unfreezes on schedule and is then requested for them the same way
  (see domain.orders.settle_and_notify); reversals still apply and may leave a debt;
- their direct invitees are handed to their own inviter (or become top-level), recorded in
  inviter_changes; the rest of the tree below stays as it is.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select

from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from domain import contests
from domain.formats import mask_name, yuan
from domain.ledger import balance, settle
from domain.messages import Text
from storage.models import Distributor, DistributorStatus
from storage.models_ledger import InviterChange


class LeaveState(StrEnum):
    CONFIRMING = "leave.confirm"


feature = Feature("leave", states=LeaveState)
CONFIRM_WORDS = frozenset({"确认退出", "确认", "confirm", "yes"})
CONFIRM_TTL = timedelta(minutes=10)


@feature.command("退出", "quit")
@active_only
def on_quit(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    money = balance(ctx.session, me.id)
    invitees = len(ctx.session.scalars(select(Distributor.id).where(
        Distributor.inviter_id == me.id, Distributor.status == DistributorStatus.ACTIVE)).all())
    ctx.set_state(LeaveState.CONFIRMING, ttl=CONFIRM_TTL)
    lines = ["确定要退出分销计划吗？退出后："]
    if money["available_fen"] > 0:
        lines.append(f"· 可提现余额 {yuan(money['available_fen'])} 将作为最后一笔提现申请，审核后打款；")
    if money["pending_fen"] > 0:
        lines.append(f"· 待结算佣金 {yuan(money['pending_fen'])} 解冻后自动申请提现；")
    if invitees:
        to = "您的邀请人" if me.inviter_id else "总部（成为一级分销员）"
        lines.append(f"· 您的 {invitees} 位直属成员将转给{to}；")
    lines += ["· 您将不能再使用分销功能，也不能重新注册。", "回复“确认退出”继续，回复“取消”放弃。"]
    return Text("\n".join(lines))


@feature.state(LeaveState.CONFIRMING)
@active_only
def on_confirm(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    if msg.content.strip().lower() not in CONFIRM_WORDS:
        return Text("请回复“确认退出”以退出分销计划，或回复“取消”放弃。")
    ctx.clear_state()
    me.status, me.exited_at = DistributorStatus.EXITED, ctx.now
    contests.withdraw(ctx.session, me.id)  # an exited distributor no longer places
    settled = settle(ctx.session, me.id, ctx.now)
    pending = balance(ctx.session, me.id)["pending_fen"]
    new_inviter = ctx.session.get(Distributor, me.inviter_id) if me.inviter_id else None
    invitees = ctx.session.scalars(select(Distributor).where(Distributor.inviter_id == me.id)).all()
    for d in invitees:
        d.inviter_id = new_inviter.id if new_inviter else None
        ctx.session.add(InviterChange(distributor_id=d.id, old_inviter_id=me.id, new_inviter_id=d.inviter_id,
                                      reason="inviter_exited", changed_at=ctx.now))
    lines = ["您已退出分销计划，感谢一路以来的支持。"]
    if settled:
        lines.append(f"可提现余额 {yuan(settled[1])} 已提交为最后一笔提现申请（申请号 {settled[0]}），审核后打款。")
    if pending > 0:
        lines.append(f"待结算佣金 {yuan(pending)} 解冻后会自动申请提现。")
    if invitees:
        to = f"您的邀请人 {mask_name(new_inviter.name)}" if new_inviter else "总部（成为一级分销员）"
        lines.append(f"您的 {len(invitees)} 位直属成员已转给{to}。")
    if settled or pending > 0:
        lines.append("审核结果会通过消息通知您。")
    return Text("\n".join(lines))
