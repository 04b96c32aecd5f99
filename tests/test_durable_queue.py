"""The durable queue itself (storage.durable_queue, storage.queue_worker), on a table of its own, on
both databases: two workers claim distinct items; a claim whose worker died is delivered again
after its lease; the back-off grows and gives up as the policy says; a prune removes only old
sent rows. Time is an argument of every step (`now`), so nothing here waits for the clock."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import String, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.db import create_engine, create_sessionmaker
from storage.durable_queue import Backoff, DurableQueue, Outcome, count, prune
from storage.models import BigId, OutboxStatus as Status, UtcDateTime
from storage.queue_worker import QueueWorker
from storage.reader import Reader
from storage.writer import Writer

LEASE = 60.0


class _Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime()}


class Item(_Base):
    """A queue table with the columns the queue needs, and one of the consumer's own (`note`)."""

    __tablename__ = "queue_items"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), default=Status.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(String(40))


ITEMS = Item.__table__
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class Db:
    def __init__(self, engine: AsyncEngine):
        self.engine, self.writer, self.reader = engine, Writer(engine), Reader(engine)
        self.sessionmaker = create_sessionmaker(engine)

    async def add(self, n: int, due: datetime = T0, **values: Any) -> list[int]:
        rows = [{"status": Status.PENDING, "attempts": 0, "next_attempt_at": due, **values} for _ in range(n)]
        await self.writer.run(lambda s: s.connection().execute(ITEMS.insert(), rows))
        return (await self.writer.run(lambda s: list(s.scalars(select(Item.id).order_by(Item.id)))))[-n:]

    async def rows(self) -> dict[int, Any]:
        return await self.writer.run(lambda s: {r.id: r for r in s.execute(select(ITEMS)).all()})


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Db]:
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    d = Db(engine)
    try:
        yield d
    finally:
        await d.reader.close()
        await d.writer.close()
        await engine.dispose()


def queue(backoff: Backoff = Backoff(1, cap=600, tries=4)) -> DurableQueue:
    return DurableQueue(Item, lease_seconds=LEASE, backoff=backoff, columns={"note": None})


def ids(rows: list[Any]) -> list[int]:
    return [r.id for r in rows]


async def test_two_workers_claim_distinct_items(db: Db, db_url: str) -> None:
    made = await db.add(30)
    other = Db(create_engine(db_url))  # another process: its own engine and writer
    q = queue()
    try:
        claims = await asyncio.gather(*(w.writer.run(lambda s: q.claim(s, T0, 4)) for w in (db, other) * 4))
        claimed = [i for c in claims for i in ids(c)]
        assert len(claimed) == len(set(claimed)) == 30 and sorted(claimed) == made
        if db_url.startswith("postgresql"):
            # Side by side: a claim whose transaction is still open holds its rows; the other
            # skips them (SKIP LOCKED) instead of waiting, and takes the next ones.
            await db.writer.run(lambda s: q.release(s, made))
            async with db.sessionmaker() as a, a.begin():
                first = ids(await a.run_sync(lambda s: q.claim(s, T0, 5)))
                second = ids(await other.writer.run(lambda s: q.claim(s, T0, 5)))
            assert first == made[:5] and second == made[5:10]
    finally:
        await other.writer.close()
        await other.engine.dispose()


async def test_an_expired_lease_is_reclaimed_and_delivered_again(db: Db) -> None:
    q = queue()
    [dead, live] = await db.add(2)
    await db.writer.run(lambda s: q.claim(s, T0, 1))  # a worker killed (-9) after this claim
    claimed_late = T0 + timedelta(seconds=LEASE / 2)
    await db.writer.run(lambda s: q.claim(s, claimed_late, 1))  # a live worker's, within its lease
    within = T0 + timedelta(seconds=LEASE - 1)
    assert not await db.writer.run(lambda s: q.has_work(s, within))
    assert await db.writer.run(lambda s: q.claim(s, within, 10)) == []
    after = T0 + timedelta(seconds=LEASE + 1)
    assert await db.writer.run(lambda s: q.has_work(s, after))
    again = await db.writer.run(lambda s: q.claim(s, after, 10))
    assert ids(again) == [dead]  # the live worker's claim stays its own
    rows = await db.rows()
    assert (rows[dead].status, rows[dead].claimed_at) == (Status.SENDING, after)
    assert (rows[live].status, rows[live].claimed_at) == (Status.SENDING, claimed_late)


async def test_a_worker_delivers_a_dead_workers_claim_after_its_lease(db: Db) -> None:
    q = queue()
    [dead] = await db.add(1)
    await db.writer.run(lambda s: q.claim(s, datetime.now(UTC) - timedelta(seconds=LEASE + 1), 1))
    delivered: list[int] = []

    class Worker(QueueWorker[Any]):
        async def deliver(self, row: Any) -> Outcome:
            delivered.append(row.id)
            return Outcome.sent(note="ok")
    worker = Worker(q, db.writer, db.reader, now=lambda: datetime.now(UTC), name="test", batch=10, in_flight=2,
                    idle_seconds=0.1)
    assert await worker.drain_once() == 1
    assert await worker.drain_once() == 0
    row = (await db.rows())[dead]
    assert delivered == [dead] and (row.status, row.attempts, row.note, row.claimed_at) == ("sent", 1, "ok", None)


def test_the_back_off_grows_to_its_cap_and_gives_up_after_its_tries() -> None:
    policy = Backoff(1, cap=10, tries=6)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert [policy.gives_up(n) for n in range(1, 7)] == [False] * 5 + [True]
    assert list(policy.pauses()) == [1, 2, 4, 8, 10]  # between six tries
    assert list(Backoff(0.2, factor=4, tries=3).pauses()) == [0.2, 0.8]
    endless = Backoff(5, cap=3600).pauses()
    assert [next(endless) for _ in range(12)][-2:] == [3600, 3600]


async def test_failures_are_retried_after_growing_delays_until_the_policy_gives_up(db: Db) -> None:
    q = queue(Backoff(1, cap=600, tries=4))
    [item] = await db.add(1)
    now, waits = T0, []
    for _ in range(4):
        [row] = await db.writer.run(lambda s: q.claim(s, now, 10))
        mark = q.mark(row, q.failed(row, "HTTP 500", note="x"), now)
        await db.writer.run(lambda s: q.write_marks(s, [mark]))
        row = (await db.rows())[item]
        if row.status == Status.FAILED:
            break
        assert await db.writer.run(lambda s: q.claim(s, row.next_attempt_at - timedelta(seconds=0.5), 10)) == []
        waits.append((row.next_attempt_at - now).total_seconds())
        now = row.next_attempt_at
    assert waits == [1, 2, 4]
    assert (row.status, row.attempts, row.last_error, row.note) == (Status.FAILED, 4, "HTTP 500", "x")
    assert not await db.writer.run(lambda s: q.has_work(s, now + timedelta(days=1)))
    # A failure the consumer knows is final, and a delay of its own.
    assert q.failed(row, "gone", final=True).final
    assert q.failed(SimpleNamespace(attempts=0), "soon", delay=61).delay == 61


async def test_kept_items_count_no_try_and_stay_until_released(db: Db) -> None:
    q = queue()
    [item] = await db.add(1)
    [row] = await db.writer.run(lambda s: q.claim(s, T0, 1))
    await db.writer.run(lambda s: q.write_marks(s, [q.mark(row, Outcome.kept("no quota"), T0)]))
    row = (await db.rows())[item]
    assert (row.status, row.attempts, row.last_error, row.claimed_at) == (Status.KEPT, 0, "no quota", None)
    assert not await db.writer.run(lambda s: q.has_work(s, T0 + timedelta(days=1)))


async def test_prune_removes_only_old_sent_rows(db: Db) -> None:
    old, recent = T0 - timedelta(days=8), T0 - timedelta(days=1)
    old_sent = await db.add(3, status=Status.SENT, sent_at=old)
    recent_sent = await db.add(1, status=Status.SENT, sent_at=recent)
    stays = [*recent_sent, *await db.add(1, status=Status.FAILED, sent_at=None),
             *await db.add(1, status=Status.KEPT), *await db.add(1), *await db.add(1, status=Status.SENDING)]
    cutoff = T0 - timedelta(days=7)
    assert await db.writer.run(lambda s: prune(s, ITEMS, cutoff, ITEMS.c.id != old_sent[0])) == 2
    assert await db.writer.run(lambda s: prune(s, ITEMS, cutoff)) == 1
    assert await db.writer.run(lambda s: prune(s, ITEMS, cutoff)) == 0
    assert sorted(await db.rows()) == sorted(stays)
    assert await db.writer.run(lambda s: count(s, ITEMS, Status.PENDING, Status.SENDING)) == 2
