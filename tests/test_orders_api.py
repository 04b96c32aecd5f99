"""POST /api/orders/events and GET /api/orders/{order_no} over real HTTP, on both databases:
the worked examples of CONTRACT §3, the state machine, idempotency and every refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sandbox.platform import Platform
from tests.conftest import ON_SQLITE
from tests.money_support import (
    balance,
    check_invariants,
    event,
    money_harness,
    pay,
    post_event,
    seed,
    send,
    snapshot,
)

GOLD = {"key": "gold", "name": "黄金合伙人", "rates": [0.15, 0.05, 0.02], "min_sales_fen": 1000000,
        "min_team_size": 10}
JUNIOR = {"key": "junior", "name": "初级推广员", "rates": [0.10, 0.03, 0.01]}


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    async with money_harness(db_url, platform, wechat_server, freeze_days=7) as harness:
        yield harness


def shares(answer: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    return [(c["distributor_code"], c["depth"], c["amount_fen"], c["state"]) for c in answer["commissions"]]


async def test_worked_example_junior_two_levels(h: Any) -> None:
    inviter, _ = await seed(h)
    seller, _ = await seed(h, inviter=inviter)
    answer = await pay(h, "SO1001", 12900, seller)
    assert answer["order_no"] == "SO1001" and answer["status"] == "paid" and answer["duplicate"] is False
    assert shares(answer) == [(seller.code, 0, 1290, "pending"), (inviter.code, 1, 387, "pending")]
    assert await balance(h, seller) == {"pending_fen": 1290, "available_fen": 0, "withdrawing_fen": 0,
                                        "withdrawn_fen": 0}
    assert (await balance(h, inviter))["pending_fen"] == 387
    status, ledger = await h.api("GET", f"/distributors/{seller.code}/ledger")
    assert status == 200
    [entry] = ledger["entries"]
    assert entry["kind"] == "commission" and entry["amount_fen"] == 1290 and entry["order_no"] == "SO1001"
    assert entry["created_at"].endswith("+08:00") and isinstance(entry["id"], int)
    await check_invariants(h)


async def test_same_event_twice_is_answered_alike_and_changes_nothing(h: Any) -> None:
    seller, _ = await seed(h)
    body = event("SO2", "paid", amount_fen=5000, distributor_code=seller.code)
    s1, first = await post_event(h, body)
    before = await snapshot(h)
    s2, again = await post_event(h, body)
    assert s1 == s2 == 200
    assert again == {**first, "duplicate": True}
    assert await snapshot(h) == before
    # Also when the two arrive together.
    body = event("SO3", "paid", amount_fen=5000, distributor_code=seller.code)
    answers = await asyncio.gather(*(post_event(h, body) for _ in range(5)))
    assert sorted(a[1]["duplicate"] for a in answers) == [False, True, True, True, True]
    assert (await balance(h, seller))["pending_fen"] == 1000
    await check_invariants(h)


async def test_lifecycle_and_history(h: Any) -> None:
    seller, _ = await seed(h)
    await pay(h, "SO4", 10000, seller, sku="SKU-1", buyer_openid="o-buyer",
              occurred_at="2026-11-25T10:00:00+08:00")
    assert (await send(h, "SO4", "shipped"))["status"] == "shipped"
    done = await send(h, "SO4", "completed")
    assert done["status"] == "completed" and shares(done) == [(seller.code, 0, 1000, "pending")]
    status, order = await h.api("GET", "/orders/SO4")
    assert status == 200
    assert [x["type"] for x in order["history"]] == ["paid", "shipped", "completed"]
    assert order["paid_at"] == "2026-11-25T10:00:00+08:00" and order["sku"] == "SKU-1"
    assert order["distributor_code"] == seller.code
    assert order["commissions"][0]["unfreeze_at"] is not None
    status, body = await h.api("GET", "/orders/NOPE")
    assert status == 404 and body["error"] == "not_found"


@pytest.mark.parametrize("body, code", [
    ({"order_no": "X", "type": "paid", "amount_fen": 1, "distributor_code": "AAAAAA"}, 400),  # no event_id
    ({"event_id": "e", "order_no": "X", "type": "paid", "amount_fen": "100", "distributor_code": "A"}, 400),
    ({"event_id": "e", "order_no": "X", "type": "paid", "amount_fen": 12.5, "distributor_code": "A"}, 400),
    ({"event_id": "e", "order_no": "X", "type": "paid", "amount_fen": True, "distributor_code": "A"}, 400),
    ({"event_id": "e", "order_no": "X", "type": "paid", "amount_fen": 100}, 400),  # no distributor_code
    ({"event_id": 7, "order_no": "X", "type": "paid", "amount_fen": 100, "distributor_code": "A"}, 400),
    ({"event_id": "e", "order_no": "X", "type": "refunded"}, 400),  # refund without amount
    ({"event_id": "e", "order_no": "X", "type": "paid", "amount_fen": 0, "distributor_code": "A"}, 422),
    ({"event_id": "e", "order_no": "X", "type": "paid", "amount_fen": -5, "distributor_code": "A"}, 422),
    ({"event_id": "e", "order_no": "X", "type": "teleported"}, 422),
    ({"event_id": "", "order_no": "X", "type": "shipped"}, 422),
    ({"event_id": "e", "order_no": "X", "type": "shipped", "occurred_at": "yesterday"}, 422),
    ({"event_id": "e", "order_no": "X", "type": "shipped", "occurred_at": "2026-11-25T10:00:00"}, 422),
    ({"event_id": "e", "order_no": "X", "type": "shipped", "occurred_at": "0001-01-01T00:00:00+08:00"}, 422),  # no UTC
    ({"event_id": "e", "order_no": "X", "type": "shipped", "occurred_at": "9999-12-31T23:00:00-02:00"}, 422),
])
@ON_SQLITE
async def test_bad_event_bodies(h: Any, body: dict[str, Any], code: int) -> None:
    seller, _ = await seed(h)
    await pay(h, "SO-OK", 1000, seller)
    before = await snapshot(h)
    status, answer = await post_event(h, body)
    assert status == code, answer
    assert set(answer) == {"error", "message", "details"} and answer["details"]
    assert await snapshot(h) == before


async def test_malformed_json_and_auth(h: Any) -> None:
    status, body = await h.api("POST", "/orders/events", data=b"{not json")
    assert status == 400 and body["error"] == "malformed_json"
    status, body = await h.api("POST", "/orders/events", json=[1, 2])
    assert status == 400
    status, body = await h.api("POST", "/orders/events", json={}, token="wrong")
    assert status == 401


async def test_refusals_store_nothing(h: Any) -> None:
    seller, _ = await seed(h)
    await pay(h, "SO5", 10000, seller)
    before = await snapshot(h)
    cases = [
        (event("SO6", "paid", amount_fen=100, distributor_code="ZZZZZZ"), 422, "unknown_distributor"),
        (event("SO-MISSING", "shipped"), 422, "unknown_order"),
        (event("SO-MISSING", "refunded", amount_fen=10), 422, "unknown_order"),
        (event("SO5", "paid", amount_fen=100, distributor_code=seller.code), 409, "order_exists"),
        (event("SO5", "refunded", amount_fen=10001), 422, "refund_too_large"),
    ]
    for body, code, error in cases:
        status, answer = await post_event(h, body)
        assert (status, answer["error"]) == (code, error), answer
        assert answer["message"]
        assert await snapshot(h) == before
    # A refused event_id is not burnt: the same id works once the event makes sense.
    body = event("SO7", "paid", amount_fen=100, distributor_code="ZZZZZZ")
    assert (await post_event(h, body))[0] == 422
    body["distributor_code"] = seller.code
    assert (await post_event(h, body))[0] == 200


async def test_impossible_transitions(h: Any) -> None:
    seller, _ = await seed(h)
    await pay(h, "SO8", 1000, seller)
    await send(h, "SO8", "completed")
    for kind in ("shipped", "completed"):
        before = await snapshot(h)
        status, body = await post_event(h, event("SO8", kind))
        assert status == 422 and body["error"] == "invalid_transition", body
        assert await snapshot(h) == before
    await send(h, "SO8", "cancelled")
    for kind, extra in (("cancelled", {}), ("refunded", {"amount_fen": 1}), ("completed", {})):
        status, body = await post_event(h, event("SO8", kind, **extra))
        assert status == 422, body
    await pay(h, "SO9", 1000, seller)
    await send(h, "SO9", "refunded", amount_fen=1000)
    status, body = await post_event(h, event("SO9", "shipped"))
    assert status == 422 and "refunded" in body["message"]


async def test_rates_are_the_receivers_own_rank(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, max_levels=3, ranks=[JUNIOR, GOLD]) as h:
        top, _ = await seed(h, rank="junior")
        gold, _ = await seed(h, inviter=top, rank="gold")
        seller, _ = await seed(h, inviter=gold, rank="junior")
        answer = await pay(h, "SO10", 10000, seller)
        assert shares(answer) == [(seller.code, 0, 1000, "pending"), (gold.code, 1, 500, "pending"),
                                  (top.code, 2, 100, "pending")]
        answer = await pay(h, "SO11", 10000, gold)
        assert shares(answer) == [(gold.code, 0, 1500, "pending"), (top.code, 1, 300, "pending")]


@pytest.mark.parametrize("levels, expected", [(1, [1290]), (2, [1290, 387]), (3, [1290, 387, 129])])
async def test_max_levels(db_url: str, platform: Platform, wechat_server: TestServer, levels: int,
                          expected: list[int]) -> None:
    async with money_harness(db_url, platform, wechat_server, max_levels=levels, ranks=[JUNIOR]) as h:
        a, _ = await seed(h)
        b, _ = await seed(h, inviter=a)
        c, _ = await seed(h, inviter=b)
        d, _ = await seed(h, inviter=c)
        answer = await pay(h, "SO12", 12900, d)
        assert [x["amount_fen"] for x in answer["commissions"]] == expected
        assert [x["distributor_code"] for x in answer["commissions"]] == [d.code, c.code, b.code][:levels]
        assert (await balance(h, a))["pending_fen"] == 0


async def test_self_purchase(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, self_purchase=False) as h:
        inviter, inviter_user = await seed(h)
        seller, user = await seed(h, inviter=inviter)
        answer = await pay(h, "SO13", 12900, seller, buyer_openid=user.openid)
        assert shares(answer) == [(inviter.code, 1, 387, "pending")]
        answer = await pay(h, "SO14", 12900, seller, buyer_openid="someone-else")
        assert [x["amount_fen"] for x in answer["commissions"]] == [1290, 387]
        # An inviter buying through their invitee's link is the buyer too.
        answer = await pay(h, "SO14B", 12900, seller, buyer_openid=inviter_user.openid)
        assert shares(answer) == [(seller.code, 0, 1290, "pending")]
    async with money_harness(db_url, platform, wechat_server, self_purchase=True) as h:
        seller, user = await seed(h)
        answer = await pay(h, "SO15", 12900, seller, buyer_openid=user.openid)
        assert [x["amount_fen"] for x in answer["commissions"]] == [1290]


async def test_monthly_cap(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, monthly_cap_fen=2000) as h:
        inviter, _ = await seed(h)
        seller, _ = await seed(h, inviter=inviter)
        assert [x["amount_fen"] for x in (await pay(h, "SO16", 12900, seller))["commissions"]] == [1290, 387]
        # 710 left under the cap for the seller; the inviter is far from it.
        assert [x["amount_fen"] for x in (await pay(h, "SO17", 12900, seller))["commissions"]] == [710, 387]
        answer = await pay(h, "SO18", 12900, seller)
        assert shares(answer) == [(inviter.code, 1, 387, "pending")]
        assert (await balance(h, seller))["pending_fen"] == 2000
        # A refund gives room back (the cap counts what is kept).
        await send(h, "SO16", "refunded", amount_fen=12900)
        assert [x["amount_fen"] for x in (await pay(h, "SO19", 12900, seller))["commissions"]] == [1290, 387]
        await check_invariants(h)


async def test_freeze_days_zero_is_available_in_the_completed_answer(
        db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0) as h:
        inviter, _ = await seed(h)
        seller, _ = await seed(h, inviter=inviter)
        await pay(h, "SO20", 12900, seller)
        done = await send(h, "SO20", "completed")
        assert shares(done) == [(seller.code, 0, 1290, "available"), (inviter.code, 1, 387, "available")]
        assert await balance(h, seller) == {"pending_fen": 0, "available_fen": 1290, "withdrawing_fen": 0,
                                            "withdrawn_fen": 0}
        await check_invariants(h)


async def test_partial_refunds_reverse_in_proportion(h: Any) -> None:
    inviter, _ = await seed(h)
    seller, _ = await seed(h, inviter=inviter)
    await pay(h, "SO21", 12900, seller)  # 1290 and 387
    await send(h, "SO21", "refunded", amount_fen=4300)  # R/A = 1/3
    assert (await balance(h, seller))["pending_fen"] == 1290 - 430
    assert (await balance(h, inviter))["pending_fen"] == 387 - 129
    await send(h, "SO21", "refunded", amount_fen=1)  # floor(1290*4301/12900) = 430, floor(387*4301/12900)=129
    assert (await balance(h, seller))["pending_fen"] == 860
    await send(h, "SO21", "shipped")  # a partial refund keeps the order going
    last = await send(h, "SO21", "refunded", amount_fen=12900 - 4301)
    assert last["status"] == "refunded"
    assert [c["state"] for c in last["commissions"]] == ["reversed", "reversed"]
    assert (await balance(h, seller))["pending_fen"] == 0 and (await balance(h, inviter))["pending_fen"] == 0
    status, ledger = await h.api("GET", f"/distributors/{seller.code}/ledger")
    assert [e["amount_fen"] for e in ledger["entries"]] == [1290, -430, -860]
    await check_invariants(h)


async def test_cancel_after_withdrawal_leaves_available_negative(
        db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0, min_withdraw_fen=100) as h:
        seller, user = await seed(h)
        await pay(h, "SO22", 20000, seller)
        await send(h, "SO22", "completed")
        assert "已提交" in await h.say(user, "提现 20.00")
        await send(h, "SO22", "cancelled")
        assert await balance(h, seller) == {"pending_fen": 0, "available_fen": -2000, "withdrawing_fen": 2000,
                                            "withdrawn_fen": 0}
        # Later commission nets against the debt.
        await pay(h, "SO23", 30000, seller)
        await send(h, "SO23", "completed")
        assert (await balance(h, seller))["available_fen"] == 1000
        assert "不足" in await h.say(user, "提现 10.01")
        await check_invariants(h)


async def test_exited_distributor_earns_nothing_more(h: Any) -> None:
    inviter, _ = await seed(h)
    seller, user = await seed(h, inviter=inviter)
    assert "确认退出" in await h.say(user, "退出")
    assert "已退出" in await h.say(user, "确认退出")
    answer = await pay(h, "SO24", 12900, seller)
    assert shares(answer) == [(inviter.code, 1, 387, "pending")]
    assert (await balance(h, seller))["pending_fen"] == 0
    status, order = await h.api("GET", "/orders/SO24")
    assert status == 200 and order["distributor_code"] == seller.code


async def test_openapi_describes_the_order_routes(h: Any) -> None:
    status, spec = await h.api("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    for path, method in [("/api/orders/events", "post"), ("/api/orders/{order_no}", "get"),
                         ("/api/distributors/{code}/ledger", "get"), ("/api/withdrawals", "get"),
                         ("/api/withdrawals/{id}/approve", "post"), ("/api/withdrawals/{id}/reject", "post")]:
        assert method in spec["paths"][path], path
    events = spec["paths"]["/api/orders/events"]["post"]
    assert {"400", "409", "422"} <= set(events["responses"])
    ref = events["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    kinds = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["oneOf"]
    for kind in kinds:
        required = spec["components"]["schemas"][kind["$ref"].rsplit("/", 1)[1]]["required"]
        assert {"event_id", "order_no", "type"} <= set(required)
