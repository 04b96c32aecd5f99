"""Team orders: 团队订单 (推广订单) — the orders that earned the distributor commission at any
depth, theirs and their team's, newest first, ten to a page (`团队订单 2`): who sold (or, for
their own sales, who bought when the buyer is a distributor), the amount, the status, and their
commission with its state. 订单 stays the orders credited to them (handlers/orders.py)."""

from __future__ import annotations

from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from domain.commission import REFUNDED, STATUS_NAMES
from domain.formats import CHINA, mask_name, yuan
from domain.messages import Text
from domain.records import SHARE_NAMES
from domain.team_pages import ChatList, TeamOrder, page_reply, team_order_count, team_order_page
from storage.models import Distributor

feature = Feature("team_orders")
DEPTH_NAMES = ("本人推广", "直属", "二级", "三级")


def order_line(o: TeamOrder) -> str:
    if o.depth:
        who = f"{DEPTH_NAMES[min(o.depth, len(DEPTH_NAMES) - 1)]} {mask_name(o.seller)}"
    else:
        who = f"本人推广，买家 {mask_name(o.buyer)}" if o.buyer else "本人推广"
    refunded = f"（已退 {yuan(o.refunded_fen)}）" if o.refunded_fen and o.status != REFUNDED else ""
    back = f"（已冲回 {yuan(o.reversed_fen)}）" if o.reversed_fen and o.state != "reversed" else ""
    return (f"{o.paid_at.astimezone(CHINA):%m-%d} {o.order_no} {yuan(o.amount_fen)}{refunded} "
            f"{STATUS_NAMES.get(o.status, o.status)} · {who} · 佣金 {yuan(o.commission_fen)} "
            f"{SHARE_NAMES.get(o.state, o.state)}{back}")


TEAM_ORDERS = ChatList("团队订单", "团队订单",
                       "还没有给您带来佣金的订单。回复“海报”获取推广海报，您和团队成员推广的订单都会显示在这里。",
                       "团队订单：您和团队成员推广、给您带来佣金的订单，最新的在前")


# Before 团队 in app.features: "团队订单" would otherwise be 团队 with the argument 订单.
@feature.command("团队订单", "推广订单", "team orders")
@active_only
def on_team_orders(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    return Text(page_reply(TEAM_ORDERS, ctx.args, lambda number: team_order_page(ctx.session, me.id, number),
                           lambda: team_order_count(ctx.session, me.id), lambda place, o: f"{place}. {order_line(o)}"))
