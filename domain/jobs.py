"""Jobs by handle, not by string.

A job's name is stable (GET /api/jobs, job_runs, the metrics), but code that starts a job passes a
handle, never the string: `app[JOBS].start(handle, cause)`. A feature starting its own job passes
the `Job` its `@feature.job(...)` returned; a job that another feature starts too gets a `JobRef`
here in domain/, beside the rules it runs (`domain.campaigns.SEND_JOB`), which the owner declares
its job with and the other feature imports. tests/test_layers.py fails on a string.
"""

from __future__ import annotations

from dataclasses import dataclass

from apscheduler.triggers.cron import CronTrigger

from domain.formats import CHINA


@dataclass(frozen=True)
class JobRef:
    """The name of a job one feature declares and another starts (kit.scheduler.Jobs.start)."""

    id: str


CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's weekday numbers: 0 (and 7) is Sunday


def crontab_fields(line: str) -> dict[str, str]:
    """A crontab line's five fields (minute hour day month weekday) as the arguments of
    APScheduler's CronTrigger. The weekday keeps cron's meaning (0 and 7 are Sunday, 1 Monday),
    which APScheduler's own numbers (0 is Monday) would shift by a day. ValueError saying what is wrong."""
    fields = line.split()
    if len(fields) != 5:
        raise ValueError('needs five fields: minute hour day month weekday, e.g. "0 3 * * *"')
    minute, hour, day, month, weekday = fields
    args = {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": _weekdays(weekday)}
    CronTrigger(timezone=CHINA, **args)  # ValueError naming a bad field
    return args


def _weekdays(field: str) -> str:
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, slash, step = part.partition("/")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first, last = (_weekday(x) for x in span.split("-", 1))
        else:
            first = _weekday(span)
            last = 7 if slash else first
        if not step.isdigit() and slash or first > last:
            raise ValueError(f"the weekday {part!r} is not a cron weekday range")
        days.update(d % 7 for d in range(first, last + 1, int(step) if slash else 1))
    return ",".join(CRON_DAYS[d] for d in sorted(days))


def _weekday(value: str) -> int:
    if value.isdigit() and int(value) <= 7:
        return int(value)
    if value.lower() in CRON_DAYS:
        return CRON_DAYS.index(value.lower())
    raise ValueError(f"{value!r} is not a weekday (0-7 or sun-sat)")
