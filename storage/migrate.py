"""Alembic migrations, run programmatically on the app's own async engine."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
# Several `distbot serve` processes may start at once on PostgreSQL; one migrates at a time.
_PG_MIGRATION_LOCK = 0x64697374  # "dist"


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache
def head_revisions() -> frozenset[str]:
    """The revisions the code's migrations end at (read from their files once per process)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> None:
    """Migrate to `revision`; a database already at the code's heads is only read (every start of
    the app does this: Alembic's own upgrade would load every migration file each time)."""
    def run(sync_conn) -> None:  # noqa: ANN001
        if revision == "heads" and set(MigrationContext.configure(sync_conn).get_current_heads()) == head_revisions():
            return
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        await conn.run_sync(run)
