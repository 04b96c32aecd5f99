"""The loop of the background workers (the outbox, the webhook sender): drain again at once while
there was work, else wait for a wake-up or the idle poll; an error is logged and the loop goes on,
so a database hiccup never ends a worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def drain_forever(drain: Callable[[], Awaitable[int]], wake: asyncio.Event, idle_seconds: float,
                        what: str) -> None:
    """`drain()` answers how much it did; 0 means idle until `wake` is set or `idle_seconds` pass."""
    while True:
        try:
            done = await drain()
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the worker alive through a database hiccup
            log.exception("%s error", what)
            done = 0
        if not done:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), idle_seconds)
            except TimeoutError:
                pass
