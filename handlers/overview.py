"""The console's 概览 (/admin/): today and this month (sales, commission, new distributors),
what waits for an admin (withdrawals, tickets), the last 30 days as a chart, distributors by
rank (a bar chart), this month's top ten by credited sales and the funnel follow → register →
first sale."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from kit.console import page
from kit.feature import Feature
from kit.scopes import ANY
from kit.app_keys import CLOCK, READER
from kit.live_settings import live_config
from content.console_pages import svg_bars, svg_lines
from domain import dashboard
from domain.formats import day_start, month_start
from domain.tickets import open_and_overdue

feature = Feature("overview", scope=ANY)  # the page every session lands on
CHART_DAYS = 30


def _rank_chart(session: Session, names: dict[str, str]) -> Any:
    counts = dashboard.by_rank(session)
    keys = [*names, *sorted(k for k in counts if k not in names)]  # configured order, then any retired rank
    return svg_bars([names.get(k, k) for k in keys], [counts.get(k, 0) for k in keys],
                    title="分销员等级分布：" + "，".join(f"{names.get(k, k)} {counts.get(k, 0)} 位" for k in keys))


def _figures(session: Session, now: datetime, names: dict[str, str]) -> dict[str, Any]:
    days, sales, commission = dashboard.daily(session, now, CHART_DAYS)
    waiting, overdue = open_and_overdue(session, now)
    return {"periods": [("今日", dashboard.period(session, day_start(now))),
                        ("本月", dashboard.period(session, month_start(now)))],
            "pending": dashboard.pending_withdrawals(session),
            "tickets": {"open": waiting, "overdue": overdue},
            "chart": svg_lines(days, [("销售额", "#1f6feb", sales), ("佣金", "#e67e22", commission)],
                               title=f"近 {CHART_DAYS} 天销售额与佣金"),
            "ranks": _rank_chart(session, names),
            "top": dashboard.month_top(session, now),
            "funnel": dashboard.funnel(session)}


@feature.console.get("/")
async def overview(request: web.Request) -> web.Response:
    now = request.config_dict[CLOCK].now()
    names = {r.key: r.name for r in live_config(request.config_dict).ranks}
    figures = await request.config_dict[READER].run(lambda s: _figures(s, now, names))
    return page(request, "overview.html", title="概览", current="/", **figures)
