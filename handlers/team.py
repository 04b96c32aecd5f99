"""Team: the 团队 report — team size by depth, new members this month, sales this month.

The team is everyone below the distributor down to `max_levels - 1` levels (at least one): the
levels whose orders earn them commission; active members only. Sales are the orders credited to
them paid this calendar month (China time), net of refunds, cancelled orders left out.
"""

from __future__ import annotations

from sqlalchemy import select

from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from kit.menu import MenuKey
from domain.figures import credited_sales
from domain.formats import month_start, yuan
from domain.messages import Text
from storage.models import Distributor, DistributorStatus

feature = Feature("team")
LEVEL_NAMES = ("", "直属成员", "二级成员", "三级成员")


@feature.command("团队", "team", menu=MenuKey.TEAM)
@active_only
def on_team(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    d = Distributor.__table__.c
    month = month_start(ctx.now)
    depth = max(ctx.config.distribution.max_levels - 1, 1)  # the levels that earn this distributor commission
    lines = [f"{me.name}的团队"]
    frontier, members, new_members = [me.id], [], 0
    for level in range(1, min(depth, 3) + 1):
        rows = (ctx.session.execute(select(d.id, d.status, d.registered_at)
                                          .where(d.inviter_id.in_(frontier)))).all() if frontier else []
        active = [(i, at) for i, s, at in rows if s == DistributorStatus.ACTIVE]
        lines.append(f"{LEVEL_NAMES[level]}：{len(active)} 人")
        members += [i for i, _ in active]
        new_members += sum(1 for _, at in active if at >= month)
        frontier = [i for i, _, _ in rows]
    lines.insert(1, f"团队共 {len(members)} 人，本月新加入 {new_members} 人")

    def sales(ids: list[int]) -> int:
        return sum(s[0].fen for s in credited_sales(ctx.session, ids, [(month, None)]).values())

    lines.append(f"本月团队销售额：{yuan(sales(members))}")
    lines.append(f"本月个人销售额：{yuan(sales([me.id]))}")
    if not members:
        lines.append("还没有团队成员。回复“海报”获取推广海报，邀请朋友扫码注册加入您的团队。")
    return Text("\n".join(lines))
