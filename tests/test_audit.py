"""The audit trail (CONTRACT §4.11, issue 13): every request that changes or tries to change
something, by a known token, over /api and the console; GET /api/audit newest first, 50 a page;
the row written in the unit of work of the change it records. Both databases."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from kit.auditing import Audit
from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER, WRITER
from domain import audit_log as audit
from storage.tables import AUDIT_ENTRIES, WITHDRAWALS
from storage.writer import hooked
from tests.conftest import Harness, make_config
from tests.money_support import event, seed, send
from tests.test_scopes import TOKEN, TOKENS, concrete, served_routes

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    config = make_config(db_url, admin={"tokens": TOKENS}, distribution={"freeze_days": 0, "min_withdraw_fen": 1000})
    async with Harness(config, platform, wechat_server) as harness:
        yield harness


async def newest(h: Harness) -> dict[str, Any]:
    status, body = await h.api("GET", "/audit?page=1")
    assert status == 200, body
    return body["entries"][0]


async def count(h: Harness) -> int:
    async with h.app[SESSIONMAKER]() as session:
        return (await session.execute(select(func.count()).select_from(AUDIT_ENTRIES))).scalar_one()


async def test_every_mutating_route_is_recorded_even_when_refused(h: Harness) -> None:
    routes = [r for r in served_routes(h.app) if r.method in MUTATING]
    assert len(routes) >= 12
    for route in routes:
        path = concrete(route.path)
        status, _ = await h.api(route.method, path, json={})
        entry = await newest(h)
        assert (entry["method"], entry["path"], entry["status"], entry["token_name"]) == (
            route.method, "/api" + path, status, "admin"), (route.path, entry)
        if "{id}" in route.path or "{code}" in route.path or "{name}" in route.path:
            assert entry["object_id"] in ("999999", "NOSUCH"), entry
    before = await count(h)
    for token in (None, "wrong-token-0123456789"):  # anonymous callers cannot fill the table
        status, _ = await h.api("POST", "/orders/events", token=token, json={})
        assert status == 401
    await h.api("GET", "/withdrawals")  # reads are not recorded
    assert await count(h) == before


async def test_each_family_records_who_changed_what(h: Harness) -> None:
    d, user = await seed(h)
    await h.api("POST", "/orders/events", token=TOKEN["shop"],
                json=event("SO-AUD", "paid", amount_fen=100_000, distributor_code=d.code))
    entry = await newest(h)  # written in the order events' batch, with the order
    assert (entry["token_name"], entry["status"], entry["object_id"]) == ("shop", 200, "SO-AUD"), entry
    assert entry["summary"].startswith("订单事件：付款（paid，"), entry
    status, _ = await h.api("POST", "/orders/events", token=TOKEN["shop"],  # more than was paid
                            json=event("SO-AUD", "refunded", amount_fen=10**9))
    entry = await newest(h)  # refused in its batch: recorded after the answer
    assert (status, entry["status"], entry["object_id"]) == (422, 422, "SO-AUD"), entry
    await send(h, "SO-AUD", "completed")
    assert "已提交" in await h.say(user, "提现 20")
    async with h.app[SESSIONMAKER]() as session:
        wid = (await session.execute(select(WITHDRAWALS.c.id))).scalar_one()
    soon = datetime.now(UTC).isoformat()
    later = datetime(2099, 1, 1, tzinfo=UTC).isoformat()
    # (token, method, path, body, status, object id; None: the created object's id from the answer)
    steps: list[tuple[str, str, str, Any, int, str | None]] = [
        ("shop", "POST", f"/withdrawals/{wid}/approve", None, 403, str(wid)),
        ("finance", "POST", f"/withdrawals/{wid}/approve", None, 200, str(wid)),
        ("finance", "POST", f"/withdrawals/{wid}/reject", {"reason": "重复"}, 409, str(wid)),
        ("finance", "POST", f"/distributors/{d.code}/adjustments", {"amount_fen": 100, "reason": "补发"}, 201, d.code),
        ("boss", "POST", f"/distributors/{d.code}/rank", {"rank": "gold", "reason": "年度优秀"}, 200, d.code),
        ("ops", "POST", "/campaigns", {"title": "通知", "kind": "notice", "text": "你好", "send_at": later}, 201, None),
        ("ops", "POST", "/contests", {"title": "挑战赛", "metric": "sales", "starts_at": soon, "ends_at": later,
                                      "prizes_fen": [], "audience": "all"}, 201, None),
        ("ops", "POST", "/tickets/999999/close", None, 404, "999999"),
        ("ops", "POST", "/jobs/unfreeze/run", None, 202, "unfreeze"),
        ("ops", "POST", "/content-packs", None, 400, None),
    ]
    for name, method, path, body, expected, object_id in steps:
        status, answer = await h.api(method, path, token=TOKEN[name], **({"json": body} if body is not None else {}))
        assert status == expected, (path, answer)
        entry = await newest(h)
        if object_id is None and status < 300:
            object_id = str(answer["id"])
        assert (entry["token_name"], entry["method"], entry["path"], entry["status"], entry["object_id"]) == (
            name, method, "/api" + path, expected, object_id), (path, entry)
        assert entry["summary"] and entry["at"].endswith("+08:00"), entry
    status, page = await h.api("GET", "/audit?page=1", token=TOKEN["finance"])
    assert status == 403


async def test_pages_are_newest_first_fifty_at_a_time(h: Harness) -> None:
    for n in range(53):
        status, _ = await h.api("POST", f"/campaigns/{n + 1}/cancel", token=TOKEN["ops"])
        assert status == 404
    status, first = await h.api("GET", "/audit?page=1")
    assert status == 200 and first["total"] == 53 and len(first["entries"]) == 50
    assert first["entries"][0]["path"] == "/api/campaigns/53/cancel"
    status, second = await h.api("GET", "/audit?page=2")
    assert [e["path"] for e in second["entries"]] == [f"/api/campaigns/{n}/cancel" for n in (3, 2, 1)]
    assert set(second["entries"][0]) >= {"at", "token_name", "method", "path", "status", "summary"}
    status, about = await h.api("GET", "/audit?object=7")
    assert status == 200 and about["total"] == 1 and about["entries"][0]["object_id"] == "7"
    for bad in ("page=0", "page=x"):
        status, _ = await h.api("GET", f"/audit?{bad}")
        assert status == 400


async def test_the_row_commits_with_the_change_or_not_at_all(h: Harness) -> None:
    """The Writer runs the request's hook inside the request's own units only."""
    writer = h.app[WRITER]

    def record_of(summary: str) -> Audit:
        return Audit(audit.Entry(at=datetime.now(UTC), token_name="admin", actor="admin", method="POST",
                                 path="/api/x", status=200, summary=summary))

    async def summaries() -> list[str]:
        async with h.app[SESSIONMAKER]() as session:
            return list((await session.execute(select(AUDIT_ENTRIES.c.summary).order_by(AUDIT_ENTRIES.c.id))).scalars())

    kept = record_of("kept")
    with hooked(kept):
        await writer.run(lambda s: s.execute(WITHDRAWALS.update().where(WITHDRAWALS.c.id < 0).values(reason="x")))
        await writer.run(lambda s: None)  # a second unit of the same request adds no second row
    assert kept.row_id is not None and await summaries() == ["kept"]

    def failing(session: Any) -> None:
        raise LookupError("the change failed")

    lost = record_of("lost")
    with hooked(lost), pytest.raises(LookupError):
        await writer.run(failing)
    assert lost.row_id is None and await summaries() == ["kept"]

    other = record_of("not in another task")
    with hooked(other):
        await asyncio.create_task(writer.run(lambda s: None))  # e.g. a group commit's batch
    assert other.row_id is None and await summaries() == ["kept"]


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


async def console(h: Harness, token: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get(h.url + "/admin/") as resp:
        login = csrf(await resp.text())
    async with http.post(h.url + "/admin/login", data={"csrf_token": login, "token": token},
                         allow_redirects=False) as resp:
        assert resp.status == 303
    return http


async def test_console_forms_are_recorded_with_what_the_admin_was_told(h: Harness) -> None:
    d, user = await seed(h)
    await h.api("POST", "/orders/events", json=event("SO-CON", "paid", amount_fen=100_000, distributor_code=d.code))
    await send(h, "SO-CON", "completed")
    assert "已提交" in await h.say(user, "提现 20")
    async with h.app[SESSIONMAKER]() as session:
        wid = (await session.execute(select(WITHDRAWALS.c.id))).scalar_one()
    ops = await console(h, TOKEN["ops"])
    finance = await console(h, TOKEN["finance"])
    try:
        entry = await newest(h)
        assert (entry["token_name"], entry["path"], entry["summary"]) == ("finance", "/admin/login", "登录后台")
        async with ops.get(h.url + "/admin/campaigns") as resp:
            token = csrf(await resp.text())
        async with ops.post(h.url + f"/admin/withdrawals/{wid}", data={"csrf_token": token, "decision": "approve"},
                            allow_redirects=False) as resp:
            assert resp.status == 403
        entry = await newest(h)
        assert (entry["token_name"], entry["status"], entry["object_id"]) == ("ops", 403, str(wid)), entry
        async with finance.get(h.url + "/admin/withdrawals") as resp:
            assert resp.status == 200
            token = csrf(await resp.text())
        async with finance.post(h.url + f"/admin/withdrawals/{wid}", data={"csrf_token": token, "decision": "approve"},
                                allow_redirects=False) as resp:
            assert resp.status == 303
        entry = await newest(h)
        assert (entry["token_name"], entry["method"], entry["path"], entry["status"], entry["object_id"]) == (
            "finance", "POST", f"/admin/withdrawals/{wid}", 303, str(wid)), entry
        assert entry["summary"] == f"申请 {wid} 已批准。" and entry["actor"].startswith("console:")
        assert entry["actor"].endswith(":finance")
        async with finance.get(h.url + "/admin/audit") as resp:
            assert resp.status == 403
    finally:
        await ops.close()
        await finance.close()
    admin = await console(h, TOKEN["admin"])
    try:
        async with admin.get(h.url + "/admin/withdrawals") as resp:
            assert f'href="/admin/audit?object={wid}"' in await resp.text()  # the history links its rows
        async with admin.get(h.url + f"/admin/audit?object={wid}") as resp:
            html = await resp.text()
            assert resp.status == 200 and f"申请 {wid} 已批准。" in html and "审计日志" in html
    finally:
        await admin.close()


async def test_rows_written_together_get_their_own_ids_in_order(h: Harness) -> None:
    """record_many's ids are its rows' (a row is corrected by its id once its answer is known),
    on SQLite too, where it writes them in one executemany and reads their ids after."""
    at = datetime.now(UTC)

    def write(s: Any) -> list[int]:
        audit.record_many(s, [audit.Entry(at, "before", "t", "POST", "/api/x", 200, "earlier row")])
        return audit.record_many(s, [audit.Entry(at, "batch", "t", "POST", f"/api/{n}", 200, f"row {n}")
                                     for n in range(25)])
    ids = await h.app[WRITER].run(write)
    async with h.app[SESSIONMAKER]() as session:
        paths = dict((await session.execute(select(AUDIT_ENTRIES.c.id, AUDIT_ENTRIES.c.path)
                                            .where(AUDIT_ENTRIES.c.id.in_(ids)))).all())
    assert [paths[i] for i in ids] == [f"/api/{n}" for n in range(25)]
