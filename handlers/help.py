"""Help: the list of what the bot can do, the answer to anything it does not understand, and who
may use the distributor commands (active_only)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from bot.chat import Ctx, HandlerResult, Incoming, Router
from bot.menu import MenuKey
from domain.messages import Text
from storage.models import Distributor, DistributorRow, DistributorStatus

router = Router("help")

HELP = (
    "分销员助手可以帮您：\n"
    "【注册】成为分销员（可附邀请码：注册 K7QF2M）\n"
    "【海报】专属推广海报（“海报 列表”看全部）\n"
    "【话术】推广文案（可加商品编号或关键词）\n"
    "【订单】最近的推广订单\n"
    "【收益】今日、本月、累计收益\n"
    "【团队】团队人数和业绩\n"
    "【等级】当前等级和升级条件\n"
    "【提现 金额】例如：提现 12.50\n"
    "【排行】本月推广排行榜\n"
    "【培训】适合您等级的培训资料\n"
    "【退出】退出分销计划\n"
    "英文指令也可以：register、poster、scripts、orders、earnings、team、rank、withdraw、top、training、help、quit。"
)
NOT_REGISTERED = "您还不是分销员。回复“注册”即可加入，注册后就能使用这个功能。"
EXITED = "您已退出分销计划，不能再使用这个功能。如需帮助请回复“客服”。"


def require_active(ctx: Ctx) -> Text | None:
    """The refusal for someone who may not use distributor commands, else None."""
    if ctx.distributor is None:
        return Text(NOT_REGISTERED)
    if ctx.distributor.status != DistributorStatus.ACTIVE:
        return Text(EXITED)
    return None


Me = Distributor | DistributorRow


def active_only(handler: Callable[[Incoming, Ctx, Me], Awaitable[HandlerResult]]) -> Callable[
        [Incoming, Ctx], Awaitable[HandlerResult]]:
    """A command for active distributors: others get the refusal; the handler gets the distributor."""
    @functools.wraps(handler)
    async def guarded(msg: Incoming, ctx: Ctx) -> HandlerResult:
        refusal = require_active(ctx)
        if refusal is not None:
            return refusal
        assert ctx.distributor is not None
        return await handler(msg, ctx, ctx.distributor)
    return guarded


@router.command("客服", "帮助", "help", menu=MenuKey.HELP)
async def on_help(msg: Incoming, ctx: Ctx) -> Text:
    return Text(HELP)


@router.fallback
async def on_anything_else(msg: Incoming, ctx: Ctx) -> Text | None:
    if msg.kind == "event":
        return None
    if msg.kind != "text":
        return Text("暂时只能看懂文字消息哦。\n\n" + HELP)
    return Text(HELP)
