"""The deliveries waiting for their update's reply: `ReplyWaits`.

An update in work is `Pending` under its dedupe key until its reply is handed over (or, when no
delivery waits any more, until the outbox holds it); WeChat's retries of it wait alongside the
first delivery. Each wait ends with the reply, or with None ("success") at the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from kit.chat import Incoming
from wechat.replays import SignedQuery
from domain.messages import Reply


@dataclass(eq=False)
class Pending:
    """An update in work, and the deliveries waiting for its reply."""

    msg: Incoming
    query: SignedQuery | None = None
    waiters: list[asyncio.Future[Reply | None]] = field(default_factory=list)
    received: float = field(default_factory=time.perf_counter)
    # Its reply is on its way to the outbox (no delivery waited for it): a retry is answered
    # "success" until the stored reply is forgotten, never with a second copy.
    late: bool = False


class ReplyWaits:
    """The updates in work by dedupe key, each delivery's wait for the reply, and the deadline."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self._pending: dict[str, Pending] = {}
        self._due: deque[tuple[float, asyncio.Future[Reply | None]]] = deque()  # (give up at, waiter)
        self._timer: asyncio.TimerHandle | None = None

    def __bool__(self) -> bool:
        return bool(self._pending)

    def get(self, key: str) -> Pending | None:
        """The update in work under this dedupe key, if any."""
        return self._pending.get(key)

    def start(self, msg: Incoming, query: SignedQuery | None) -> Pending:
        pending = self._pending[msg.dedupe_key] = Pending(msg, query)
        return pending

    def wait(self, pending: Pending) -> asyncio.Future[Reply | None]:
        """A delivery's wait: the reply, None at the deadline, or the update's refusal raised."""
        waiter: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        pending.waiters.append(waiter)
        self._watch(waiter)
        return waiter

    def answer(self, pending: Pending, reply: Reply | None) -> bool:
        """Hand the reply to the deliveries still waiting; whether any was."""
        delivered = False
        for waiter in pending.waiters:
            if not waiter.done():
                waiter.set_result(reply)
                delivered = True
        return delivered

    def refuse(self, pending: Pending, error: Exception) -> None:
        """The update was refused: its waiting deliveries raise `error`, and it is no longer in work."""
        self.forget(pending)
        for waiter in pending.waiters:
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved here: a delivery that stopped waiting must not log it

    def forget(self, pending: Pending) -> None:
        """The update is no longer in work (a later delivery is a retry of a finished update)."""
        self._pending.pop(pending.msg.dedupe_key, None)

    def _watch(self, waiter: asyncio.Future[Reply | None]) -> None:
        """Give the waiter up at the deadline. One timer for all: the deadline is the same for
        every delivery, so arrival order is deadline order (a timer each costs more)."""
        loop = asyncio.get_running_loop()
        due = self._due
        while due and due[0][1].done():
            due.popleft()
        due.append((loop.time() + self.deadline, waiter))
        if self._timer is None:
            self._timer = loop.call_at(due[0][0], self._give_up_due)

    def _give_up_due(self) -> None:
        loop = asyncio.get_running_loop()
        due, now = self._due, loop.time()
        while due and (due[0][0] <= now or due[0][1].done()):
            waiter = due.popleft()[1]
            if not waiter.done():
                waiter.set_result(None)  # "success": the reply will come through the outbox
        self._timer = loop.call_at(due[0][0], self._give_up_due) if due else None
