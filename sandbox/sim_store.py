"""The emulator's users in the database (tables sandbox_users and sandbox_messages): loaded when the
sandbox starts, written behind the chat, so that the simulator page after a restart of `make run`
shows the same users with their chats, following or not, within the same customer-service quota.

Nothing waits for these writes: the platform says which user changed (`Platform.on_change`), and a
task writes what changed since its last unit in one unit of the Writer (one upsert of the users,
one insert of their new timeline items), after a short linger that lets the changes of a busy
moment share it; the last unit runs at shutdown, once the bot has sent what it still had to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kit.app_keys import READER, WRITER
from sandbox.platform import Platform, SimUser
from storage.db import dialect_insert
from storage.tables import SANDBOX_MESSAGES, SANDBOX_USERS

log = logging.getLogger(__name__)
LINGER_SECONDS = 0.25  # changes arriving together share one unit
_U, _M = SANDBOX_USERS.c, SANDBOX_MESSAGES.c
_USER_FIELDS = ("place", "nickname", "subscribed", "last_event_time", "quota")


def _quota(user: SimUser) -> dict[str, Any]:
    q = user.quota
    opened = None if q.opened_at == float("-inf") else q.opened_at
    return {"size": q.size, "seconds": q.seconds, "opened_at": opened, "used": q.used}


def _restored(row: Any) -> SimUser:
    user = SimUser(row.openid, row.nickname, subscribed=row.subscribed, last_event_time=row.last_event_time)
    q, saved = user.quota, row.quota
    q.size, q.seconds, q.used = saved["size"], saved["seconds"], saved["used"]
    q.opened_at = float("-inf") if saved["opened_at"] is None else saved["opened_at"]
    return user


def read_users(session: Session) -> list[SimUser]:
    """Every simulated user with their timeline, in the order they were made."""
    users = {row.openid: _restored(row) for row in session.execute(select(SANDBOX_USERS).order_by(_U.place))}
    for openid, item in session.execute(select(_M.openid, _M.item).order_by(_M.openid, _M.id)):
        if openid in users:
            users[openid].timeline.append(item)
    return list(users.values())


def save(session: Session, users: list[dict[str, Any]], messages: list[dict[str, Any]]) -> None:
    if users:
        stmt = dialect_insert(session, SANDBOX_USERS)
        session.execute(stmt.on_conflict_do_update(index_elements=[_U.openid],
                                                   set_={f: stmt.excluded[f] for f in _USER_FIELDS}), users)
    if messages:
        session.execute(insert(SANDBOX_MESSAGES), messages)


class SimStore:
    """What of the platform's users the database holds, and what is still to write."""

    def __init__(self, platform: Platform, app: web.Application):
        self.platform, self.app = platform, app
        self.changed: set[str] = set()
        self.saved_upto: dict[str, int] = defaultdict(int)  # per user: the last timeline id written
        self.woken = asyncio.Event()

    async def load(self) -> None:
        users = await self.app[READER].run(read_users, slow=True)
        p = self.platform
        for user in users:
            p.users[user.openid] = user
            self.saved_upto[user.openid] = user.timeline[-1]["id"] if user.timeline else 0
        p.item_ids = itertools.count(max(self.saved_upto.values(), default=0) + 1)
        p.on_change = self.touch

    def touch(self, user: SimUser) -> None:
        self.changed.add(user.openid)
        self.woken.set()

    def _pending(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
        """The changed users' rows, their timeline items not yet written, and the marks after them."""
        users, messages, marks = [], [], {}
        places = {openid: i for i, openid in enumerate(self.platform.users)}
        for openid in sorted(self.changed):
            u = self.platform.users[openid]
            users.append({"openid": openid, "place": places[openid], "nickname": u.nickname[:64],
                          "subscribed": u.subscribed, "last_event_time": u.last_event_time, "quota": _quota(u)})
            new = list(itertools.takewhile(lambda m: m["id"] > self.saved_upto[openid], reversed(u.timeline)))
            messages += [{"id": m["id"], "openid": openid, "item": m} for m in reversed(new)]
            marks[openid] = u.timeline[-1]["id"] if new else self.saved_upto[openid]
        return users, messages, marks

    async def flush(self) -> None:
        """Write what changed since the last unit (nothing when nothing did)."""
        if not self.changed:
            return
        users, messages, marks = self._pending()
        self.changed.clear()
        try:
            await self.app[WRITER].run(lambda session: save(session, users, messages))
        except Exception:
            self.changed |= set(marks)  # written again, whole, with the next unit
            raise
        self.saved_upto.update(marks)

    async def save_changes(self) -> None:
        try:
            await self.flush()
        except Exception:  # the database is busy or gone: tried again with the next change
            log.exception("the sandbox's users could not be saved")

    async def run(self) -> None:
        while True:
            await self.woken.wait()
            await asyncio.sleep(LINGER_SECONDS)
            self.woken.clear()
            await self.save_changes()


def keeping(platform: Platform) -> Any:
    """A cleanup context of the app: load the platform's users at start, write their changes
    while it runs, and what is left at shutdown (it is placed so that it stops after the bot's
    workers and before the database)."""
    async def keep(app: web.Application) -> AsyncIterator[None]:
        store = SimStore(platform, app)
        try:
            await store.load()
        except Exception:  # the database away at start: serve (/healthz says 503) with no one known yet
            log.warning("sandbox: the simulated users could not be read; starting without them", exc_info=True)
        task = asyncio.create_task(store.run(), name="sandbox-users")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.save_changes()
    return keep
