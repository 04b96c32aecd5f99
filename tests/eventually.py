"""`eventually`: the one way a test waits for something that happens in the background.

A test never sleeps a fixed time to let something happen: it asks again until it holds. A loaded
machine then costs the test time, not its result; an idle one costs nothing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
# The first look comes at once, then the pause doubles up to this: a quick change is seen within
# milliseconds, and a slow one is not polled hard.
MAX_INTERVAL = 0.1


async def eventually(predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, what: str = "") -> T:
    """`predicate()` (sync or async) until it returns a true value, which is returned;
    AssertionError naming `what` and the last value after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.005
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate}; last seen {value!r}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_INTERVAL)
