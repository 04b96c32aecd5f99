"""Following and registration: QR scenes, the 注册 conversation and the referral tree's edges
(the admin's view of distributors is handlers/distributors.py)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from kit.chat import Ctx, Incoming
from kit.feature import Feature
from kit.menu import MenuKey
from kit.app_keys import PACKS
from domain.config_sections import WebhookEvent
from domain.formats import china_time, mask_name
from domain.messages import Text
from domain.my_stats import record_scan
from domain.promotion import promote
from domain.webhook_events import emit
from domain.risk import check_signups
from domain.suspension import suspended_text
from storage.models import BoundBy, Distributor, DistributorStatus, Follower
from storage.queries import distributor_by_code


class Registering(StrEnum):
    PHONE = "register.phone"
    NAME = "register.name"


feature = Feature("registration", states=Registering)

# Upper-case letters and digits without the look-alikes 0/O and 1/I.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
PHONE = re.compile(r"^1[3-9]\d{9}$", re.ASCII)  # ASCII digits: one number, one spelling
REAL_NAME = re.compile(r"^[\u3400-\u9fffA-Za-z·• ]{2,20}$")
CODE_SHAPE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")

WELCOME = ("欢迎关注！这里是分销员助手：注册后即可领取专属推广海报和话术，随时查看订单、收益和团队。\n"
           "回复“注册”成为分销员，回复“帮助”查看全部功能。")


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def _unique_code(session: Session) -> str:
    while True:
        code = new_code()
        if session.scalar(select(Distributor.id).where(Distributor.code == code)) is None:
            return code


def _inviter_line(inviter: Distributor | None) -> str:
    return f"邀请人：{mask_name(inviter.name)}（{inviter.code}）" if inviter else "邀请人：无"


# ---- following ------------------------------------------------------------------------------
@feature.event("subscribe", "subscribe_scan", "scan")
def on_follow(msg: Incoming, ctx: Ctx) -> Text:
    f = ctx.follower()
    if msg.event != "scan":
        f.subscribed, f.followed_at, f.unfollowed_at = True, ctx.now, None
    if msg.event_key:  # a scan of someone's QR code, or a follow through it: 我的推广 counts it
        record_scan(ctx.session, msg.event_key, ctx.openid, msg.event == "subscribe_scan", ctx.now)
    me = ctx.distributor
    if me is not None:
        return Text(f"欢迎回来，{me.name}！您的推广码是 {me.code}。回复“帮助”查看全部功能。")
    inviter = distributor_by_code(ctx.session, msg.event_key, active=True) if msg.event_key else None
    if inviter is None:
        return Text(WELCOME)
    # Until registration the latest scene wins; registration fixes the inviter for good.
    f.scene = inviter.code
    return Text(f"欢迎关注！您正在接受 {mask_name(inviter.name)} 的邀请。\n回复“注册”成为分销员，"
                f"注册后您将加入 TA 的团队。")


@feature.event("unsubscribe")
def on_unfollow(msg: Incoming, ctx: Ctx) -> None:
    # Nothing is deleted: a distributor who unfollows keeps their team, orders and balance. An
    # unfollow makes nobody a follower (Incoming.makes_follower): one we never saw leaves no row.
    f = ctx.session.get(Follower, ctx.openid)
    if f is not None:
        f.subscribed, f.unfollowed_at = False, ctx.now
    return None


# ---- the 注册 conversation --------------------------------------------------------------------
@feature.command("注册", "register", menu=MenuKey.REGISTER)
def on_register(msg: Incoming, ctx: Ctx) -> Text:
    me = ctx.distributor
    if me is not None and me.status == DistributorStatus.EXITED:
        return Text("您已退出分销计划，暂不能重新注册。如需帮助请回复“客服”。")
    if me is not None and me.status == DistributorStatus.SUSPENDED:
        return Text(suspended_text(ctx.session, me.id))
    if me is not None:
        return Text(f"您已经是分销员了，推广码：{me.code}。回复“海报”获取推广海报。")
    typed = ctx.args.strip().upper()
    code = typed or ctx.follower().scene or ""
    inviter = None
    if code:
        inviter = distributor_by_code(ctx.session, code, active=True) if CODE_SHAPE.match(code) else None
        if inviter is None and typed:
            return Text(f"推广码“{ctx.args.strip()[:20]}”不存在或已失效，请核对后重新发送“注册 推广码”，"
                        "或直接回复“注册”不填推广码。")
    # How they came to the inviter: the code typed, else the scene of the poster they scanned last.
    typed_code = {"via": BoundBy.CODE.value} if typed and inviter else {}
    ctx.set_state(Registering.PHONE, {"inviter": inviter.code if inviter else None, **typed_code})
    return Text(f"欢迎注册分销员！{_inviter_line(inviter)}\n第 1 步：请回复您的手机号码（11 位）。\n"
                "随时回复“取消”可退出注册。")


@feature.state(Registering.PHONE)
def on_phone(msg: Incoming, ctx: Ctx) -> Text:
    # NFKC turns full-width digits (a Chinese IME's default) into ASCII ones.
    phone = re.sub(r"[\s-]", "", unicodedata.normalize("NFKC", msg.content))
    if phone.startswith("+86"):
        phone = phone[3:]
    if not PHONE.match(phone):
        return Text("手机号格式不对，请回复 11 位中国大陆手机号，例如 13800138000。回复“取消”退出注册。")
    if ctx.session.scalar(select(Distributor.id).where(Distributor.phone == phone)) is not None:
        return Text("这个手机号已经注册过分销员，请换一个号码，或回复“客服”联系我们。")
    assert ctx.state is not None
    ctx.set_state(Registering.NAME, {**ctx.state.data, "phone": phone})
    return Text("第 2 步：请回复您的真实姓名（2–20 个字），用于结算佣金。")


@feature.state(Registering.NAME)
def on_name(msg: Incoming, ctx: Ctx) -> Text:
    name = " ".join(msg.content.split())
    if not REAL_NAME.match(name):
        return Text("姓名需为 2–20 个汉字或字母，请重新回复您的真实姓名。回复“取消”退出注册。")
    assert ctx.state is not None
    data = dict(ctx.state.data)
    phone = data["phone"]
    if ctx.session.scalar(select(Distributor.id).where(Distributor.phone == phone)) is not None:
        ctx.clear_state()
        return Text("这个手机号刚刚已被注册，请重新发送“注册”并换一个号码。")
    inviter = distributor_by_code(ctx.session, data["inviter"], active=True) if data.get("inviter") else None
    me = Distributor(code=_unique_code(ctx.session), openid=ctx.openid, phone=phone, name=name,
                     inviter_id=inviter.id if inviter else None, bound_by=data.get("via", BoundBy.SCAN) if inviter else None,
                     rank=ctx.config.ranks[0].key,
                     status=DistributorStatus.ACTIVE, registered_at=ctx.now)
    ctx.session.add(me)
    ctx.distributor = me
    ctx.clear_state()
    ctx.session.flush()
    if inviter is not None:  # a bigger team may be what the inviter's next rank needed
        promote(ctx.session, ctx.config, [inviter.id], ctx.now, unlocks=ctx.app[PACKS].unlocks)
        check_signups(ctx.session, ctx.config, inviter.id, inviter.code, ctx.now)  # a sign-up farm?
    emit(ctx.session, ctx.config, WebhookEvent.DISTRIBUTOR_REGISTERED, [(me.id, {
        "distributor_code": me.code, "name": me.name, "phone": me.phone, "rank": me.rank,
        "inviter_code": inviter.code if inviter else None, "registered_at": china_time(ctx.now)})], ctx.now)
    rank = ctx.config.ranks[0].name
    return Text(f"注册成功！\n您的推广码：{me.code}\n等级：{rank}\n{_inviter_line(inviter)}\n"
                "回复“海报”获取专属推广海报，回复“帮助”查看全部功能。")
