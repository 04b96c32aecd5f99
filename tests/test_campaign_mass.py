"""Campaigns on the mass channel (群发): one message/mass/send per chunk with a clientmsgid, the
progress from WeChat's MASSSENDJOBFINISH event, followers over their 4 a month counted as skipped,
and a repeat after a crash refused by WeChat instead of delivered twice."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update

from bot.sandbox.mass import month_of
from bot.typedefs import WRITER
from storage.models import OutboxMessage
from tests.conftest import Harness
from tests.test_campaigns import distributors, post, wait_done


def mass_items(user: Any) -> list[dict[str, Any]]:
    return [m for m in user.timeline if m.get("via") == "mass"]


async def test_a_mass_campaign_is_one_call_and_its_report_counts(harness: Harness) -> None:
    h = harness
    users = await distributors(h, 3)
    status, created = await post(h, text="年货节全场满199减30", channel="mass")
    assert status == 201 and created["channel"] == "mass" and created["total"] == 3
    done = await wait_done(h, created["id"])
    assert (done["total"], done["sent"], done["failed"], done["skipped"], done["pending"]) == (3, 3, 0, 0, 0)
    calls = [body for name, body in h.platform.calls if name == "message/mass/send"]
    assert len(calls) == 1
    assert sorted(calls[0]["touser"]) == sorted(u.openid for u in users)
    assert calls[0]["clientmsgid"] and len(calls[0]["clientmsgid"].encode()) <= 64
    for u in users:
        assert [m["content"] for m in mass_items(u)] == ["年货节全场满199减30"]
        assert not [m for m in u.timeline if m.get("via") in ("custom", "template") and "年货节" in str(m)]


async def test_followers_over_their_four_a_month_are_skipped(harness: Harness) -> None:
    h = harness
    fresh, spent, other = await distributors(h, 3)
    h.platform.mass_received[(spent.openid, month_of(h.platform.clock()))] = 4
    _, created = await post(h, text="本月第五条群发", channel="mass")
    done = await wait_done(h, created["id"])
    assert (done["total"], done["sent"], done["skipped"], done["failed"]) == (3, 2, 1, 0)
    assert mass_items(spent) == [] and len(mass_items(fresh)) == 1 and len(mass_items(other)) == 1


async def test_a_repeat_after_a_crash_is_refused_by_wechat_not_delivered_twice(harness: Harness) -> None:
    h = harness
    users = await distributors(h, 2)
    _, created = await post(h, text="只发一次的群发", channel="mass")
    await wait_done(h, created["id"])
    first = list(h.platform.mass_jobs)
    # As if the process had died between WeChat's answer and the mark: the row is sent again,
    # a minute later (WeChat refuses the same clientmsgid sooner, 45066, and distbot waits).
    await h.app[WRITER].run(lambda s: s.execute(update(OutboxMessage).where(OutboxMessage.openid == "*")
                                                .values(status="pending", msg_id=None)))
    h.platform.clock = lambda: time.time() + 61
    await h.api("POST", "/jobs/campaigns/run")
    done = await wait_done(h, created["id"])
    assert done["sent"] == 2
    assert list(h.platform.mass_jobs) == first  # no second job: 45065 named the first one
    for u in users:
        assert len(mass_items(u)) == 1


async def test_a_mass_campaign_of_one_goes_as_a_service_message(harness: Harness) -> None:
    h = harness
    (user,) = await distributors(h, 1)
    _, created = await post(h, text="只有一位收件人", channel="mass")  # WeChat's mass call needs two
    done = await wait_done(h, created["id"])
    assert (done["total"], done["sent"]) == (1, 1)
    assert [m["via"] for m in user.timeline if "只有一位收件人" in str(m)] == ["custom"]
