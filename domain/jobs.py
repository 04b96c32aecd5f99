"""Jobs by handle, not by string.

A job's name is stable (GET /api/jobs, job_runs, the metrics), but code that starts a job passes a
handle, never the string: `app[JOBS].start(handle, cause)`. A feature starting its own job passes
the `Job` its `@feature.job(...)` returned; a job that another feature starts too gets a `JobRef`
here in domain/, beside the rules it runs (`domain.campaigns.SEND_JOB`), which the owner declares
its job with and the other feature imports. tests/test_layers.py fails on a string.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobRef:
    """The name of a job one feature declares and another starts (kit.scheduler.Jobs.start)."""

    id: str
