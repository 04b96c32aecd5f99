"""Ranks: the daily `ranks` job that promotes every distributor whose figures meet a higher rank
(CONTRACT §3; a completed order also promotes at once)."""

from __future__ import annotations

from aiohttp import web

from bot.feature import Feature

feature = Feature("ranks")


@feature.job("ranks", "cron", hour=2)
async def evaluate_ranks(app: web.Application) -> None:
    """Promote whoever has crossed a line. An empty shell for now: the next issue fills it."""
