"""Campaigns through the API and the simulator: each active recipient once, the template outside
the 48-hour window, audience by rank, cancel, the 600-character limit, progress counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from sandbox.platform import SimUser
from kit.app_keys import SESSIONMAKER, WRITER
from storage.models import Distributor
from storage.models_campaigns import Campaign
from storage.tables import OUTBOX
from tests.conftest import Harness
from tests.eventually import eventually
from tests.test_jobs import jobs, until_runs

PHONES = iter(range(13800000000, 13899999999))
NAMES = "赵钱孙李周吴郑王冯陈"


async def distributors(h: Harness, n: int) -> list[SimUser]:
    users = []
    for i in range(n):
        user = h.user()
        await h.register(user, str(next(PHONES)), f"测试{NAMES[i]}")
        users.append(user)
    return users


def received(h: Harness, user: SimUser, text: str) -> list[dict[str, Any]]:
    return [m for m in user.timeline if m.get("from") == "bot" and text in str(m.get("content", m.get("data", "")))]


async def wait_done(h: Harness, cid: int, timeout: float = 15) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status, body = await h.api("GET", f"/campaigns/{cid}")
        assert status == 200, body
        return body if body["status"] == "done" else None
    return await eventually(done, timeout, what=f"campaign {cid} is done")


async def run_campaigns_job(h: Harness) -> None:
    """The campaigns job once more, and whatever it queued sent."""
    runs = (await jobs(h))["campaigns"]["runs"]
    await h.api("POST", "/jobs/campaigns/run")
    await until_runs(h, "campaigns", runs + 1)
    await h.settled()


async def post(h: Harness, **fields: Any) -> tuple[int, Any]:
    body = {"title": "11月推广之星", "kind": "contest", "text": "本月推广之星评选开始", **fields}
    return await h.api("POST", "/campaigns", json=body)


async def test_every_active_distributor_gets_it_once(harness: Harness) -> None:
    h = harness
    a, b, gone = await distributors(h, 3)
    await h.say(gone, "退出")
    await h.say(gone, "确认退出")
    bystander = h.user()
    await h.follow(bystander)  # follows, never registered: not a distributor
    status, created = await post(h, text="双十二活动今晚八点开始")
    assert status == 201, created
    assert created["status"] == "scheduled" and created["total"] == 2
    done = await wait_done(h, created["id"])
    assert (done["total"], done["sent"], done["failed"], done["pending"]) == (2, 2, 0, 0)
    await h.settled()
    for user in (a, b):
        assert len(received(h, user, "双十二活动今晚八点开始")) == 1
    assert received(h, gone, "双十二") == [] and received(h, bystander, "双十二") == []
    await run_campaigns_job(h)  # a second pass sends nothing more
    assert len(received(h, a, "双十二活动今晚八点开始")) == 1


async def test_outside_the_48_hour_window_the_template_message_goes(harness: Harness) -> None:
    h = harness
    near, far = await distributors(h, 2)
    far.last_interaction = h.platform.clock() - 49 * 3600
    status, created = await post(h, title="培训通知", kind="training", text="新人培训周六上午十点")
    assert status == 201
    done = await wait_done(h, created["id"])
    assert (done["sent"], done["failed"]) == (2, 0)
    assert [m["via"] for m in near.timeline if m.get("from") == "bot" and "新人培训" in str(m)] == ["custom"]
    templates = [m for m in far.timeline if m.get("via") == "template"]
    assert len(templates) == 1 and templates[0]["template_id"] == "tmpl-notice"
    assert "新人培训周六上午十点" in str(templates[0]["data"])
    assert not [m for m in far.timeline if m.get("via") == "custom" and "新人培训" in str(m)]


async def test_the_audience_by_rank(harness: Harness) -> None:
    h = harness
    junior, gold = await distributors(h, 2)
    await h.app[WRITER].run(lambda s: s.execute(update(Distributor).where(Distributor.openid == gold.openid)
                                                .values(rank="gold")))
    status, created = await post(h, text="黄金合伙人专属素材上线", audience={"ranks": ["gold"]})
    assert status == 201 and created["total"] == 1
    await wait_done(h, created["id"])
    await h.settled()
    assert len(received(h, gold, "黄金合伙人专属素材上线")) == 1
    assert received(h, junior, "黄金合伙人专属素材上线") == []
    status, body = await post(h, audience={"ranks": ["diamond"]})
    assert status == 422 and "diamond" in body["message"]


async def test_a_scheduled_campaign_waits_and_can_be_cancelled(harness: Harness) -> None:
    h = harness
    (user,) = await distributors(h, 1)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, created = await post(h, text="明天的活动预告", send_at=later)
    assert status == 201 and created["status"] == "scheduled" and created["total"] == 1
    await run_campaigns_job(h)
    status, body = await h.api("GET", f"/campaigns/{created['id']}")
    assert body["status"] == "scheduled" and received(h, user, "明天的活动预告") == []
    status, body = await h.api("POST", f"/campaigns/{created['id']}/cancel")
    assert status == 200 and body["status"] == "cancelled"
    await run_campaigns_job(h)
    assert received(h, user, "明天的活动预告") == []
    status, body = await h.api("POST", "/campaigns/999999/cancel")
    assert status == 404 and body["error"] == "not_found"


async def test_a_started_campaign_cannot_be_cancelled(harness: Harness) -> None:
    h = harness
    await distributors(h, 1)
    status, created = await post(h, text="已经开始的活动")
    done = await wait_done(h, created["id"])
    status, body = await h.api("POST", f"/campaigns/{done['id']}/cancel")
    assert status == 409 and body["details"]["status"] == "done"


async def test_soon_due_campaigns_start_by_the_job(harness: Harness) -> None:
    h = harness
    (user,) = await distributors(h, 1)
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    status, created = await post(h, text="一秒后开始", send_at=soon)
    assert status == 201 and created["status"] == "scheduled"
    assert received(h, user, "一秒后开始") == []  # not before its time
    await wait_done(h, created["id"])  # the campaigns job runs every two seconds
    assert len(received(h, user, "一秒后开始")) == 1


async def test_bad_campaigns_are_refused_and_nothing_is_stored(harness: Harness) -> None:
    h = harness
    for fields, status in (({"text": "长" * 601}, 422), ({"kind": "sale"}, 422), ({"channel": "sms"}, 422),
                           ({"send_at": "2026-12-01T20:00:00"}, 422), ({"send_at": "9999-12-31T23:00:00-02:00"}, 422),
                           ({"text": "  "}, 422), ({"title": 5}, 400),
                           ({"audience": {"ranks": []}}, 422)):
        got, body = await post(h, **fields)
        assert got == status, (fields, body)
        assert body["error"] in ("invalid_campaign", "malformed_campaign")
    status, body = await h.api("GET", "/campaigns")
    assert status == 200 and body == {"campaigns": [], "total": 0}
    status, _ = await post(h, text="长" * 600)
    assert status == 201
    status, body = await h.api("GET", "/campaigns", token="wrong")
    assert status == 401


async def test_the_list_is_newest_first(harness: Harness) -> None:
    h = harness
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    ids = [(await post(h, title=f"活动{i}", send_at=later))[1]["id"] for i in range(3)]
    status, body = await h.api("GET", "/campaigns")
    assert status == 200 and body["total"] == 3
    assert [c["id"] for c in body["campaigns"]] == ids[::-1]
    status, body = await h.api("GET", "/campaigns?limit=1&offset=1")
    assert [c["id"] for c in body["campaigns"]] == [ids[1]] and body["total"] == 3


async def test_sends_are_counted_in_metrics(harness: Harness) -> None:
    h = harness
    await distributors(h, 1)
    _, created = await post(h, text="指标")
    await wait_done(h, created["id"])
    assert h.http is not None
    async with h.http.get(h.url + "/metrics") as resp:
        text = await resp.text()
    assert 'distbot_campaign_sends_total{channel="custom",result="sent"} 1.0' in text


async def test_a_month_on_sent_messages_are_pruned_and_campaigns_keep_their_counts(harness: Harness) -> None:
    h = harness
    await distributors(h, 3)  # their welcome messages are outbox rows too
    status, created = await post(h, text="月底清理之前的活动")
    done = await wait_done(h, created["id"])
    assert (done["sent"], done["failed"], done["pending"]) == (3, 0, 0)
    o = OUTBOX.c
    long_ago = datetime.now(UTC) - timedelta(days=31)

    def backdate(session: Any) -> list[int]:
        session.execute(update(OUTBOX).values(sent_at=long_ago))
        session.execute(update(Campaign).values(finished_at=long_ago))
        kept = session.execute(insert(OUTBOX).values(  # waiting to be sent: stays, whatever its age
            key="test:pending", openid="oWaiting", payload={"type": "text", "content": "稍后"}, status="pending",
            attempts=0, next_attempt_at=long_ago, created_at=long_ago)).inserted_primary_key[0]
        return [kept]
    kept = await h.app[WRITER].run(backdate)
    status, _ = await h.api("POST", "/jobs/prune-outbox/run")
    assert status == 202
    await until_runs(h, "prune-outbox", 1)
    async with h.app[SESSIONMAKER]() as session:
        assert (await session.scalars(select(o.id))).all() == kept
    status, after = await h.api("GET", f"/campaigns/{created['id']}")
    assert (after["total"], after["sent"], after["failed"], after["pending"]) == (3, 3, 0, 0)


async def test_a_campaign_that_finished_recently_keeps_its_rows(harness: Harness) -> None:
    h = harness
    await distributors(h, 2)
    _, created = await post(h, text="刚刚结束的活动")
    await wait_done(h, created["id"])
    # Its rows were sent long ago (a long campaign), but it finished yesterday: counted from its rows still.
    await h.app[WRITER].run(lambda s: s.execute(update(OUTBOX).values(sent_at=datetime.now(UTC) - timedelta(days=40))))
    await h.app[WRITER].run(lambda s: s.execute(update(Campaign).values(
        finished_at=datetime.now(UTC) - timedelta(days=1))))
    await h.api("POST", "/jobs/prune-outbox/run")
    await until_runs(h, "prune-outbox", 1)
    async with h.app[SESSIONMAKER]() as session:
        left = (await session.execute(select(OUTBOX.c.key))).scalars().all()
    assert sum(k.startswith("campaign:") for k in left) == 2  # the welcomes went, the campaign's stayed
    assert len(left) == 2
    _, after = await h.api("GET", f"/campaigns/{created['id']}")
    assert after["sent"] == 2
