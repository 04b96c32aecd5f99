"""The tests' databases (tests/db_support.py): a copy is migrated, and a PostgreSQL copy given back
after a test is, for the next one, as the template was: no row, every sequence at its start."""

from __future__ import annotations

from sqlalchemy import func, inspect, select, text

from storage.db import create_engine
from storage.models import Distributor
from tests.conftest import require_pg
from tests.db_support import pg_database


async def _rows_and_next_id(url: str) -> tuple[int, int]:
    """Rows in every table but alembic_version, and the id the next distributor would get."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
            rows = 0
            for table in tables:
                if table != "alembic_version":
                    rows += await conn.scalar(text(f'SELECT count(*) FROM "{table}"'))
            await conn.execute(text("INSERT INTO distributors (code, openid, phone, name, rank, status, "
                                    "registered_at) VALUES ('K7QF2M', 'o1', '13800138000', '张三', 'junior', "
                                    "'active', now())"))
            next_id = await conn.scalar(select(func.max(Distributor.id)))
        return rows, next_id
    finally:
        await engine.dispose()


async def test_a_database_given_back_is_as_the_template_for_the_next_test(pg_server_url: str | None) -> None:
    server = require_pg(pg_server_url)  # the PostgreSQL half's one skip, as for db_url
    async with pg_database(server) as first:
        assert await _rows_and_next_id(first) == (0, 1)
    async with pg_database(server) as second:
        assert second == first  # the same database, reused
        assert await _rows_and_next_id(second) == (0, 1)


async def test_each_copy_is_migrated(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM alembic_version")) >= 1
    finally:
        await engine.dispose()
