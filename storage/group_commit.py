"""Group commit, the one batching primitive: items submitted close together share one unit of
work on the Writer (one transaction, one commit), and each item runs in its own SAVEPOINT, so a
failing item rolls back alone and the others are neither lost nor run again.

Used by the webhook (updates), order events, and ready for campaign sends and jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.writer import UnitHook, Writer, run_hooks, task_hook

log = logging.getLogger(__name__)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

MAX_BATCH = 200
# Under load a batch waits, at most this long, for the last one's items and those queued meanwhile:
# the senders whose answers just went out are sending their next ones, and the loop is reading them.
LINGER_SECONDS = 0.006
LINGER_STEP_SECONDS = 0.0002


class Refused(Exception):
    """An item refused by the rules: its SAVEPOINT is rolled back, and nothing is logged."""


@dataclass(frozen=True)
class Failed:
    """What an item that raised leaves as its outcome."""

    error: BaseException


def each_in_savepoint(session: Session, items: Sequence[I], apply: Callable[[Session, I], R],
                      refused: Callable[[I, Refused], R | Failed] | None = None) -> list[R | Failed]:
    """`apply` each item inside its own SAVEPOINT; an item that raises is rolled back alone. An
    item refused by the rules (Refused) is not logged; its outcome is `refused(item, error)` when
    given (e.g. the refusal as the update's reply), else Failed like any.

    An IntegrityError (another process committed the same key first, e.g. WeChat's retry went to
    another process) runs the item once more: it then sees the other transaction's rows.

    The SAVEPOINT is plain SQL (SQLAlchemy's nested transactions cost several times more, once
    per update on the hot path), and it is taken only before the item's first write: an item
    that only reads (most chat commands) needs none. What the item changed through the ORM is
    flushed inside it, in an ORM savepoint of its own when there is anything to flush, so that a
    failing flush spoils neither the session nor the batch; after a failure the session forgets
    its objects (their state in memory may be the undone one) and callers load what they need
    again."""
    savepoints = _Savepoints(session)
    outcomes: list[R | Failed] = []
    with savepoints.watching():
        for item in items:
            outcomes.append(_one(session, savepoints, item, apply, refused))
    return outcomes


def _one(session: Session, savepoints: _Savepoints, item: I, apply: Callable[[Session, I], R],
         refused: Callable[[I, Refused], R | Failed] | None) -> R | Failed:
    retried = False
    while True:
        savepoints.begin()
        try:
            outcome = apply(session, item)
            if session.new or session.dirty or session.deleted:
                with session.begin_nested():
                    session.flush()
            savepoints.release()
            return outcome
        except Exception as e:  # the item is undone; the batch goes on
            savepoints.roll_back()
            session.expunge_all()
            if isinstance(e, IntegrityError) and not retried:
                retried = True
                continue
            if not isinstance(e, Refused):
                log.exception("item failed")
            elif refused is not None:
                return refused(item, e)
            return Failed(e)


def once_more_on_conflict(session: Session, work: Callable[[], R], *, tries: int = 2) -> R:
    """`work()` after a SAVEPOINT, run once more when it meets an IntegrityError: another process
    committed one of its keys first, and the second run reads that process's rows (a batch that
    checks everything before it writes, e.g. order events). A second conflict is raised, with
    the work's writes rolled back.

    The SAVEPOINT is plain SQL and never released (the COMMIT releases it): one statement, a
    round trip on PostgreSQL, where SQLAlchemy's nested transaction costs two and ORM work. So
    `work` writes through Core (session.connection()); objects it added to the session would
    survive the rollback."""
    conn = session.connection()
    conn.exec_driver_sql(_BATCH_SAVEPOINT)
    try:
        return work()
    except IntegrityError:
        conn.exec_driver_sql(_BATCH_ROLLBACK)
        if tries == 1:
            raise
    return once_more_on_conflict(session, work, tries=tries - 1)


_BATCH_SAVEPOINT, _BATCH_ROLLBACK = "SAVEPOINT batch", "ROLLBACK TO SAVEPOINT batch"
_SAVEPOINT, _RELEASE, _ROLLBACK = "SAVEPOINT item", "RELEASE SAVEPOINT item", "ROLLBACK TO SAVEPOINT item"


class _Savepoints:
    """The batch's SAVEPOINT statements, sent as cheaply as each database allows.

    On SQLite they go straight to the sqlite3 connection (a statement without parameters or rows
    needs none of SQLAlchemy's machinery), one per item. On PostgreSQL each is a round trip, so an
    item's SAVEPOINT is sent only just before its first statement that writes (a connection event
    sees every statement, the ORM's flushes included: an item that only reads needs none), and
    an item's RELEASE waits to go with the next SAVEPOINT in one simple query on the driver's
    connection (SQLAlchemy's AdaptedConnection.run_async). The last RELEASE is left to the
    COMMIT, which releases it."""

    def __init__(self, session: Session):
        self._conn = conn = session.connection()
        raw = conn.connection.driver_connection
        # On SQLite a SAVEPOINT costs less than watching for the first write: every item gets one.
        self._lazy = not isinstance(raw, sqlite3.Connection)
        if isinstance(raw, sqlite3.Connection):
            def send(statements: list[str]) -> None:
                for statement in statements:
                    raw.execute(statement)
        else:
            adapted = conn.connection.dbapi_connection
            assert adapted is not None
            through_sqlalchemy = True

            def send(statements: list[str]) -> None:
                nonlocal through_sqlalchemy
                if through_sqlalchemy:
                    # The driver's transaction begins with the first statement SQLAlchemy sends: the
                    # first SAVEPOINT goes that way, so that later ones find the transaction.
                    for statement in statements:
                        conn.exec_driver_sql(statement)
                    through_sqlalchemy = False
                else:
                    adapted.run_async(lambda driver: driver.execute("; ".join(statements)))
        self._send = send
        self._pending: list[str] = []
        self._open = False  # whether the current item's SAVEPOINT has been sent

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        if not self._lazy:
            yield
            return
        event.listen(self._conn, "before_cursor_execute", self._before_statement)
        try:
            yield
        finally:
            event.remove(self._conn, "before_cursor_execute", self._before_statement)

    def _before_statement(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                          executemany: bool) -> None:
        # Only items' statements pass here (the listener is on while the items run).
        if not self._open and (
                context is None or context.isinsert or context.isupdate or context.isdelete
                or not statement.lstrip()[:6].upper().startswith("SELECT")):
            self._take()

    def begin(self) -> None:
        self._open = False
        if not self._lazy:
            self._take()

    def _take(self) -> None:
        self._open = True  # first: the SAVEPOINT itself may pass through the hook
        statements, self._pending = [*self._pending, _SAVEPOINT], []
        self._send(statements)

    def release(self) -> None:
        if self._open:
            self._pending = [_RELEASE]
        self._open = False

    def roll_back(self) -> None:
        if self._open:
            self._send([_ROLLBACK, _RELEASE])
            self._pending = []
        self._open = False


class GroupCommit(Generic[I, R]):
    """`submit(item)` → a future of its outcome. The first item starts a drain task that runs
    batches until the queue is empty; items arriving meanwhile join the next batch.

    An item submitted by a task with a unit hook (storage.writer.hooked: a request's audit row)
    takes it along: the hook runs in the batch's transaction after the item succeeded, and hears
    of the commit, as if the submitter had run the unit itself.

    `process(session, items)` does a batch's work inside its transaction and returns one outcome
    per item (usually through each_in_savepoint); a batch whose transaction fails as a whole
    (the database is gone) fails each of its items with that error."""

    def __init__(self, writer: Writer, process: Callable[[Session, list[I]], Sequence[R | Failed]], *,
                 max_batch: int = MAX_BATCH, linger: float = LINGER_SECONDS,
                 on_batch: Callable[[int], None] | None = None):
        self._writer, self._process = writer, process
        self.max_batch, self.linger = max_batch, linger
        self._queue: list[tuple[I, asyncio.Future[R], UnitHook | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._on_batch = on_batch  # e.g. a metrics histogram of batch sizes

    def submit(self, item: I) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, task_hook()))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return future

    async def __call__(self, item: I) -> R:
        """Submit and wait; a caller that goes away does not take the item's work with it."""
        return await asyncio.shield(self.submit(item))

    @property
    def busy(self) -> bool:
        return bool(self._queue) or (self._task is not None and not self._task.done())

    async def _drain(self) -> None:
        last = 0
        while True:
            # Let the loop take in what arrived while the last batch ran (a unit on SQLite runs
            # without yielding), so that it joins the next batch.
            await asyncio.sleep(0)
            if last > 1 and self.linger:
                await self._gather(last)
            if not self._queue:
                return
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            await self._run(batch)
            # Under load each answered sender sends again at once: the next batch waits for them
            # and for those that queued meanwhile, so that senders split in two groups (one queued
            # while the other's batch ran) share one commit again. The most seen lately is forgotten
            # one by one: a batch cut short by a straggler does not lower what the next ones wait for.
            last = max(min(self.max_batch, len(batch) + len(self._queue)), last - 1)

    async def _gather(self, last: int) -> None:
        """Under load the answers to the last batch went out together and their senders' next
        items are arriving now: wait until `last` are here (the loop reads them meanwhile) or the
        linger is over, so that they share one commit instead of alternating between a batch of
        a few and a batch of the rest."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.linger
        while len(self._queue) < last and loop.time() < until:
            await asyncio.sleep(LINGER_STEP_SECONDS)

    async def _run(self, batch: list[tuple[I, asyncio.Future[R], UnitHook | None]]) -> None:
        items = [item for item, _, _ in batch]
        hooked: list[UnitHook] = []

        def unit(session: Session) -> Sequence[R | Failed]:
            outcomes = self._process(session, items)
            pairs = [(hook, outcome) for (_, _, hook), outcome in zip(batch, outcomes, strict=True)
                     if hook is not None and not isinstance(outcome, Failed)]
            run_hooks(session, pairs)
            hooked.extend(hook for hook, _ in pairs)
            return outcomes
        try:
            outcomes = await self._writer.run(unit)
        except Exception as e:  # the transaction itself failed: nothing of the batch was stored
            log.exception("batch failed")
            outcomes = [Failed(e)] * len(batch)
        else:
            for hook in hooked:
                hook.committed()
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for (_, future, _), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Failed):
                future.set_exception(outcome.error)
                future.exception()  # retrieved here: a caller that gave up must not log it again
            else:
                future.set_result(outcome)
