"""Scoped tokens (CONTRACT §4.11, issue 13): every /api route against every scope, the shop's
token in its own lane, the console signed in with a scoped token, and the configuration.

The table-driven test walks the served route table, so a new route is in it at once: it fails
when the route declares no scope, when its family is not in FAMILIES, or when a token outside its
scopes gets anything but 403."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from kit.api import ApiRoute
from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER
from domain.config import ConfigError, load_config
from storage.tables import WITHDRAWALS
from tests.conftest import ADMIN_TOKEN, Harness, make_config
from tests.console_support import serve, sign_in
from tests.money_support import event, seed, send

TOKENS = [
    {"name": "shop", "token": "shop-token-0123456789", "scopes": ["shop"]},
    {"name": "finance", "token": "finance-token-0123456789", "scopes": ["finance"]},
    {"name": "ops", "token": "ops-token-0123456789", "scopes": ["ops"]},
    {"name": "boss", "token": "boss-token-0123456789", "scopes": ["admin"]},
]
TOKEN = {t["name"]: t["token"] for t in TOKENS} | {"admin": ADMIN_TOKEN}
SCOPE_OF_TOKEN = {"shop": "shop", "finance": "finance", "ops": "ops", "boss": "admin", "admin": "admin"}

# Who may use each route family: the first path segment (and, for /distributors/{code}/..., the
# last). A route of a family not listed here fails the table test until someone decides.
FAMILIES: dict[str, set[str]] = {
    "/orders/events": {"shop"},
    "/orders/{order_no}": {"shop", "finance"},
    "/withdrawals": {"finance"},
    "/distributors": {"finance", "ops"},
    "/distributors/ledger": {"finance"},
    "/distributors/adjustments": {"finance"},
    "/distributors/rank": {"admin"},
    "/distributors/inviter": {"admin"},
    "/distributors/rank-changes": {"finance", "ops"},
    "/content-packs": {"ops"},
    "/campaigns": {"ops"},
    "/contests": {"ops"},
    "/tickets": {"ops"},
    "/jobs": {"ops"},
    "/audit": {"admin"},
    "/exports": {"finance"},  # CONTRACT §4.11
    "/risk": {"finance"},  # flags hold a distributor's withdrawals
    "/distributors/suspend": {"finance"},
    "/distributors/reinstate": {"finance"},
    "/settings": {"admin"},  # the programme's rules (CONTRACT §10)
    "/openapi.json": {"shop", "finance", "ops", "admin"},
}


def family(path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[0] == "orders":
        return "/" + "/".join(parts[:2])
    if parts[0] == "distributors" and len(parts) > 2:
        return f"/distributors/{parts[-1]}"
    return "/" + parts[0]


def served_routes(app: web.Application) -> list[ApiRoute]:
    api = next(r.get_info()["app"] for r in app.router.resources() if r.get_info().get("prefix") == "/api")
    routes = [getattr(r.handler, "__self__", None) for r in api.router.routes()]
    assert all(isinstance(r, ApiRoute) for r in routes)
    return routes  # type: ignore[return-value]


def concrete(path: str) -> str:
    """A route's path with its parameters filled by values that name nothing."""
    return re.sub(r"{(\w+)}", lambda m: "999999" if m.group(1) == "id" else "NOSUCH", path)


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    config = make_config(db_url, admin={"tokens": TOKENS}, distribution={"freeze_days": 0, "min_withdraw_fen": 1000})
    async with Harness(config, platform, wechat_server) as harness:
        yield harness


async def test_every_route_declares_a_scope_and_refuses_other_tokens(h: Harness) -> None:
    routes = served_routes(h.app)
    assert len(routes) > 30
    checked = 0
    for route in routes:
        where = f"{route.method} /api{route.path}"
        assert route.scopes, f"{where} declares no scope: give its feature (or the route) scope=..."
        assert family(route.path) in FAMILIES, f"{where}: add its family to FAMILIES with the scopes it should have"
        assert set(route.scopes) == FAMILIES[family(route.path)], where
        for name, token in TOKEN.items():
            allowed = SCOPE_OF_TOKEN[name] == "admin" or SCOPE_OF_TOKEN[name] in route.scopes
            kw: dict[str, Any] = {"json": {}} if route.method != "GET" else {}
            status, body = await h.api(route.method, concrete(route.path), token=token, **kw)
            if allowed:
                assert status not in (401, 403), (where, name, status, body)
            else:
                assert status == 403 and body["error"] == "forbidden", (where, name, status, body)
                assert body["details"]["needs"] == sorted(route.scopes), (where, body)
            checked += 1
    assert checked == len(routes) * len(TOKEN)
    # The document says the same: 403 and the scopes on every operation.
    status, spec = await h.api("GET", "/openapi.json", token=TOKEN["shop"])
    assert status == 200
    for route in routes:
        op = spec["paths"]["/api" + route.path][route.method.lower()]
        assert "403" in op["responses"] and op["x-scopes"] == sorted(route.scopes), route.path


async def test_unknown_tokens_are_401_whatever_the_route(h: Harness) -> None:
    for token in (None, "", "shop-token-012345678", "shop-token-0123456789x", "Bearer", ADMIN_TOKEN.upper()):
        status, body = await h.api("POST", "/orders/events", token=token, json={})
        assert status == 401 and body["error"] == "unauthorized", token
    async with h.http.post(h.url + "/api/jobs/unfreeze/run",  # type: ignore[union-attr]
                           headers={"Authorization": f"Basic {TOKEN['ops']}"}) as resp:
        assert resp.status == 401


async def test_the_shop_posts_orders_and_cannot_approve_withdrawals(h: Harness) -> None:
    d, user = await seed(h)
    status, body = await h.api("POST", "/orders/events", token=TOKEN["shop"],
                               json=event("SO-SCOPE", "paid", amount_fen=100_000, distributor_code=d.code))
    assert status == 200 and body["status"] == "paid", body
    await send(h, "SO-SCOPE", "completed")
    status, order = await h.api("GET", "/orders/SO-SCOPE", token=TOKEN["shop"])
    assert status == 200 and order["status"] == "completed"
    assert "已提交" in await h.say(user, "提现 20")
    async with h.app[SESSIONMAKER]() as session:
        wid = (await session.execute(select(WITHDRAWALS.c.id))).scalar_one()

    status, body = await h.api("POST", f"/withdrawals/{wid}/approve", token=TOKEN["shop"])
    assert status == 403 and body["error"] == "forbidden" and body["details"] == {"needs": ["finance"]}, body
    assert body["message"] == (f"令牌“shop”无权使用 POST /api/withdrawals/{wid}/approve："
                               "需要财务权限（finance），没有做任何更改。")
    for name in ("shop", "ops"):
        status, _ = await h.api("GET", f"/withdrawals/{wid}", token=TOKEN[name])
        assert status == 403
    status, w = await h.api("GET", f"/withdrawals/{wid}", token=TOKEN["finance"])
    assert status == 200 and w["status"] == "pending"  # the refusal changed nothing
    status, w = await h.api("POST", f"/withdrawals/{wid}/approve", token=TOKEN["finance"])
    assert status == 200 and w["status"] == "approved"
    # What a named token changes is recorded in its name.
    status, adj = await h.api("POST", f"/distributors/{d.code}/adjustments", token=TOKEN["finance"],
                              json={"amount_fen": 100, "reason": "补发"})
    assert status == 201, adj
    status, ledger = await h.api("GET", f"/distributors/{d.code}/ledger", token=TOKEN["finance"])
    assert status == 200
    status, _ = await h.api("POST", f"/distributors/{d.code}/rank", token=TOKEN["finance"],
                            json={"rank": "gold", "reason": "x"})
    assert status == 403
    status, _ = await h.api("POST", f"/distributors/{d.code}/rank", token=TOKEN["boss"],
                            json={"rank": "gold", "reason": "年度优秀"})
    assert status == 200
    status, history = await h.api("GET", f"/distributors/{d.code}/rank-changes", token=TOKEN["ops"])
    assert status == 200 and history["changes"][-1]["actor"] == "token:boss", history


# ---- configuration --------------------------------------------------------------------------------
def write(tmp_path: Path, admin: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[database]\nurl = "sqlite+aiosqlite:///x.db"\n' + admin, encoding="utf-8")
    return path


GOOD = '[admin]\ntoken = "admin-token-0123456789"\n'


def token_block(name: str = "shop", token: str = "shop-token-0123456789", scopes: str = '["shop"]') -> str:
    return f'[[admin.tokens]]\nname = "{name}"\ntoken = "{token}"\nscopes = {scopes}\n'


def test_tokens_are_read_from_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + token_block() + token_block("money", "finance-0123456789abc",
                                                                               '["finance", "ops"]')))
    assert [(t.name, t.scopes) for t in config.admin.tokens] == [("shop", ("shop",)), ("money", ("finance", "ops"))]


@pytest.mark.parametrize("blocks, words", [
    (token_block() + token_block(token="other-token-0123456789"), "used twice"),
    (token_block("admin"), "used twice"),
    (token_block() + token_block("b"), "differ"),
    (token_block(token="admin-token-0123456789"), "differ"),
    (token_block(scopes='["root"]'), "admin.tokens"),
    (token_block(scopes="[]"), "admin.tokens"),
    (token_block(token="short"), "admin.tokens"),
    (token_block(name="a b"), "admin.tokens"),
], ids=["same-name", "admin-name", "same-token", "admin-token", "unknown-scope", "no-scope", "short", "bad-name"])
def test_bad_tokens_stop_start_up(tmp_path: Path, blocks: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, GOOD + blocks))


# ---- the console --------------------------------------------------------------------------------
@pytest.fixture
async def served_tokens(tmp_path: Path) -> AsyncIterator[tuple[str, web.Application]]:
    async with serve(tmp_path, admin={"tokens": TOKENS}) as found:
        yield found


async def nav_links(page: Any) -> list[str]:
    return [t.strip() for t in await page.get_by_role("navigation", name="主导航").get_by_role("link").all_inner_texts()]


async def test_an_ops_session_sees_only_its_pages(served_tokens: tuple[str, web.Application], page: Any) -> None:
    base, _ = served_tokens
    await sign_in(page, base, TOKEN["ops"])
    assert await nav_links(page) == ["概览", "分销员", "推广统计", "内容", "活动", "比赛", "客服"]
    response = await page.goto(base + "/admin/withdrawals")
    assert response is not None and response.status == 403
    assert "无权" in await page.get_by_role("status").inner_text()
    assert "提现" not in await nav_links(page)
    response = await page.goto(base + "/admin/audit")
    assert response is not None and response.status == 403
    response = await page.goto(base + "/admin/campaigns")
    assert response is not None and response.status == 200
    await page.get_by_role("button", name="退出登录").click()
    await sign_in(page, base, ADMIN_TOKEN)
    assert await nav_links(page) == ["概览", "分销员", "推广统计", "订单", "佣金记录", "提现", "内容", "活动", "比赛", "客服",
                                     "风险", "分销设置", "员工", "审计日志"]
    await page.get_by_role("link", name="审计日志").click()
    rows = page.get_by_role("table", name="审计日志").get_by_role("row")
    assert "ops" in await rows.nth(2).inner_text()  # the ops session's sign-in (newest first: the admin's, then ops')
