"""The feature modules, in routing order. No auto-discovery: a new feature is added here."""

from __future__ import annotations

from bot.api import ApiRoutes
from bot.chat import Dispatch, Router
from handlers import help, registration, upcoming

FEATURES = (registration, upcoming, help)


def routers() -> list[Router]:
    return [m.router for m in FEATURES]


def api_tables() -> list[ApiRoutes]:
    return [m.api for m in FEATURES if hasattr(m, "api")]


def jobs() -> list:
    return [job for m in FEATURES for job in getattr(m, "jobs", ())]


def dispatch() -> Dispatch:
    return Dispatch(routers())
