"""Staff accounts (issue 23, CONTRACT §10): `distbot staff add|list|disable` (through main()); a
person signs in with 账号 and password through the sign-in form and has their roles' scopes; the
audit trail names them; other roles or a disabled account end their session at its next request;
a wrong password, an unknown or disabled account are refused like a wrong token. Over HTTP on
both databases, and the 员工 page in Chromium."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest

from app import cli
from tests.conftest import ADMIN_TOKEN, Harness
from tests.console_support import WIDTHS, chromium_page, csrf_of, serve, sign_in

PASSWORD = "correct-horse-9"
Run = Any


@pytest.fixture
def distbot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """`distbot ARGS --config <the test's database>` through cli.main, stdin given: (status, stdout, stderr)."""
    monkeypatch.setattr(cli, "setup_logging", lambda: None)  # the test run keeps its own logging

    async def run(db_url: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
        config = tmp_path / "cli.toml"
        config.write_text(f'[database]\nurl = "{db_url}"\n', encoding="utf-8")
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = await asyncio.to_thread(cli.main, [*args, "--config", str(config)])
        out, err = capsys.readouterr()
        return code, out, err
    return run


async def sign_in_as(http: aiohttp.ClientSession, base: str, account: str, secret: str,
                     code: str = "") -> tuple[int, str | None, str]:
    """The sign-in form posted with 账号, 密码或管理令牌 and 验证码: (status, session cookie, page)."""
    async with http.get(base + "/admin/") as resp:
        login, form_token = resp.cookies["distbot_login"].value, csrf_of(await resp.text())
    async with http.post(base + "/admin/login", data={"csrf_token": form_token, "account": account, "token": secret,
                                                                  "code": code},
                         cookies={"distbot_login": login}, allow_redirects=False) as resp:
        cookie = resp.cookies.get("distbot_admin")
        return resp.status, cookie.value if cookie is not None else None, await resp.text()


async def visit(http: aiohttp.ClientSession, base: str, cookie: str, path: str,
                form: list[tuple[str, str]] | None = None) -> tuple[int, str]:
    """GET a console page (or POST `form` with the csrf_token of /admin/); status, page or Location."""
    cookies = {"distbot_admin": cookie}
    if form is None:
        async with http.get(base + "/admin" + path, cookies=cookies, allow_redirects=False) as resp:
            return resp.status, resp.headers.get("Location") or await resp.text()
    async with http.get(base + "/admin/", cookies=cookies) as resp:
        csrf = csrf_of(await resp.text())
    async with http.post(base + "/admin" + path, data=[("csrf_token", csrf), *form], cookies=cookies,
                         allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location") or await resp.text()


async def bob_needs_a_second_factor(http: aiohttp.ClientSession, h: Harness, admin: str, alice: str) -> None:
    """Alice turns bob's second factor on: its secret shown once (in no audit row); then his password
    alone does not sign him in, with the 验证码 of the app's clock it does."""
    bob_id = re.search(r'/admin/staff/(\d+)/totp', (await visit(http, h.url, admin, "/staff"))[1].split(">bob<", 1)[1])
    assert bob_id
    status, page = await visit(http, h.url, alice, f"/staff/{bob_id.group(1)}/totp", [])
    secret = re.search(r"密钥：<code>([A-Z2-7]+)</code>", page)
    assert status == 200 and secret and secret.group(1) not in str(await h.api("GET", "/audit?page=1"))
    code = pyotp.TOTP(secret.group(1)).at(h.clock.now().timestamp())
    assert (await sign_in_as(http, h.url, "bob", PASSWORD))[0] == 401
    assert (await sign_in_as(http, h.url, "bob", PASSWORD, code))[0] == 303


async def test_a_person_signs_in_with_their_roles_and_the_trail_names_them(harness: Harness, db_url: str,
                                                                        distbot: Run) -> None:
    h = harness
    assert (await distbot(db_url, "staff", "add", "alice", "--role", "finance", "--password-stdin",
                          stdin=PASSWORD + "\n"))[0] == 0
    code, _, err = await distbot(db_url, "staff", "add", "<script>", "--role", "ops", stdin=PASSWORD)
    assert code == 2 and err.startswith("distbot: ") and len(err.strip().splitlines()) == 1
    assert (await distbot(db_url, "staff", "add", "bob", "--role", "ops", stdin="short"))[0] == 2
    assert (await distbot(db_url, "staff", "list"))[1] == "alice\tfinance\tenabled\tnever signed in\n"

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for account, secret in (("alice", "wrong-password"), ("nobody", PASSWORD), ("", PASSWORD)):
            status, cookie, page = await sign_in_as(http, h.url, account, secret)
            assert (status, cookie) == (401, None) and "管理令牌不正确" in page  # no hint which
        status, alice, _ = await sign_in_as(http, h.url, "alice", PASSWORD)
        assert status == 303 and alice
        status, page = await visit(http, h.url, alice, "/withdrawals")
        assert status == 200 and 'href="/admin/withdrawals"' in page and 'href="/admin/content"' not in page
        status, page = await visit(http, h.url, alice, "/content")
        assert status == 403 and "账号“alice”无权使用此页面" in page
        status, _ = await visit(http, h.url, alice, "/staff", [("name", "mallory"), ("password", PASSWORD), ("roles", "admin")])
        assert status == 403

        # The admin gives alice other roles: her session ends; signed in again, she holds them.
        _, admin, _ = await sign_in_as(http, h.url, "", ADMIN_TOKEN)
        assert admin
        staff_id = re.search(r'/admin/staff/(\d+)/roles', (await visit(http, h.url, admin, "/staff"))[1])
        assert staff_id
        roles = [("roles", "finance"), ("roles", "admin")]
        assert (await visit(http, h.url, admin, f"/staff/{staff_id.group(1)}/roles", roles))[0] == 303
        assert await visit(http, h.url, alice, "/withdrawals") == (303, "/admin/")
        _, alice, _ = await sign_in_as(http, h.url, "alice", PASSWORD)
        assert alice
        status, where = await visit(http, h.url, alice, "/staff", [("name", "bob"), ("password", PASSWORD), ("roles", "ops")])
        assert (status, where) == (303, "/admin/staff")
        assert await visit(http, h.url, alice, f"/staff/{staff_id.group(1)}/disable", []) == (303, "/admin/staff")

        status, trail = await h.api("GET", "/audit?page=1")
        mine = [(e["token_name"], e["actor"].split(":")[-1], e["summary"]) for e in trail["entries"]
                if e["actor"].startswith("console:") and e["token_name"] == "alice"]
        assert ("alice", "alice", "已添加员工“bob”（运营）。") in mine
        assert ("alice", "alice", "登录后台") in mine and any(s.startswith("未完成：不能停用") for _, _, s in mine)
        assert [e["status"] for e in trail["entries"] if e["path"] == "/admin/staff" and e["token_name"] == "alice"
                ] == [303, 403]  # bob added; mallory refused to the finance-only session

        await bob_needs_a_second_factor(http, h, admin, alice)

        # Disabled from the command line: her session ends at its next request, and she cannot sign in.
        assert (await distbot(db_url, "staff", "disable", "alice"))[0] == 0
        assert await visit(http, h.url, alice, "/withdrawals") == (303, "/admin/")
        assert (await sign_in_as(http, h.url, "alice", PASSWORD))[0] == 401
    listing = (await distbot(db_url, "staff", "list"))[1].splitlines()
    assert [line.split("\t")[:3] for line in listing] == [["alice", "finance,admin", "disabled"],
                                                          ["bob", "ops", "enabled"]]
    assert "+08:00" in listing[0] and "+08:00" in listing[1]


async def test_an_admin_adds_a_finance_person_who_sees_only_finance(tmp_path: Path, browser: Any) -> None:
    from playwright.async_api import expect
    async with serve(tmp_path) as (base, _), chromium_page(browser, WIDTHS["desktop"]) as page:
        await sign_in(page, base)
        await page.get_by_role("link", name="员工", exact=True).click()
        await expect(page.get_by_role("heading", name="员工", exact=True)).to_be_visible()
        await page.get_by_label("账号", exact=True).fill("carol")
        await page.get_by_label("密码", exact=True).fill(PASSWORD)
        await page.get_by_label("财务", exact=True).check()
        await page.get_by_role("button", name="添加").click()
        await expect(page.get_by_role("status")).to_have_text("已添加员工“carol”（财务）。")
        row = page.get_by_role("row").filter(has_text="carol")
        await expect(row).to_contain_text("财务")
        await expect(row).to_contain_text("从未登录")
        await expect(row.get_by_role("button", name="停用")).to_be_visible()

        await page.get_by_role("button", name="退出登录").click()
        await page.get_by_label("账号").fill("carol")
        await page.get_by_label("密码或管理令牌").fill(PASSWORD)
        await page.get_by_role("button", name="登录").click()
        nav = page.get_by_role("navigation", name="主导航")
        await expect(nav.get_by_role("link", name="提现", exact=True)).to_be_visible()
        for outside in ("内容", "活动", "员工", "审计日志"):
            await expect(nav.get_by_role("link", name=outside, exact=True)).to_have_count(0)
        response = await page.goto(base + "/admin/content")
        assert response is not None and response.status == 403
        await expect(page.get_by_role("status")).to_contain_text("账号“carol”无权使用此页面")
