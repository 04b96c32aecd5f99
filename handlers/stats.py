"""The console's 推广统计 (/admin/stats): for a period (this month, last month, chosen days), the
top distributors by credited sales, by commission earned and by team growth, each a table and a
bar chart, counted by domain.rankings as the rest of the product counts them. Reading only:
finance's and ops'."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from markupsafe import Markup
from sqlalchemy.orm import Session

from kit.console import may_open, page
from kit.feature import Feature
from kit.app_keys import CLOCK, READER
from content.console_pages import svg_ranking
from domain import rankings
from domain.formats import yuan

feature = Feature("stats", scope=("finance", "ops"))
CHARTED = 10  # places drawn; the table lists rankings.TOP


def _members(n: int) -> str:
    return f"{n} 人"


# (heading, the figure's column, how a value reads, the ranking)
BOARDS: tuple[tuple[str, str, Callable[[int], str], Callable[..., list[rankings.Ranked]]], ...] = (
    ("销售额排行", "销售额", yuan, rankings.top_sales),
    ("佣金收入排行", "佣金收入", yuan, rankings.top_earnings),
    ("团队增长排行", "新增直属成员", _members, rankings.top_growth),
)


def _chart(title: str, places: Sequence[rankings.Ranked], shown: Callable[[int], str]) -> Markup:
    top = places[:CHARTED]
    return svg_ranking([p.name or p.code for p in top], [p.value for p in top],
                       f"{title}：" + "，".join(f"第 {p.place} 名 {p.name or p.code} {shown(p.value)}" for p in top),
                       shown)


def _board(period: rankings.Period, title: str, column: str, shown: Callable[[int], str],
           ranking: Callable[..., list[rankings.Ranked]]) -> Callable[[Session], dict[str, Any]]:
    def read(session: Session) -> dict[str, Any]:
        places = ranking(session, period)
        return {"title": title, "column": column, "shown": shown, "places": places,
                "chart": _chart(f"{period.label}{title}", places, shown) if places else None}
    return read


@feature.console.get("/stats")
async def stats_page(request: web.Request) -> web.Response:
    period, problems = rankings.period_of(request.query, request.config_dict[CLOCK].now())
    # Each ranking groups the period's rows (a month: a range of one index): off the loop, the
    # three side by side (each its own read; SQLite's reader threads run them on both cores).
    reader = request.config_dict[READER]
    boards = await asyncio.gather(*(reader.run(_board(period, *board), slow=True) for board in BOARDS))
    return page(request, "stats.html", title="推广统计", current="/stats", period=period, periods=rankings.PERIODS,
                problems=problems, boards=boards, top=rankings.TOP, distributors=may_open(request, "/distributors"))
