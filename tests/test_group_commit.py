"""Group commit (storage.group_commit) on both databases: each item in its own SAVEPOINT, taken
before its first write, so one failing item rolls back alone and the others are not run again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from storage.db import create_engine
from storage.group_commit import Failed, GroupCommit, Refused, each_in_savepoint
from storage.migrate import upgrade
from storage.tables import PROCESSED
from storage.writer import Writer

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def writer(db_url: str) -> AsyncIterator[Writer]:
    engine = create_engine(db_url)
    await upgrade(engine)
    w = Writer(engine)
    yield w
    await w.close()
    await engine.dispose()


def store(session: Any, key: str) -> None:
    session.connection().execute(PROCESSED.insert(), {"key": key, "openid": "o", "reply": None, "created_at": NOW})


def keys(session: Any) -> list[str]:
    return sorted(session.connection().execute(select(PROCESSED.c.key)).scalars())


async def test_a_failing_item_rolls_back_alone_and_the_others_run_once(writer: Writer) -> None:
    runs: list[str] = []

    def apply(session: Any, item: str) -> str:
        runs.append(item)
        if item == "read":
            return str(session.connection().scalar(select(func.count()).select_from(PROCESSED)))
        store(session, item)
        if item.startswith("bad"):
            store(session, item + "-second-write")
            raise RuntimeError("half way")
        if item == "refused":
            raise Refused("by the rules")
        return item

    items = ["a", "read", "bad-1", "read", "b", "refused", "bad-2", "c"]
    outcomes = await writer.run(lambda s: each_in_savepoint(s, items, apply))
    assert outcomes[0] == "a" and outcomes[1] == "1" and outcomes[3] == "1" and outcomes[4] == "b"  # bad-1 left nothing
    assert [type(o) for o in outcomes] == [str, str, Failed, str, str, Failed, Failed, str]
    assert runs == items  # nobody ran twice
    assert await writer.run(keys) == ["a", "b", "c"]


async def test_a_conflict_runs_the_item_once_more_then_fails_it(writer: Writer) -> None:
    await writer.run(lambda s: store(s, "taken"))
    runs: list[str] = []

    def apply(session: Any, item: str) -> str:
        runs.append(item)
        store(session, item)
        return item

    outcomes = await writer.run(lambda s: each_in_savepoint(s, ["x", "taken", "y"], apply))
    assert outcomes[0] == "x" and isinstance(outcomes[1], Failed) and outcomes[2] == "y"
    assert runs == ["x", "taken", "taken", "y"]
    assert await writer.run(keys) == ["taken", "x", "y"]


async def test_items_submitted_together_share_a_batch_and_get_their_own_outcome(writer: Writer) -> None:
    sizes: list[int] = []

    def process(session: Any, items: list[str]) -> list[str | Failed]:
        def apply(s: Any, item: str) -> str:
            if item == "boom":
                raise RuntimeError("boom")
            store(s, item)
            return item.upper()
        return each_in_savepoint(session, items, apply)

    group: GroupCommit[str, str] = GroupCommit(writer, process, on_batch=sizes.append)
    results = await asyncio.gather(*(group(k) for k in ("p", "q", "boom", "r")), return_exceptions=True)
    assert results[:2] == ["P", "Q"] and isinstance(results[2], RuntimeError) and results[3] == "R"
    assert sizes == [4]
    assert await writer.run(keys) == ["p", "q", "r"]
