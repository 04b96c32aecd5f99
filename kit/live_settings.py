"""The programme settings as they stand now, in every process: `LiveSettings` (app[SETTINGS]).

Its `config` is the startup Config (config.toml and the environment) with the database's changes
applied (domain.settings), a whole frozen object swapped at once: a reader takes it once per unit
of work (the webhook's batch, an order-event batch, a request, a job's run) and sees one state
throughout. Every process polls the history's highest id every POLL_SECONDS (one indexed
read) and reads the history again when it moved, so a change made anywhere is in force
everywhere within seconds; the process that made it adopts it at once.

Whatever reads programme settings (levels, rates, freeze, minimum withdrawal, cap, ranks) reads
`live_config(app)` (a route: `live_config(request.config_dict)`, a chat handler: `ctx.config`);
app[CONFIG] stays the startup configuration (server, tokens, WeChat, database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from kit.app_keys import READER
from domain.config import Config
from domain.settings import Change, applied, last_change_id, load_changes
from storage.reader import Reader

log = logging.getLogger(__name__)
POLL_SECONDS = 2.0  # the promise is 10 s


class SettingsUnknown(RuntimeError):
    """The programme settings cannot be told yet (their history has not been read)."""


class LiveSettings:
    """The effective settings: `config`, `changes` (the history it was built from)."""

    def __init__(self, base: Config):
        self.base = base
        self._config = base
        self.known = False  # the history read at least once: until then config.toml alone is not the truth
        self.changes: tuple[Change, ...] = ()

    @property
    def seen(self) -> int:
        """The id of the latest change applied (0: none yet)."""
        return self.changes[-1].id if self.changes else 0

    def adopt(self, changes: list[Change]) -> None:
        """Swap in the settings after `changes` (the whole history, oldest first), unless an
        older read than the one in force (a poll that overtook a change of this process)."""
        last = changes[-1].id if changes else 0
        if last < self.seen:
            return
        self._config, self.changes, self.known = applied(self.base, changes), tuple(changes), True

    @property
    def config(self) -> Config:
        """The settings in force; refused while the history could not be read yet (the database
        was unreachable as the process started): config.toml alone could book a commission at a
        rate the programme changed."""
        if not self.known:
            raise SettingsUnknown("the programme settings are not read yet: the database is unreachable")
        return self._config

    async def refresh(self, reader: Reader) -> None:
        """Read the history again when a change was made since the last look."""
        if not self.known or await reader.run(last_change_id) != self.seen:
            self.adopt(await reader.run(load_changes))

    async def poll(self, reader: Reader) -> None:
        every = POLL_SECONDS  # read as the poll starts (a test polls faster)
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh(reader)
            except Exception:  # the database away for a moment: the settings in force stay
                log.warning("settings: could not read the changes; trying again in %s s", every, exc_info=True)


SETTINGS = web.AppKey("settings", LiveSettings)


def live_config(app: Mapping[Any, Any]) -> Config:
    """The configuration with the programme settings in force now (an app, or a request's
    config_dict)."""
    return app[SETTINGS].config


async def polled(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the database): the history read before the app serves, then polled
    until the app stops."""
    live, reader = app[SETTINGS], app[READER]
    try:
        await live.refresh(reader)
    except Exception:  # serve (/healthz says 503); what needs the settings waits for the poll's read
        log.error("settings: could not read the changes; what needs them fails until the database answers",
                  exc_info=True)
    task = asyncio.create_task(live.poll(reader), name="settings")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
