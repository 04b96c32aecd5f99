"""WeChat's customer-service quota as the platform enforces it (rules since 12 June 2023).

A user's message (text, image, voice, video, location, link) grants 5 customer-service messages
within 48 hours; a menu click (CLICK, scancode_push, scancode_waitmsg), a follow or a QR scan
grants 3 within 1 minute. A new grant replaces the previous one (quotas do not add up). VIEW,
LOCATION reports, unfollows and WeChat's own events (job finish, verification) grant nothing.
Outside a grant WeChat answers 45015, over it 45047.

Kept apart from the product's record of the same rule (domain.quota), on purpose: the emulator
reads WeChat's raw push fields and is the reference the product is tested against.
"""

from __future__ import annotations

from typing import Any

OUTSIDE = 45015
SPENT = 45047
# (quota, seconds) of a grant
MESSAGE = (5, 48 * 3600)
ACTION = (3, 60)
_MESSAGES = frozenset({"text", "image", "voice", "video", "shortvideo", "location", "link"})
_ACTIONS = frozenset({"subscribe", "scan", "click", "scancode_push", "scancode_waitmsg"})


def grant_of(fields: dict[str, Any]) -> tuple[int, int] | None:
    """The grant a push to the webhook opens, from its MsgType and Event."""
    kind = str(fields.get("MsgType", "")).lower()
    if kind != "event":
        return MESSAGE if kind in _MESSAGES else None
    return ACTION if str(fields.get("Event", "")).lower() in _ACTIONS else None


class Quota:
    """One user's current grant: its size, window, when it opened and how much of it is used."""

    def __init__(self) -> None:
        self.size, self.seconds, self.opened_at, self.used = 0, 0, float("-inf"), 0

    def open(self, grant: tuple[int, int], at: float) -> None:
        (self.size, self.seconds), self.opened_at, self.used = grant, at, 0

    def refusal(self, now: float) -> int | None:
        """WeChat's error code for a customer-service message sent now, or None when it may go."""
        if now - self.opened_at >= self.seconds:
            return OUTSIDE
        return SPENT if self.used >= self.size else None

    def spend(self) -> None:
        self.used += 1

    def state(self, now: float) -> dict[str, Any]:
        """What the sandbox page shows: messages left and seconds until the grant closes."""
        open_for = max(self.opened_at + self.seconds - now, 0) if self.seconds else 0
        return {"left": max(self.size - self.used, 0) if open_for else 0, "seconds": round(open_for)}
