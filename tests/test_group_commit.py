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
from storage.writer import Writer, hooked

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


def upper_but_boom(session: Any, items: list[str]) -> list[str | Failed]:
    """A batch's work: each item stored and answered in capitals, except "boom", which fails."""
    def apply(s: Any, item: str) -> str:
        if item == "boom":
            raise RuntimeError("boom")
        store(s, item)
        return item.upper()
    return each_in_savepoint(session, items, apply)


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

    group: GroupCommit[str, str] = GroupCommit(writer, upper_but_boom, on_batch=sizes.append)
    results = await asyncio.gather(*(group(k) for k in ("p", "q", "boom", "r")), return_exceptions=True)
    assert results[:2] == ["P", "Q"] and isinstance(results[2], RuntimeError) and results[3] == "R"
    assert sizes == [4]
    assert await writer.run(keys) == ["p", "q", "r"]


async def test_an_item_takes_its_submitters_unit_hook_into_the_batch(writer: Writer) -> None:
    """A request's hook (its audit row) runs in the batch's transaction, for its item only and only
    when the item succeeded, and hears of the commit before the submitter gets its outcome."""

    class Hook:
        def __init__(self, key: str):
            self.key, self.seen, self.done = key, None, False

        def in_unit(self, session: Any, result: Any) -> None:
            self.seen = result
            store(session, self.key)  # in the batch's transaction: it commits with the item or not at all

        def committed(self) -> None:
            self.done = True

    group: GroupCommit[str, str] = GroupCommit(writer, upper_but_boom)
    hooks = {k: Hook(f"hook-{k}") for k in ("p", "boom", "q")}

    async def submit(item: str, hook: Hook | None) -> tuple[Any, bool]:
        if hook is None:
            return await group(item), False
        with hooked(hook):
            try:
                outcome: Any = await group(item)
            except RuntimeError as e:
                outcome = e
        return outcome, hook.done

    results = await asyncio.gather(submit("p", hooks["p"]), submit("boom", hooks["boom"]),
                                   submit("q", hooks["q"]), submit("r", None))
    assert [r[1] for r in results] == [True, False, True, False]  # committed() before the outcome arrived
    assert (hooks["p"].seen, hooks["q"].seen, hooks["boom"].seen) == ("P", "Q", None)
    assert await writer.run(keys) == ["hook-p", "hook-q", "p", "q", "r"]


class _SlowWriter:
    """A writer whose unit waits on the database for a while (PostgreSQL's round trips), so that
    items keep arriving while a batch runs."""

    async def run(self, work: Any) -> Any:
        await asyncio.sleep(0.01)
        return work(None)


async def test_senders_split_in_two_groups_come_back_to_one_batch() -> None:
    sizes: list[int] = []

    def process(_session: Any, items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items
    commit: GroupCommit[int, int] = GroupCommit(_SlowWriter(), process)  # type: ignore[arg-type]

    async def sender(k: int) -> None:  # a closed loop: the next item as soon as the last is answered
        for _ in range(12):
            assert await commit(k) == k
    first = [asyncio.create_task(sender(k)) for k in range(5)]
    await asyncio.sleep(0.003)  # the second group arrives while the first group's batch runs
    await asyncio.gather(*first, *(sender(k) for k in range(5, 10)))
    assert sizes[0] == 5  # the first batch had the first group only
    # Then one commit for all ten (not 5, 5, 5, ...), but for the second group's last item.
    assert sizes[1:-1] == [10] * (len(sizes) - 2), sizes
