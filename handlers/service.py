"""Customer-service tickets (CONTRACT §4.7): the `sla` job that reminds staff of overdue tickets."""

from __future__ import annotations

from aiohttp import web

from bot.feature import Feature

feature = Feature("service")


@feature.job("sla", "interval", minutes=1)
async def check_sla(app: web.Application) -> None:
    """Remind staff of the tickets past their promised answer time. An empty shell for now: the
    next issue fills it."""
