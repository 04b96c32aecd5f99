"""Contests (CONTRACT §4.6): the `contests` job that opens, closes and settles them on time."""

from __future__ import annotations

from aiohttp import web

from bot.feature import Feature

feature = Feature("contests")


@feature.job("contests", "interval", minutes=1)
async def tick_contests(app: web.Application) -> None:
    """Open, close and settle the contests that are due. An empty shell for now: the next issue fills it."""
