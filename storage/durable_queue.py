"""The durable queue: a table of items that workers claim under a lease, deliver, mark and prune.
The outbox (wechat.outbox) and the webhook sender (kit.webhook_sender) are its consumers; each keeps its
own table and only its deliver step (storage.queue_worker runs the loop).

A claim marks due rows `sending` with the time (FOR UPDATE SKIP LOCKED on PostgreSQL, so several
processes claim distinct rows; on SQLite the writer's BEGIN IMMEDIATE makes it atomic). A claim
whose worker died (kill -9 between claim and mark) is given back once its lease runs out, and
delivered again: at least once. Each delivery's `Outcome` is marked at once; a failure is retried
after the `Backoff`'s delay until it gives up. Sent rows are pruned a chunk at a time.

The table has id, status (OutboxStatus), attempts, next_attempt_at, claimed_at, sent_at and
last_error; a consumer may add columns of its own to the marks (`columns`, with their defaults).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from storage.db import delete_chunk, is_postgres
from storage.models import OutboxStatus as Status

ERROR_CHARS = 500  # of an error kept in last_error


@dataclass(frozen=True)
class Backoff:
    """One back-off policy: the delay after a failed try grows from `first` by `factor` up to
    `cap`; after `tries` tries (None: never) it gives up. Used by the durable queues and by the
    in-process retry loops (`pauses`)."""

    first: float  # seconds between the first try and the second
    factor: float = 2.0
    cap: float = math.inf
    tries: int | None = None

    def delay(self, tried: int) -> float:
        """Seconds to wait after the `tried`-th try failed (1 or more)."""
        return min(self.first * self.factor ** (tried - 1), self.cap)

    def gives_up(self, tried: int) -> bool:
        return self.tries is not None and tried >= self.tries

    def pauses(self) -> Iterator[float]:
        """The pauses between the tries of an in-process loop: `tries - 1` of them."""
        tried = 1
        while not self.gives_up(tried):
            yield self.delay(tried)
            tried += 1


@dataclass(frozen=True)
class Outcome:
    """What a deliver step says became of one item. Build it with `Outcome.sent`, `Outcome.kept`
    or `DurableQueue.failed` (which applies the back-off policy)."""

    status: Status
    error: str | None = None
    delay: float | None = None  # a failure retried: seconds until the next try
    values: Mapping[str, Any] = field(default_factory=dict)  # the consumer's own columns

    @classmethod
    def sent(cls, **values: Any) -> Outcome:
        return cls(Status.SENT, values=values)

    @classmethod
    def kept(cls, why: str, **values: Any) -> Outcome:
        """Set aside without counting a try (the outbox: until the user's next message)."""
        return cls(Status.KEPT, why, values=values)

    @property
    def final(self) -> bool:
        return self.status == Status.FAILED


class DurableQueue:
    """The claim, lease, back-off, marks and prune of one queue table (a mapped class)."""

    def __init__(self, model: Any, *, lease_seconds: float, backoff: Backoff, columns: Mapping[str, Any] = {}):
        self.model = model
        self.lease = timedelta(seconds=lease_seconds)
        self.backoff = backoff
        self._columns = dict(columns)  # the consumer's own mark columns and their defaults
        table = model.__table__
        names = ["status", "attempts", "next_attempt_at", "sent_at", "last_error", *self._columns]
        self._mark = (update(table).where(table.c.id == bindparam("m_id"))
                      .values(claimed_at=None, **{n: bindparam("m_" + n) for n in names}))
        # The look for work, built once: the workers ask it after every commit that queued something.
        self._has_work = select(exists(self._due(bindparam("now")))
                                | exists(self._claimed_before(bindparam("expired"))))

    # ---- claiming ---------------------------------------------------------------------------
    def _due(self, now: datetime, *where: Any) -> Any:
        m = self.model
        return select(m.id).where(m.status == Status.PENDING, m.next_attempt_at <= now, *where)

    def _claimed_before(self, cutoff: Any) -> Any:
        """Claims made before `cutoff`: expired, when it is now less the lease."""
        m = self.model
        return select(m.id).where(m.status == Status.SENDING, m.claimed_at < cutoff)

    def has_work(self, session: Session, now: datetime) -> bool:
        """A due row or an expired claim? (A look that only reads, before a claim.)"""
        return bool(session.scalar(self._has_work, {"now": now, "expired": now - self.lease}))

    def claim(self, session: Session, now: datetime, limit: int, *where: Any) -> list[Any]:
        """Recover expired claims, then claim up to `limit` due rows (and matching `where`), in the
        order they fell due."""
        self.recover(session, now)
        m = self.model
        # In the due index's order (status, next_attempt_at): ordering by id alone would sort every
        # pending row (100,000 of a campaign) on each claim.
        due = self._due(now, *where).order_by(m.next_attempt_at, m.id).limit(limit)
        if is_postgres(session):
            due = due.with_for_update(skip_locked=True)
        rows = session.scalars(update(m).where(m.id.in_(due.scalar_subquery()))
                               .values(status=Status.SENDING, claimed_at=now).returning(m),
                               execution_options={"synchronize_session": False}).all()
        return sorted(rows, key=lambda r: r.id)

    def recover(self, session: Session, now: datetime) -> int:
        """Give back the claims whose lease ran out (their worker died between claim and mark)."""
        expired = self._claimed_before(now - self.lease)
        if is_postgres(session):
            expired = expired.with_for_update(skip_locked=True)
        return self._give_back(session, self.model.id.in_(expired.scalar_subquery()))

    def release(self, session: Session, ids: Sequence[int], *, at: datetime | None = None) -> None:
        """Give claims not tried back now (a stop), due again at `at` when given."""
        if ids:
            self._give_back(session, self.model.id.in_(ids), self.model.status == Status.SENDING,
                            **({} if at is None else {"next_attempt_at": at}))

    def _give_back(self, session: Session, *where: Any, **values: Any) -> int:
        give_back = update(self.model).where(*where).values(status=Status.PENDING, claimed_at=None, **values)
        return session.execute(give_back, execution_options={"synchronize_session": False}).rowcount

    # ---- outcomes ---------------------------------------------------------------------------
    def failed(self, row: Any, error: str, *, final: bool = False, delay: float | None = None,
               **values: Any) -> Outcome:
        """A failed try: retried after the policy's delay (or `delay`), unless `final` or the
        policy gives up."""
        tried = row.attempts + 1
        if final or self.backoff.gives_up(tried):
            return Outcome(Status.FAILED, error, values=values)
        return Outcome(Status.PENDING, error, self.backoff.delay(tried) if delay is None else delay, values)

    def mark(self, row: Any, outcome: Outcome, now: datetime) -> dict[str, Any]:
        """The values that write `outcome` to a claimed row (`write_marks`)."""
        tried = row.attempts + (outcome.status != Status.KEPT)
        delay = outcome.delay
        return {"m_id": row.id, "m_status": outcome.status, "m_attempts": tried,
                "m_next_attempt_at": row.next_attempt_at if delay is None else now + timedelta(seconds=delay),
                "m_sent_at": now if outcome.status == Status.SENT else None,
                "m_last_error": None if outcome.error is None else outcome.error[:ERROR_CHARS],
                **{"m_" + n: outcome.values.get(n, default) for n, default in self._columns.items()}}

    def write_marks(self, session: Session, marks: list[dict[str, Any]]) -> list[None]:
        """Marks that land together: one statement (a GroupCommit's unit)."""
        session.connection().execute(self._mark, marks)
        return [None] * len(marks)


def count(session: Session, table: Table, *statuses: Status) -> int:
    """A queue table's rows in these statuses (the /metrics gauges)."""
    return session.scalar(select(func.count()).select_from(table).where(table.c.status.in_(statuses))) or 0


def prune(session: Session, table: Table, sent_before: datetime, *where: Any) -> int:
    """Delete a chunk of a queue table's rows sent before `sent_before` (and matching `where`);
    failed and kept rows stay. How many went (storage.db.delete_chunk)."""
    return delete_chunk(session, table, table.c.status == Status.SENT, table.c.sent_at < sent_before, *where)
