"""The one clock: every reading of the date and time in the product goes through a `Clock`.

The app holds one (`app[CLOCK]`, kit.app_keys); a handler's `ctx.now` is read from it once per
batch, routes read `request.config_dict[CLOCK].now()`, jobs `app[CLOCK].now()`; domain and
storage functions take `now` as an argument and never read the time themselves. Tests give the
app a `FakeClock` and move it (`clock.move(minutes=31)`) instead of waiting.

Timers on the event loop (a reply's 4-second deadline, a worker's pause) measure durations with
the loop's monotonic time: they are not the date and need no clock. APScheduler fires jobs on
real time; a test runs a job through `POST /api/jobs/{name}/run` after moving the clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    """Real time."""

    def now(self) -> datetime:
        """The date and time, aware, in UTC."""
        return datetime.now(UTC)

    def epoch(self) -> float:
        """Seconds since 1970 (what signatures and WeChat's CreateTime carry)."""
        return time.time()


class FakeClock(Clock):
    """Real time shifted by what a test moved it: time still flows (so everything that waits on
    the loop keeps working), and `move`/`set` jump it forward or back. `freeze()` stops it where
    it stands (a test that compares exact seconds); `move` and `set` still jump it."""

    def __init__(self, at: datetime | None = None) -> None:
        self.offset = timedelta()
        self.frozen: datetime | None = None
        if at is not None:
            self.set(at)

    def now(self) -> datetime:
        return self.frozen if self.frozen is not None else datetime.now(UTC) + self.offset

    def epoch(self) -> float:
        return self.now().timestamp()

    def set(self, at: datetime) -> None:
        """From now on the clock reads `at` (then flows on, unless frozen)."""
        if self.frozen is not None:
            self.frozen = at
        else:
            self.offset = at - datetime.now(UTC)

    def move(self, delta: timedelta | None = None, /, **parts: float) -> datetime:
        """Jump by `delta` or a `timedelta(**parts)` (`move(minutes=31)`; back when negative); the new time."""
        self.set(self.now() + (delta if delta is not None else timedelta(**parts)))
        return self.now()

    def freeze(self) -> datetime:
        """Stop the clock at its current reading; the reading."""
        self.frozen = self.now()
        return self.frozen
