"""The monthly team bonus (CONTRACT §8): the `team-bonus` job, on the 1st at 02:00 Asia/Shanghai
for the month before, and POST /api/jobs/team-bonus/run with
{"month": "YYYY-MM"} for a given finished month, run and recorded as a run of the job. The rules
are in domain.plans, the set-based payment in domain.team_bonus; each distributor is paid a month
once, however often it runs."""

from __future__ import annotations

import functools
import logging
from typing import ClassVar, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from kit.api import ApiModel, ok
from kit.app_keys import CLOCK, WRITER
from kit.feature import Feature
from kit.live_settings import live_config
from kit.scheduler import JOBS
from domain.formats import MONTH_RE, Month, month_of, parse_month
from domain.refusals import Refusal
from domain.team_bonus import pay_some, stage

log = logging.getLogger(__name__)
feature = Feature("team bonus", scope="ops")  # as the other jobs' routes (kit.jobs_api)
api = feature.api


async def pay_month(app: web.Application, month: Month) -> int:
    """Stage the month (one aggregate statement) and pay it a chunk per unit; the chunks paid (0:
    nothing was due, e.g. a second run)."""
    config, writer, now = live_config(app), app[WRITER], app[CLOCK].now()
    if not config.rewards.team_tiers:
        return 0
    staged = await writer.run(lambda session: stage(session, config, month, now), slow=True)
    after, chunks = 0, 0
    while (last := await writer.run(functools.partial(pay_some, config=config, month=month, after=after, now=now),
                                    slow=True)) is not None:
        after, chunks = last, chunks + 1
    log.info("team bonus paid", extra={"month": month.label, "staged": staged, "chunks": chunks})
    return chunks


@feature.job("team-bonus", "cron", day=1, hour=2, minute=0)
async def team_bonus(app: web.Application) -> int:
    """The month before the one the clock is in (the job runs on the 1st; without tiers it has
    nothing to do, and stays on the schedule so that tiers set later are paid)."""
    return await pay_month(app, month_of(app[CLOCK].now()).previous)


class BonusMonth(ApiModel):
    noun: ClassVar[str] = "month"

    month: str | None = Field(None, pattern=MONTH_RE.pattern,
                              description="a finished month, YYYY-MM (China time); left out: the month before this one")


class BonusStarted(BaseModel):
    name: str
    status: Literal["started"]
    month: str


@api.post("/jobs/team-bonus/run", summary="Pay the monthly team bonus of a finished month now, in the background",
          body=BonusMonth, response=BonusStarted, status=202)
async def run_team_bonus(request: web.Request, body: BonusMonth) -> web.Response:
    now = request.config_dict[CLOCK].now()
    month = month_of(now).previous if body.month is None else parse_month(body.month)
    if month is None:
        raise Refusal("invalid_month", f"{body.month!r} is not a month; send YYYY-MM, e.g. 2026-11.",
                      details=[{"field": "month", "problem": "not a month"}])
    if month.end > now:
        raise Refusal("month_not_finished", f"{month.label} has not ended yet (China time); its team bonus is paid "
                      "from the 1st of the month after.", details={"month": month.label})
    request.config_dict[JOBS].start(team_bonus, "api", wait=True, run=functools.partial(pay_month, month=month))
    return ok({"name": team_bonus.id, "status": "started", "month": month.label}, status=202)
