"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

import storage.schema  # noqa: F401  (every model module)
from storage.db import create_engine
from storage.migrate import alembic_config, upgrade
from storage.models import Base


def _diff(conn: Any) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True, "target_metadata": Base.metadata})
    return compare_metadata(ctx, Base.metadata)


async def test_models_match_the_migrations(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            diffs = await conn.run_sync(_diff)
        assert diffs == [], "models and migrations differ; write a migration:\n" + "\n".join(map(repr, diffs))
    finally:
        await engine.dispose()


async def test_upgrade_reaches_every_head_and_is_repeatable(empty_db_url: str) -> None:
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    engine = create_engine(empty_db_url)
    try:
        await upgrade(engine)
        await upgrade(engine)
        async with engine.connect() as conn:
            applied = {r[0] for r in await conn.execute(text("SELECT version_num FROM alembic_version"))}
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert applied == heads
        assert set(Base.metadata.tables) <= tables
    finally:
        await engine.dispose()


def test_revisions_form_one_history_without_gaps() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(script.walk_revisions())
    assert revisions, "no migrations"
    ids = {r.revision for r in revisions}
    for r in revisions:
        downs = r.down_revision if isinstance(r.down_revision, tuple) else (r.down_revision,)
        assert all(d is None or d in ids for d in downs), r.revision
    assert sum(1 for r in revisions if r.down_revision is None) == 1
