"""Campaigns on the mass channel (群发): one message/mass/send per chunk with a clientmsgid, the
progress from WeChat's MASSSENDJOBFINISH event (also when it arrives before the send is recorded),
followers over their 4 a month counted as skipped, and a repeat after a crash refused by WeChat
instead of delivered twice."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from sandbox.mass_send import finish_event, month_of
from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER, WRITER
from domain.campaigns import MASS_REPORT_WAIT
from storage.models import OutboxMessage
from storage.tables import MASS_REPORTS, OUTBOX
from tests.conftest import Harness
from tests.eventually import eventually
from tests.test_campaigns import distributors, post, wait_done
from tests.test_jobs import jobs, until_runs


def mass_items(user: Any) -> list[dict[str, Any]]:
    return [m for m in user.timeline if m.get("via") == "mass"]


async def wait_counted(h: Harness, cid: int, timeout: float = 15) -> dict[str, Any]:
    """The campaign once done with nothing pending (every chunk sent and reported)."""
    async def counted() -> dict[str, Any] | None:
        done = await wait_done(h, cid, timeout)
        return done if done["pending"] == 0 else None
    return await eventually(counted, timeout, what=f"campaign {cid} is done with nothing pending")


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
    done = await wait_counted(h, created["id"])  # the campaign stayed done: its chunk is sent again
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


async def accepted_job(platform: Platform, timeout: float = 10) -> dict[str, Any]:
    """The mass job WeChat has taken (its answer may still be on its way)."""
    await eventually(lambda: platform.mass_jobs, timeout, what="WeChat takes a mass job")
    [job] = platform.mass_jobs.values()
    return job


async def recorded_msg_id(h: Harness) -> int | None:
    async with h.app[SESSIONMAKER]() as session:
        return await session.scalar(select(OUTBOX.c.msg_id).where(OUTBOX.c.openid == "*"))


async def test_a_report_that_arrives_before_its_send_is_recorded_counts_once_it_is(harness: Harness) -> None:
    h = harness
    fresh, spent, other = await distributors(h, 3)
    h.platform.mass_received[(spent.openid, month_of(h.platform.clock()))] = 4
    h.platform.mass_finish_delay = 3600  # WeChat's report is delivered below, at the moment the test picks
    answer = h.platform.held_answers["message/mass/send"] = asyncio.Event()
    _, created = await post(h, text="答复迟到的群发", channel="mass")
    report = finish_event(h.platform, await accepted_job(h.platform))
    # WeChat took the call and reports the job while its answer (the msg_id) has not reached distbot,
    # as when the process dies between the two: the report comes first, twice (WeChat sends it again
    # later; a new CreateTime, so the webhook's dedupe of retries does not catch it).
    assert await h.platform.post(h.http, report) is not None
    assert await h.platform.post(h.http, {**report, "CreateTime": str(int(report["CreateTime"]) + 7)}) is not None
    status, waiting = await h.api("GET", f"/campaigns/{created['id']}")
    assert (waiting["status"], waiting["sent"], waiting["pending"]) == ("sending", 0, 3)
    answer.set()
    done = await wait_done(h, created["id"])
    assert (done["total"], done["sent"], done["failed"], done["skipped"], done["pending"]) == (3, 2, 0, 1, 0)
    assert len(h.platform.mass_jobs) == 1 and len(mass_items(fresh)) == len(mass_items(other)) == 1


async def test_a_report_no_send_names_is_kept_harmlessly_and_pruned_in_time(harness: Harness) -> None:
    h = harness
    users = await distributors(h, 2)
    stray = finish_event(h.platform, {"msg_id": 4_242_424_242, "total_count": 2, "filter_count": 2,
                                      "sent_count": 2, "error_count": 0})
    assert await h.platform.post(h.http, stray) is not None
    async with h.app[SESSIONMAKER]() as session:
        assert (await session.execute(select(MASS_REPORTS.c.msg_id, MASS_REPORTS.c.sent))).all() == [(4_242_424_242, 2)]
    _, created = await post(h, text="与无主报告无关的群发", channel="mass")
    done = await wait_done(h, created["id"])
    assert (done["total"], done["sent"], done["failed"], done["skipped"], done["pending"]) == (2, 2, 0, 0, 0)
    for u in users:  # nobody heard of the stray report
        assert [m["content"] for m in mass_items(u)] == ["与无主报告无关的群发"]
    async with h.app[SESSIONMAKER]() as session:
        assert (await session.scalar(select(OUTBOX.c.id).where(OUTBOX.c.openid == "mphelper"))) is None
    # A month on, the stray goes; the report its campaign's row names stays with the row.
    await h.app[WRITER].run(lambda s: s.execute(update(MASS_REPORTS).values(
        received_at=datetime.now(UTC) - timedelta(days=31))))
    runs = (await jobs(h))["prune-outbox"]["runs"]
    await h.api("POST", "/jobs/prune-outbox/run")
    await until_runs(h, "prune-outbox", runs + 1)
    async with h.app[SESSIONMAKER]() as session:
        assert (await session.scalars(select(MASS_REPORTS.c.msg_id))).all() == list(h.platform.mass_jobs)
    status, after = await h.api("GET", f"/campaigns/{created['id']}")
    assert after["sent"] == 2


async def test_a_chunk_wechat_never_reports_on_stops_holding_its_campaign_after_the_wait(harness: Harness) -> None:
    h = harness
    users = await distributors(h, 2)
    h.platform.mass_finish_delay = 3600  # the report is lost: it went to a process that was gone
    _, created = await post(h, text="报告丢失的群发", channel="mass")
    job = await accepted_job(h.platform)
    async def recorded() -> bool:
        return await recorded_msg_id(h) == job["msg_id"]
    await eventually(recorded, what="the send is recorded")
    _, waiting = await h.api("GET", f"/campaigns/{created['id']}")
    assert (waiting["status"], waiting["pending"]) == ("sending", 2)
    await h.app[WRITER].run(lambda s: s.execute(update(OUTBOX).where(OUTBOX.c.openid == "*").values(
        sent_at=datetime.now(UTC) - MASS_REPORT_WAIT - timedelta(seconds=1))))
    await h.api("POST", "/jobs/campaigns/run")
    done = await wait_done(h, created["id"])
    assert (done["sent"], done["failed"], done["pending"]) == (0, 0, 2)  # done; WeChat has not said how it went
    assert await h.platform.post(h.http, finish_event(h.platform, job)) is not None  # a late report still counts
    _, after = await h.api("GET", f"/campaigns/{created['id']}")
    assert (after["status"], after["sent"], after["pending"]) == ("done", 2, 0)
    assert all(len(mass_items(u)) == 1 for u in users)
