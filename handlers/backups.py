"""Scheduled backups (CONTRACT §9): the `backup` job makes a checked backup of the database in
[backup] dir on [backup] schedule (cron, Asia/Shanghai; "" takes it off the schedule, POST
/api/jobs/backup/run still makes one) and keeps the newest [backup] keep. SQLite through the
online backup API, PostgreSQL through pg_dump; both off the event loop (a thread, a subprocess).
How a backup is written, checked and pruned is storage.backup's; its run is in job_runs like any
job's, a failure in distbot_job_runs{job="backup",status="error"}; the newest backup's time and
size are gauges, read from the folder as the process starts and after each backup."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from kit.app_keys import CLOCK, METRICS
from kit.feature import Feature
from kit.live_settings import SETTINGS, live_config
from kit.metrics import Metrics
from domain.formats import CHINA
from storage.backup import newest, scheduled_backup

log = logging.getLogger(__name__)
feature = Feature("backups", scope="ops")
BACKUP_DIR = web.AppKey("backup_dir", Path)  # [backup] dir, absolute


@feature.resource(BACKUP_DIR)
async def backup_dir(app: web.Application) -> AsyncIterator[Path]:
    folder = Path(app[SETTINGS].base.backup.dir)  # never changed live: known before the database answers
    _show_newest(app[METRICS], folder)
    yield folder


@feature.job("backup", "cron", scheduled_if=lambda config: bool(config.backup.schedule),
             trigger_from=lambda config: config.backup.trigger)
async def backup(app: web.Application) -> str:
    """One checked backup, then the older ones beyond `keep` deleted; what it did, for the log."""
    config, folder = live_config(app), app[BACKUP_DIR]
    made = await scheduled_backup(config.database.url, folder, app[CLOCK].now().astimezone(CHINA), config.backup.keep)
    _show_newest(app[METRICS], folder)
    if made.path is None:
        return ""
    log.info("backup %s written and checked; %d older deleted", made.path, len(made.pruned),
             extra={"job": "backup", "path": str(made.path), "pruned": list(made.pruned)})
    return made.path.name


def _show_newest(metrics: Metrics, folder: Path) -> None:
    found = newest(folder)
    metrics.backup_last_success.set(found.st_mtime if found else 0)
    metrics.backup_bytes.set(found.st_size if found else 0)
