"""The jobs over /api, from any process: GET /api/jobs lists them with their next and last runs
(shared in job_runs) and whether this process leads; POST /api/jobs/{name}/run runs one now, in
this process, in the background, recorded like a scheduled run."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from kit.api import ApiModel, ApiRoutes, ok
from kit.scheduler import JOBS, last_runs
from kit.app_keys import CLOCK, CONFIG, READER
from domain.formats import china_time
from domain.jobs import JobRef
from domain.refusals import Refusal

api = ApiRoutes("jobs", scope="ops")


class JobName(ApiModel):
    noun: ClassVar[str] = "job"

    name: str = Field(min_length=1, max_length=64, description="A job's name, e.g. unfreeze")


class JobState(BaseModel):
    name: str
    schedule: str = Field(description="The trigger in Asia/Shanghai time, e.g. cron[hour='2'] or interval[0:01:00]")
    next_run_at: str | None = Field(description="When the schedule runs it next (null: never again)")
    last_run_at: str | None = Field(description="When the last finished run started (null: never run)")
    last_status: Literal["ok", "error"] | None
    last_error: str | None
    last_duration_ms: int | None
    running_since: str | None = Field(description="A run under way in some process, since then")
    runs: int = Field(description="Finished runs, in every process")


class JobList(BaseModel):
    jobs: list[JobState]
    leader: bool = Field(description="Whether this process leads: it runs the schedule (one process does)")


class JobStarted(BaseModel):
    name: str
    status: Literal["started"]


def _time(at: datetime | None) -> str | None:
    return None if at is None else china_time(at)


@api.get("/jobs", summary="The scheduled jobs, their next and last runs", response=JobList)
async def list_jobs(request: web.Request) -> web.Response:
    jobs, config = request.config_dict[JOBS], request.config_dict[CONFIG]
    runs = await last_runs(request.config_dict[READER])
    now = request.config_dict[CLOCK].now()
    listed = []
    for job in sorted(jobs, key=lambda j: j.id):
        run = runs.get(job.id)
        listed.append({
            "name": job.id, "schedule": str(job.make_trigger()), "next_run_at": _time(job.next_run_at(now) if job.scheduled(config) else None),
            "last_run_at": _time(run and run.last_run_at), "last_status": run and run.last_status,
            "last_error": run and run.last_error, "last_duration_ms": run and run.last_duration_ms,
            "running_since": _time(run and run.running_since), "runs": run.runs if run else 0})
    return ok({"jobs": listed, "leader": jobs.leading})


@api.post("/jobs/{name}/run", summary="Run a job now, in the background", params=JobName, response=JobStarted,
          status=202, errors=(404,))
async def run_job(request: web.Request, params: JobName) -> web.Response:
    jobs = request.config_dict[JOBS]
    if params.name not in jobs.by_name:
        raise Refusal("not_found", f"No job {params.name!r}.")
    jobs.start(JobRef(params.name), "api", wait=True)
    return ok({"name": params.name, "status": "started"}, status=202)
