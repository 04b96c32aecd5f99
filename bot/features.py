"""The feature modules, in routing order. No auto-discovery: a new feature is added here."""

from __future__ import annotations

from aiohttp import web

from bot.api import ApiRoutes
from bot.chat import Dispatch, Router
from handlers import earnings, help, leave, orders, registration, team, upcoming, withdrawals
from handlers import content_packs, posters, scripts, trainings

FEATURES = (registration, orders, earnings, team, withdrawals, leave, posters, scripts, trainings, content_packs,
            upcoming, help)


def routers() -> list[Router]:
    return [m.router for m in FEATURES]


def api_tables() -> list[ApiRoutes]:
    return [m.api for m in FEATURES if hasattr(m, "api")]


def page_tables() -> list[web.RouteTableDef]:
    """Public pages outside /api (training pages, share pages, pack pictures)."""
    return [m.pages for m in FEATURES if hasattr(m, "pages")]


def jobs() -> list:
    return [job for m in FEATURES for job in getattr(m, "jobs", ())]


def dispatch() -> Dispatch:
    return Dispatch(routers())
