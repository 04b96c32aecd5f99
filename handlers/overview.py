"""The console's 概览 (/admin/): today and this month (sales, commission, new distributors),
what waits for an admin (withdrawals, tickets) and the last 30 days as a chart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from bot.console import page
from bot.feature import Feature
from bot.typedefs import SESSIONMAKER
from content.console_pages import svg_lines
from domain import dashboard
from domain.formats import day_start, month_start
from domain.tickets import open_and_overdue
from storage.db import run_read

feature = Feature("overview")
CHART_DAYS = 30


def _figures(session: Session, now: datetime) -> dict[str, Any]:
    days, sales, commission = dashboard.daily(session, now, CHART_DAYS)
    waiting, overdue = open_and_overdue(session, now)
    return {"periods": [("今日", dashboard.period(session, day_start(now))),
                        ("本月", dashboard.period(session, month_start(now)))],
            "pending": dashboard.pending_withdrawals(session),
            "tickets": {"open": waiting, "overdue": overdue},
            "chart": svg_lines(days, [("销售额", "#1f6feb", sales), ("佣金", "#e67e22", commission)],
                               title=f"近 {CHART_DAYS} 天销售额与佣金")}


@feature.console.get("/")
async def overview(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    figures = await run_read(request.config_dict[SESSIONMAKER], lambda s: _figures(s, now))
    return page(request, "overview.html", title="概览", current="/", **figures)
