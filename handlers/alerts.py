"""The built-in alerts (CONTRACT §9), for a pilot without Prometheus: with [alerts] enabled, the
`alerts` job (every minute, in the leader) reads what /metrics reads (domain.alerts.figures) and
the jobs' recorded runs, and tells admin.notify_openids and the [[webhooks]] subscribed to
alert.raised / alert.resolved of each condition found, repeated, or cleared (domain.alerts.settle).
With Prometheus, deploy/prometheus/alerts.yml watches the same figures instead."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.orm import Session

from kit.app_keys import CLOCK, WRITER
from kit.feature import Feature
from kit.live_settings import live_config
from kit.scheduler import JOBS, job_statuses, runs_by_name
from domain import alerts

feature = Feature("alerts", scope="ops")


@feature.job("alerts", "interval", minutes=1)
async def check_alerts(app: web.Application) -> int:
    """Raise, repeat and resolve the built-in alerts; how many were told. With [alerts] off it
    reads nothing: a run costs only its record in job_runs."""
    config = live_config(app)
    if not config.alerts.enabled:
        return 0
    now = app[CLOCK].now()

    def unit(session: Session) -> int:
        jobs = job_statuses(app[JOBS], config, runs_by_name(session), now)
        found = alerts.conditions(alerts.figures(session, now), jobs, config.alerts)
        told = alerts.settle(session, config, found, now)
        return told.raised + told.repeated + told.resolved
    return await app[WRITER].run(unit)
