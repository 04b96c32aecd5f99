"""Contests (CONTRACT §4.6) and 排行 (§5) through HTTP and chat, on both databases: validation,
live standings (ties, refunds, cancellations, backfill), settlement paying each winner once, the
results campaign with masked names, new_members without prizes, and the monthly 月度推广之星."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from sandbox.platform import Platform, SimUser
from kit.app_keys import SESSIONMAKER, WRITER
from domain import contest_results
from domain.formats import CHINA
from storage.models import Distributor
from storage.tables import ENTRIES
from tests.conftest import ADMIN_TOKEN, Harness, make_config
from tests.eventually import eventually
from tests.money_support import balance, check_invariants, pay, seed, send
from tests.test_audit import console, csrf
from tests.test_jobs import run_job

PRIZES = [30000, 10000]


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    config = make_config(db_url, distribution={"freeze_days": 0}, contests={"monthly_star_prizes_fen": [8800]})
    async with Harness(config, platform, wechat_server, reply_deadline=3.0) as harness:
        yield harness


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def person(h: Harness, name: str, **kw: Any) -> tuple[Distributor, SimUser]:
    d, user = await seed(h, name=name, **kw)
    user.last_interaction = h.platform.clock()  # inside the 48-hour window: plain chat messages
    return d, user


async def create(h: Harness, **fields: Any) -> tuple[int, Any]:
    body = {"title": "新品首发挑战赛", "metric": "sales", "starts_at": iso(now() - timedelta(hours=1)),
            "ends_at": iso(now() + timedelta(hours=1)), "prizes_fen": [], "audience": "all", **fields}
    return await h.api("POST", "/contests", json=body)


async def contest(h: Harness, cid: int) -> dict[str, Any]:
    status, body = await h.api("GET", f"/contests/{cid}")
    assert status == 200, body
    return body


async def settled(h: Harness, cid: int) -> dict[str, Any]:
    """The contest once the contests job ran (it settles every contest that has ended)."""
    await run_job(h, "contests")
    body = await contest(h, cid)
    assert body["status"] == "settled", body
    return body


def places(body: dict[str, Any]) -> list[tuple[int, str, int]]:
    return [(s["place"], s["code"], s["value"]) for s in body["standings"]]


def received(user: SimUser, text: str) -> list[dict[str, Any]]:
    return [m for m in user.timeline if m.get("from") == "bot" and text in str(m.get("content", m.get("data", "")))]


async def rewards(h: Harness) -> list[tuple[int, int, str]]:
    async with h.app[SESSIONMAKER]() as session:
        return [tuple(r) for r in (await session.execute(
            select(ENTRIES.c.distributor_id, ENTRIES.c.amount_fen, ENTRIES.c.ref)
            .where(ENTRIES.c.kind == "reward").order_by(ENTRIES.c.amount_fen.desc()))).all()]


# ---- creation -----------------------------------------------------------------------------------
async def test_the_console_form_never_guesses_a_comma_in_the_prizes(h: Harness) -> None:
    """In the prize list a comma separates prizes: "1,500, 800" would be ¥1 and ¥500 for one reader
    and ¥1,500 for another, so it creates nothing and the page says how to type them."""
    http = await console(h, ADMIN_TOKEN)
    try:
        async with http.get(h.url + "/admin/contests") as resp:
            token = csrf(await resp.text())
        form = {"csrf_token": token, "title": "冲刺赛", "metric": "sales", "audience": "all",
                "starts_at": (now() + timedelta(days=1)).astimezone(CHINA).strftime("%Y-%m-%dT%H:%M"),
                "ends_at": (now() + timedelta(days=2)).astimezone(CHINA).strftime("%Y-%m-%dT%H:%M")}
        for typed, shown in (("1,500, 800", "1,500"), ("300,200,100", "300,200,100"), ("1，500.50", "1，500.50")):
            async with http.post(h.url + "/admin/contests", data={**form, "prizes": typed},
                                 allow_redirects=False) as resp:
                page = await resp.text()
                assert resp.status == 422 and f"奖金里的“{shown}”有两种读法" in page and "1500, 800, 300" in page, page
        assert [c for c in (await h.api("GET", "/contests"))[1]["contests"] if not c["source"]] == []
        async with http.post(h.url + "/admin/contests", data={**form, "prizes": "1500, 800、300.50"},
                             allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
    finally:
        await http.close()
    [created] = [c for c in (await h.api("GET", "/contests"))[1]["contests"] if not c["source"]]
    assert created["prizes_fen"] == [150000, 80000, 30050]


async def test_bad_contests_are_refused_with_422(h: Harness) -> None:
    t = now()
    status, body = await create(h, starts_at=iso(t), ends_at=iso(t))
    assert status == 422 and body["error"] == "invalid_contest" and "ends_at" in body["message"]
    status, body = await create(h, starts_at=iso(t), ends_at=iso(t - timedelta(days=1)))
    assert status == 422
    status, body = await create(h, metric="new_members", prizes_fen=[1000])
    assert status == 422 and "recruitment" in body["message"], body
    status, body = await create(h, audience={"ranks": ["platinum"]})
    assert status == 422 and "platinum" in body["message"]
    status, body = await create(h, metric="sku_sales", skus=[])
    assert status == 422 and "skus" in body["message"]
    assert (await create(h, metric="points"))[0] == 422
    assert (await create(h, prizes_fen=[0]))[0] == 422
    assert (await create(h, starts_at="0001-01-01T00:00:00+08:00"))[0] == 422  # no UTC time: nothing to store
    assert (await h.api("GET", "/contests/987654"))[0] == 404
    status, listed = await h.api("GET", "/contests")
    assert status == 200 and all(c["source"] for c in listed["contests"])  # only the monthly star


async def test_created_contests_are_listed_newest_first(h: Harness) -> None:
    await star(h)
    status, first = await create(h, title="第一场", prizes_fen=PRIZES)
    assert status == 201 and first["status"] == "running" and first["winners"] is None, first
    status, second = await create(h, title="第二场", metric="new_members", audience={"ranks": ["junior"]},
                                  starts_at=iso(now() + timedelta(days=1)), ends_at=iso(now() + timedelta(days=2)))
    assert status == 201 and second["status"] == "scheduled" and second["audience"] == {"ranks": ["junior"]}
    status, listed = await h.api("GET", "/contests?limit=2")
    assert status == 200 and [c["title"] for c in listed["contests"]] == ["第二场", "第一场"]
    assert listed["total"] == 3  # and the monthly star


# ---- live standings -----------------------------------------------------------------------------
async def test_live_standings_ties_refunds_and_cancellations(h: Harness) -> None:
    (a, _), (b, _), (c, _) = [await person(h, n) for n in ("张三", "李四", "王五")]
    status, created = await create(h)
    assert status == 201
    cid, t = created["id"], now()
    await pay(h, "CT-B1", 10000, b, occurred_at=iso(t - timedelta(minutes=30)))  # B reaches 100.00 first
    await pay(h, "CT-A1", 6000, a, occurred_at=iso(t - timedelta(minutes=20)))
    await pay(h, "CT-A2", 4000, a, occurred_at=iso(t - timedelta(minutes=10)))
    await pay(h, "CT-C1", 20000, c, occurred_at=iso(t - timedelta(minutes=5)))
    await pay(h, "CT-X", 99900, c, occurred_at=iso(t - timedelta(hours=3)))  # before the window
    body = await contest(h, cid)
    assert places(body) == [(1, c.code, 20000), (2, b.code, 10000), (3, a.code, 10000)]
    assert body["standings"][0]["name"] == "王五"  # the admin sees full names
    await send(h, "CT-B1", "refunded", amount_fen=500)
    assert places(await contest(h, cid)) == [(1, c.code, 20000), (2, a.code, 10000), (3, b.code, 9500)]
    await send(h, "CT-C1", "cancelled")
    assert places(await contest(h, cid)) == [(1, a.code, 10000), (2, b.code, 9500)]


async def test_a_contest_created_late_counts_the_orders_already_paid(h: Harness) -> None:
    (a, _), (b, _) = [await person(h, n) for n in ("张三", "李四")]
    t = now()
    await pay(h, "BF-A1", 5000, a, sku="NEW-1", occurred_at=iso(t - timedelta(minutes=50)))
    await pay(h, "BF-A2", 9000, a, sku="OLD-1", occurred_at=iso(t - timedelta(minutes=40)))
    await pay(h, "BF-B1", 7000, b, sku="NEW-1", occurred_at=iso(t - timedelta(minutes=30)))
    await send(h, "BF-B1", "refunded", amount_fen=1000)
    status, body = await create(h, metric="sku_sales", skus=["NEW-1"])
    assert status == 201 and places(body) == [(1, b.code, 6000), (2, a.code, 5000)]
    await pay(h, "BF-A3", 2000, a, sku="NEW-1", occurred_at=iso(t - timedelta(minutes=1)))
    assert places(await contest(h, body["id"])) == [(1, a.code, 7000), (2, b.code, 6000)]


# ---- settlement ---------------------------------------------------------------------------------
async def test_settlement_pays_each_winner_once_and_sends_the_results(h: Harness) -> None:
    (a, ua), (b, ub), (c, uc) = [await person(h, n) for n in ("张三丰", "李四", "王五")]
    t = now()
    await pay(h, "ST-A", 30000, a, occurred_at=iso(t - timedelta(minutes=50)))
    await pay(h, "ST-B", 20000, b, occurred_at=iso(t - timedelta(minutes=40)))
    await pay(h, "ST-C", 10000, c, occurred_at=iso(t - timedelta(minutes=30)))
    status, created = await create(h, title="周末冲刺赛", prizes_fen=PRIZES, starts_at=iso(t - timedelta(hours=1)),
                                   ends_at=iso(t - timedelta(seconds=1)))
    assert status == 201, created
    done = await settled(h, created["id"])
    assert done["winners"] == [{"place": 1, "code": a.code, "prize_fen": 30000},
                               {"place": 2, "code": b.code, "prize_fen": 10000}]
    assert places(done) == [(1, a.code, 30000), (2, b.code, 20000), (3, c.code, 10000)]
    # Settling again, by the job and straight through the domain, changes nothing.
    await run_job(h, "contests")
    assert await h.app[WRITER].run(lambda s: contest_results.settle(s, created["id"], h.clock.now())) is None
    assert await rewards(h) == [(a.id, 30000, f"contest:{created['id']}"), (b.id, 10000, f"contest:{created['id']}")]
    assert (await balance(h, a))["available_fen"] == 30000  # the prize, available at once
    await check_invariants(h)
    # The results reach the audience once each, with masked names; the winners get a notice.
    campaign = done["campaign_id"]
    async def sent() -> bool:
        return (await h.api("GET", f"/campaigns/{campaign}"))[1]["status"] == "done"
    await eventually(sent, timeout=15, what="the results campaign done")
    await h.settled()
    for user in (ua, ub, uc):
        got = received(user, "周末冲刺赛】结果揭晓")
        assert len(got) == 1, user.timeline
        text = got[0]["content"]
        assert "张**" in text and "李*" in text and "王*" in text and "¥300.00" in text and "张三丰" not in text
    assert len(received(ua, "恭喜您在“周末冲刺赛”中获得第1名")) == 1
    assert len(received(ub, "获得第2名")) == 1 and received(uc, "恭喜") == []


async def test_a_new_members_contest_counts_members_still_active_and_pays_nothing(h: Harness) -> None:
    (x, _), (y, _) = [await person(h, n) for n in ("赵六", "钱七")]
    members = [await person(h, f"新人{i}", inviter=x) for i in range(3)]
    await person(h, "新人甲", inviter=y)
    await person(h, "新人乙", inviter=y)
    status, created = await create(h, metric="new_members", ends_at=iso(now() + timedelta(hours=1)))
    assert status == 201, created
    assert places(await contest(h, created["id"])) == [(1, x.code, 3), (2, y.code, 2)]
    _, quitter = members[0]
    assert "确认退出" in await h.say(quitter, "退出")
    await h.say(quitter, "确认退出")
    _, quitter2 = members[1]
    await h.say(quitter2, "退出")
    await h.say(quitter2, "确认退出")
    assert places(await contest(h, created["id"])) == [(1, y.code, 2), (2, x.code, 1)]
    assert (await contest(h, created["id"]))["status"] == "running"
    h.clock.move(hours=1, seconds=1)  # the contest has ended
    done = await settled(h, created["id"])
    assert done["winners"] == [] and places(done) == [(1, y.code, 2), (2, x.code, 1)]
    assert await rewards(h) == []


# ---- 排行 and the monthly star ----------------------------------------------------------------------
async def star(h: Harness) -> dict[str, Any]:
    """This month's star, which the contests job makes."""
    await run_job(h, "contests")
    listed = (await h.api("GET", "/contests"))[1]["contests"]
    [found] = [c for c in listed if (c["source"] or "").startswith("star:")]
    return found


async def test_the_job_makes_this_months_star_once(h: Harness) -> None:
    first = await star(h)
    local = datetime.now(UTC).astimezone(CHINA)
    assert first["source"] == f"star:{local:%Y-%m}" and first["metric"] == "sales"
    assert first["title"] == f"月度推广之星（{local.year}年{local.month}月）"
    assert first["prizes_fen"] == [8800] and first["audience"] == "all" and first["status"] == "running"
    assert first["starts_at"] == f"{local:%Y-%m}-01T00:00:00+08:00"
    await run_job(h, "contests")
    assert [c["id"] for c in (await h.api("GET", "/contests"))[1]["contests"]] == [first["id"]]


async def test_top_shows_this_months_standings_and_the_askers_place(h: Harness) -> None:
    await star(h)
    people = [await person(h, n) for n in ("张三", "李四", "王五", "赵六")]
    for i, (d, _) in enumerate(people[:3]):
        await pay(h, f"TOP-{i}", 10000 * (i + 1), d)
    (_, wang), (_, zhao) = people[2], people[3]
    reply = await h.say(people[0][1], "排行")
    assert "月度推广之星" in reply and "1. 王*  ¥300.00" in reply and "3. 张*  ¥100.00" in reply, reply
    assert "第 3 名" in reply and "张三" not in reply and "月底奖励：第1名 ¥88.00" in reply
    assert "第 1 名" in await h.say(wang, "top")
    assert "还没有销售" in await h.say(zhao, "排行")
    clicked = await h.click(zhao, "TOP")
    assert clicked is not None and "月度推广之星" in clicked["content"]


async def test_exited_distributors_leave_the_standings(h: Harness) -> None:
    await star(h)
    (a, ua), (b, ub) = [await person(h, n) for n in ("张三", "李四")]
    await pay(h, "EX-A", 50000, a)
    await pay(h, "EX-B", 10000, b)
    assert "第 2 名" in await h.say(ub, "排行")
    await h.say(ua, "退出")
    await h.say(ua, "确认退出")
    await pay(h, "EX-A2", 50000, a)  # credited after the exit: still not placed
    reply = await h.say(ub, "排行")
    assert "第 1 名" in reply and "张*" not in reply, reply
