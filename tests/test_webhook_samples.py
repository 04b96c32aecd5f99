"""Real pushes, as the test suites of wechatpy, WeRoBot and WxJava hold them (tests/samples/wechat/,
one file per source file, each naming its source), delivered to /wechat in plain and in safe mode:
each is answered (a reply or "success", never an error), a second delivery of it is answered
like the first, and only a follower's own doing makes its sender a follower (CONTRACT §7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import xmltodict
from sqlalchemy import delete, func, select

from kit.app_keys import SESSIONMAKER
from storage.models import ConversationState, Follower, ProcessedMessage
from tests.conftest import ON_SQLITE, Harness
from tests.webhook_support import push, webhook_harness

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py

SAMPLES = Path(__file__).parent / "samples" / "wechat"
# Whose sender becomes a follower besides a message's: a follow, a QR scan, a menu click.
FOLLOWER_EVENTS = {"subscribe", "scan", "click"}


def samples(path: Path) -> list[tuple[str, bytes]]:
    """(test name, XML) of each sample in a file: `=== name` lines, each followed by its XML."""
    chunks = path.read_text(encoding="utf-8").split("\n=== ")[1:]
    return [(name, xml.strip().encode()) for name, _, xml in (c.partition("\n") for c in chunks)]


def makes_follower(fields: dict[str, Any]) -> bool:
    kind = fields["MsgType"].strip().lower()
    return kind != "event" or fields["Event"].strip().lower() in FOLLOWER_EVENTS


async def forget_everyone(h: Harness) -> None:
    """The samples share senders and MsgIds (fromUser, 1234567890123456): each is delivered as the
    first of its sender's."""
    async with h.app[SESSIONMAKER]() as session:
        for model in (ProcessedMessage, ConversationState, Follower):
            await session.execute(delete(model))
        await session.commit()


async def followers(h: Harness, openid: str) -> int:
    async with h.app[SESSIONMAKER]() as session:
        return await session.scalar(select(func.count()).select_from(Follower).where(Follower.openid == openid))


FILES = sorted(SAMPLES.glob("*.txt"))


def test_the_samples_are_there() -> None:
    counts = {f.name: len(samples(f)) for f in FILES}
    assert len(counts) == 5 and all(counts.values()), counts
    assert sum(counts.values()) >= 100
    events = {xmltodict.parse(xml)["xml"].get("Event", "").strip().lower() for f in FILES for _, xml in samples(f)}
    # WeChat's own reports and notices, whose senders must not become followers, are among them.
    assert {"masssendjobfinish", "templatesendjobfinish", "qualification_verify_success", "naming_verify_success",
            "annual_renew", "verify_expired", "view", "location", "unsubscribe"} <= events


@pytest.fixture(params=["plain", "safe"])
async def moded(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[tuple[bool, Harness]]:
    """(safe mode?, the bot in that mode)."""
    async with webhook_harness(db_url, safe=request.param == "safe") as h:
        yield request.param == "safe", h


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_each_real_sample_is_answered_alike_twice(path: Path, moded: tuple[bool, Harness]) -> None:
    safe, h = moded
    for name, xml in samples(path):
        fields = xmltodict.parse(xml)["xml"]
        sender = fields["FromUserName"].strip()
        await forget_everyone(h)
        first = await push(h, xml, safe=safe)
        again = await push(h, xml, safe=safe)
        assert first[0] == 200, (name, first)
        assert again == first, name
        assert await followers(h, sender) == makes_follower(fields), name
