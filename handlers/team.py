"""Team: the 团队 report — team size by depth, new members this month, sales this month, then
the members ten to a page (`团队 2`): direct members first, each with the masked name, the day
they joined, how they were bound and whether they have bought or sold yet.

The team is everyone below the distributor down to `max_levels - 1` levels (at least one): the
levels whose orders earn them commission; active members only. Sales are the orders credited to
them paid this calendar month (China time), net of refunds, cancelled orders left out (their
running totals). Every figure and page is an indexed read (domain.team_pages): a team of 10,000
costs about what one of ten does.
"""

from __future__ import annotations

from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from kit.menu import MenuKey
from domain.formats import CHINA, mask_name, month_start, yuan
from domain.messages import Text
from domain.team_pages import BOUND_NAMES, Member, Paging, member_page, page_number, pager_line, past_end_line
from domain.team_pages import MAX_DEPTH, team_figures
from storage.models import Distributor

feature = Feature("team")
LEVEL_NAMES = ("", "直属成员", "二级成员", "三级成员")
NO_TEAM = "还没有团队成员。回复“海报”获取推广海报，邀请朋友扫码注册加入您的团队。"


def member_line(number: int, m: Member) -> str:
    bought_or_sold = "、".join(w for w, yes in (("已购买", m.bought), ("已出单", m.sold)) if yes) or "尚未购买或出单"
    bound = f" · {BOUND_NAMES[m.bound_by]}" if m.bound_by in BOUND_NAMES else ""
    return f"{number}. {mask_name(m.name)} · {m.registered_at.astimezone(CHINA):%Y-%m-%d} 加入{bound} · {bought_or_sold}"


@feature.command("团队", "team", menu=MenuKey.TEAM)
@active_only
def on_team(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    number = page_number(ctx.args)
    if number is None:
        return Text("页码请用数字，例如：团队 2")
    depth = min(max(ctx.config.distribution.max_levels - 1, 1), MAX_DEPTH)  # the levels that earn them commission
    figures = team_figures(ctx.session, me.id, depth, ctx.now, month_start(ctx.now), sales=number == 1)
    sizes = [size for size, _ in figures.levels]
    paging = Paging(number, sum(sizes))
    if paging.past_end and paging.total:
        return Text(past_end_line("团队", paging, "团队成员"))
    if number == 1:
        lines = [f"{me.name}的团队", f"团队共 {paging.total} 人，本月新加入 {sum(n for _, n in figures.levels)} 人"]
        lines += [f"{LEVEL_NAMES[level]}：{size} 人" for level, size in enumerate(sizes, start=1)]
        lines += [f"本月团队销售额：{yuan(figures.team_sales_fen)}", f"本月个人销售额：{yuan(figures.own_sales_fen)}"]
        if not paging.total:
            return Text("\n".join([*lines, NO_TEAM]))
        lines.append("")
    else:
        lines = [f"{me.name}的团队成员"]
    shown = 0  # the level whose heading is out
    for i, m in enumerate(member_page(ctx.session, me.id, sizes, paging)):
        if m.level != shown:
            lines.append(f"【{LEVEL_NAMES[m.level]}】")
            shown = m.level
        lines.append(member_line(paging.offset + i + 1, m))
    if footer := pager_line("团队", number, number < paging.pages, paging.pages):
        lines.append(footer)
    return Text("\n".join(lines))
