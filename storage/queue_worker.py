"""The worker of a durable queue (storage.durable_queue): claims due items, runs the consumer's
deliver step on each, several in flight, optionally at a rate, and marks each outcome at once
(outcomes that land together share one statement and one commit, a GroupCommit).

It drains again at once while there was work, else waits for `wake()` or the idle poll; an error
is logged and the loop goes on, so a database hiccup never ends a worker. The next claim is made
while the last deliveries are still in flight. Stopping (a restart is not a crash): deliveries in
flight finish and keep their marks, or they would go out again once the lease ran out; claims
not yet tried go back to the queue at once. A delivery that raises is logged and its claim
returns after the lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from storage.durable_queue import DurableQueue, Outcome
from storage.group_commit import GroupCommit
from storage.reader import Reader
from storage.writer import Writer

log = logging.getLogger(__name__)
T = TypeVar("T")
THROTTLE_SLACK = 0.05  # seconds the delivery schedule may fall behind and catch up


class QueueWorker(Generic[T]):
    """A consumer subclasses it and writes its deliver step, `deliver(item) -> Outcome`. It may
    also replace `claim` (conditions of its own, or context for each item, then `row_of` names
    an item's row)."""

    def __init__(self, queue: DurableQueue, writer: Writer, reader: Reader, *,
                 now: Callable[[], datetime], name: str, batch: int, in_flight: int, idle_seconds: float,
                 rate: float | None = None):
        self.queue = queue
        self.now = now  # the app's clock (domain.clock): storage never reads the time itself
        self.writer = writer
        self._reader = reader  # the look for work (no write lock on SQLite)
        self.name, self.batch, self._idle = name, batch, idle_seconds
        self._interval = 1.0 / rate if rate else 0.0
        self._next_start = 0.0
        self._slots = asyncio.Semaphore(in_flight)
        self._in_flight: set[asyncio.Future[None]] = set()
        self._claiming = 0  # claims being made or their deliveries being started
        self._wake = asyncio.Event()
        self._marks: GroupCommit[dict[str, Any], None] = GroupCommit(writer, queue.write_marks)

    async def deliver(self, item: T) -> Outcome:
        raise NotImplementedError

    def claim(self, session: Session, now: datetime, limit: int) -> list[T]:
        return self.queue.claim(session, now, limit)

    def row_of(self, item: T) -> Any:
        return item

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    done = await self.drain_once(wait=False)
                except asyncio.CancelledError:
                    raise
                except Exception:  # keep the worker alive through a database hiccup
                    log.exception("%s error", self.name)
                    done = 0
                if not done:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._idle)
                    except TimeoutError:
                        pass
        finally:
            await self._settle()

    async def drain_once(self, *, wait: bool = True) -> int:
        """Claim due items and start their deliveries; how many were claimed. With wait=False it
        returns once the last delivery has started."""
        now = self.now()
        if not await self._reader.run(lambda s: self.queue.has_work(s, now)):
            return 0
        self._claiming += 1
        try:
            return await self._claim_and_start(now, wait)
        finally:
            self._claiming -= 1

    @property
    def working(self) -> bool:
        """Claiming, or a claimed item not yet delivered and marked."""
        return bool(self._claiming or self._in_flight)

    async def _claim_and_start(self, now: datetime, wait: bool) -> int:
        items = await self.writer.run(lambda s: self.claim(s, now, self.batch))
        started = 0
        try:
            for item in items:
                await self._slots.acquire()
                await self._throttle()
                delivery = asyncio.ensure_future(self._one(item))
                started += 1
                self._in_flight.add(delivery)
                delivery.add_done_callback(self._delivered)
        except asyncio.CancelledError:
            await self._settle()
            untried = [self.row_of(item).id for item in items[started:]]
            await self.writer.run(lambda s: self.queue.release(s, untried))
            raise
        if wait:
            await self._settle()
        return len(items)

    async def _one(self, item: T) -> None:
        outcome = await self.deliver(item)
        await self._marks(self.queue.mark(self.row_of(item), outcome, self.now()))

    def _delivered(self, f: asyncio.Future[None]) -> None:
        self._in_flight.discard(f)
        self._slots.release()
        if not f.cancelled() and f.exception() is not None:
            log.error("%s: a delivery failed", self.name, exc_info=f.exception())

    async def _settle(self) -> None:
        """Wait for the deliveries in flight (tasks of their own: a cancelled caller leaves them be)."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _throttle(self) -> None:
        """Space the starts at the rate. A sleep wakes a little late, so the schedule may run
        behind by up to THROTTLE_SLACK and catch up: the rate over a second is the configured one."""
        if not self._interval:
            return
        now = time.monotonic()
        self._next_start = max(self._next_start, now - THROTTLE_SLACK)
        if self._next_start > now:
            await asyncio.sleep(self._next_start - now)
        self._next_start += self._interval
