"""GET /api/distributors and /api/distributors/{code}: bearer auth, the contract's JSON shapes."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from kit.app_keys import SESSIONMAKER
from storage.models import Distributor
from tests.conftest import ON_SQLITE, ADMIN_TOKEN, Harness

FIELDS = {"code", "openid", "name", "phone", "status", "rank", "inviter_code", "registered_at", "balance"}
BALANCE = {"pending_fen", "available_fen", "withdrawing_fen", "withdrawn_fen"}


def assert_error(status: int, body: object, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error", "message", "details"}, body
    assert isinstance(body["error"], str) and isinstance(body["message"], str) and body["message"]
    if code is not None:
        assert body["error"] == code


@ON_SQLITE
@pytest.mark.parametrize("token", [None, "", "wrong", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], "ｔｅｓｔ"],
                         ids=["none", "empty", "wrong", "longer", "shorter", "non-ascii"])
@pytest.mark.parametrize("path", ["/distributors", "/distributors/K7QF2M", "/openapi.json", "/no-such-route"])
async def test_without_the_token_everything_is_401_json(harness: Harness, token: str | None, path: str) -> None:
    status, body = await harness.api("GET", path, token=token)
    assert_error(status, body, 401, "unauthorized")


async def test_other_authorization_schemes_are_401(harness: Harness) -> None:
    assert harness.http is not None
    for header in (f"Basic {ADMIN_TOKEN}", f"bearer{ADMIN_TOKEN}", ADMIN_TOKEN, f"Bearer  {ADMIN_TOKEN}"):
        async with harness.http.get(harness.url + "/api/distributors", headers={"Authorization": header}) as r:
            body = await r.json()
            assert_error(r.status, body, 401)
            assert "Authorization: Bearer" in body["message"] and "令牌" in body["message"]


async def test_raw_non_utf8_authorization_bytes_are_401(harness: Harness) -> None:
    host, port = harness.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /api/distributors HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    head = await reader.readline()
    writer.close()
    assert head.split()[1] == b"401", head


async def test_one_distributor_has_exactly_the_contract_fields(harness: Harness) -> None:
    alice, bob = harness.user(), harness.user()
    code_a = await harness.register(alice, "13800138000", "张三")
    code_b = await harness.register(bob, "13900139000", "李四", scene=code_a)
    status, body = await harness.api("GET", f"/distributors/{code_b}")
    assert status == 200
    assert set(body) == FIELDS and set(body["balance"]) == BALANCE
    assert body["code"] == code_b and body["openid"] == bob.openid
    assert (body["name"], body["phone"], body["status"], body["rank"]) == ("李四", "13900139000", "active", "junior")
    assert body["inviter_code"] == code_a
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00", body["registered_at"]), body["registered_at"]
    registered = datetime.fromisoformat(body["registered_at"])
    assert abs(registered - datetime.now(UTC)) < timedelta(minutes=1)
    assert all(isinstance(v, int) and v == 0 for v in body["balance"].values())
    status, body = await harness.api("GET", f"/distributors/{code_a}")
    assert body["inviter_code"] is None


async def test_lookup_by_code_ignores_case(harness: Harness) -> None:
    code = await harness.register(harness.user(), "13800138000", "张三")
    status, body = await harness.api("GET", f"/distributors/{code.lower()}")
    assert status == 200 and body["code"] == code


@ON_SQLITE
@pytest.mark.parametrize("code", ["ZZZZZZ", "nope", "%E4%B8%AD"])
async def test_an_unknown_code_is_404_json(harness: Harness, code: str) -> None:
    status, body = await harness.api("GET", f"/distributors/{code}")
    assert_error(status, body, 404, "not_found")


async def test_find_by_openid_and_by_code(harness: Harness) -> None:
    alice, bob = harness.user(), harness.user()
    code_a = await harness.register(alice, "13800138000", "张三")
    await harness.register(bob, "13900139000", "李四")
    status, body = await harness.api("GET", "/distributors", params={"openid": bob.openid})
    assert status == 200 and body["total"] == 1
    [d] = body["distributors"]
    assert set(d) == FIELDS and d["name"] == "李四"
    status, body = await harness.api("GET", "/distributors", params={"code": code_a.lower()})
    assert body["total"] == 1 and body["distributors"][0]["openid"] == alice.openid
    status, body = await harness.api("GET", "/distributors", params={"openid": "o-nobody"})
    assert (status, body) == (200, {"distributors": [], "total": 0})
    status, body = await harness.api("GET", "/distributors", params={"openid": bob.openid, "code": code_a})
    assert body["total"] == 0


async def test_pages_of_fifty_with_the_total(harness: Harness) -> None:
    now = datetime.now(UTC)
    async with harness.app[SESSIONMAKER]() as session, session.begin():
        for i in range(57):
            session.add(Distributor(code=f"P{i:05d}"[:6].replace("0", "A").replace("1", "B"), openid=f"o{i:03d}",
                                    phone=f"1380000{i:04d}", name=f"用户{i}", rank="junior", status="active",
                                    registered_at=now + timedelta(seconds=i)))
    status, first = await harness.api("GET", "/distributors")
    assert status == 200 and first["total"] == 57 and len(first["distributors"]) == 50
    status, page1 = await harness.api("GET", "/distributors", params={"page": "1"})
    assert page1 == first
    status, second = await harness.api("GET", "/distributors", params={"page": "2"})
    assert second["total"] == 57 and len(second["distributors"]) == 7
    openids = [d["openid"] for d in first["distributors"] + second["distributors"]]
    assert sorted(openids) == [f"o{i:03d}" for i in range(57)]
    status, third = await harness.api("GET", "/distributors", params={"page": "3"})
    assert (status, third) == (200, {"distributors": [], "total": 57})


@ON_SQLITE
@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5", ""])
async def test_a_bad_page_is_400_json(harness: Harness, page: str) -> None:
    status, body = await harness.api("GET", "/distributors", params={"page": page})
    assert_error(status, body, 400)
    assert "page" in body["message"]


async def test_the_openapi_description_lists_the_distributor_routes(harness: Harness) -> None:
    status, spec = await harness.api("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/api/distributors", "/api/distributors/{code}"} <= set(spec["paths"])
    assert "401" in spec["paths"]["/api/distributors/{code}"]["get"]["responses"]


async def test_an_unknown_api_route_is_404_json(harness: Harness) -> None:
    status, body = await harness.api("GET", "/nothing-here")
    assert_error(status, body, 404, "not_found")
    assert body["message"] == "没有这个接口：GET /api/nothing-here。"
    status, body = await harness.api("DELETE", "/distributors/K7QF2M")
    assert status == 405 and body["error"] == "method_not_allowed"
    assert body["message"] == "/api/distributors/K7QF2M 不接受 DELETE 请求。"


async def test_a_page_far_beyond_the_end_is_not_a_server_error(harness: Harness) -> None:
    for page in ("1000000", "99999999999999999999", "9" * 5000):
        status, body = await harness.api("GET", "/distributors", params={"page": page})
        if status == 200:
            assert body == {"distributors": [], "total": 0}
        else:
            assert_error(status, body, 400)
