"""Help: 帮助 shows what the bot can do, and the fallback answers anything it does not understand.
(客服 / help, which may carry a question, belongs to the customer-service feature.)"""

from __future__ import annotations

from kit.chat import Ctx, Incoming
from kit.feature import Feature
from domain.help import HELP
from domain.messages import Text
from domain.suspension import suspended_text
from storage.models import DistributorStatus

feature = Feature("help")

__all__ = ["HELP", "feature", "on_anything_else", "on_help"]


@feature.command("帮助")
def on_help(msg: Incoming, ctx: Ctx) -> Text:
    me = ctx.distributor
    if me is not None and me.status == DistributorStatus.SUSPENDED:  # only 客服 still serves them
        return Text(suspended_text(ctx.session, me.id))
    return Text(HELP)


@feature.fallback
def on_anything_else(msg: Incoming, ctx: Ctx) -> Text | None:
    if msg.kind == "event":
        return None
    if msg.kind != "text":
        return Text("暂时只能看懂文字消息哦。\n\n" + HELP)
    return Text(HELP)
