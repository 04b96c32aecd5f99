"""The admin console's browser tests share these: the whole app served on a real port, a
Chromium page at desktop width and at 390 px (a failing test leaves a screenshot in
tests/artifacts/), signing in (in the browser, or over HTTP with the cookies in hand) and the
sideways-scroll check. conftest.py makes the fixtures
`served`, `page` and `browser` available to every test module. Orders reach the served app through the
shop's API (`order_event`), as the shop sends them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from app.factory import create_app
from tests.conftest import ADMIN_TOKEN, make_config
from tests.db_support import migrated_sqlite
from tests.serve_support import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 15_000
ARTIFACTS = Path(__file__).parent / "artifacts"
WIDTHS = {"desktop": 1280, "phone": 390}


@asynccontextmanager
async def serve(tmp_path: Path, *, db_url: str | None = None, workers: bool = False,
                **sections: Any) -> AsyncIterator[tuple[str, web.Application]]:
    """The whole app on a free port of 127.0.0.1, over `db_url` (else a SQLite file in `tmp_path`),
    with config sections as make_config takes them; `workers`: with its outbox worker and
    scheduler, as `make run` serves it; (base URL, app)."""
    port = free_port()
    config = make_config(db_url or migrated_sqlite(tmp_path),
                         server={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
                         **sections)
    app = create_app(config, workers=workers)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, web.Application]]:
    async with serve(tmp_path) as found:
        yield found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """One Chromium per test session (per xdist worker: starting one costs seconds), Debian's,
    driven by playwright; each test has a context of its own in it (chromium_page)."""
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: the browser tests need it (apt-get install chromium; .ci/run does)")
    from playwright.async_api import async_playwright
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@asynccontextmanager
async def chromium_page(browser: Any, width: int = WIDTHS["phone"], height: int = 900) -> AsyncIterator[Any]:
    """A page of `width` × `height` px in a fresh context (cookies, storage) of the session's browser."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    try:
        pg = await context.new_page()
        pg.set_default_timeout(WAIT_MS)
        yield pg
    finally:
        await context.close()


# A browser test runs at desktop width; the main walk of each page family also runs at 390 px
# (`@AT_BOTH_WIDTHS`), where the layout changes: the other flows are the same code at either width.
AT_BOTH_WIDTHS = pytest.mark.parametrize("page", list(WIDTHS), indirect=True)


@pytest.fixture(params=["desktop"])
async def page(request: pytest.FixtureRequest, browser: Any) -> AsyncIterator[Any]:
    async with chromium_page(browser, WIDTHS[request.param]) as pg:
        yield pg
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            await pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)


async def sign_in(page: Any, base: str, token: str = ADMIN_TOKEN) -> None:
    await page.goto(base + "/admin/")
    await page.get_by_label("管理令牌").fill(token)
    await page.get_by_role("button", name="登录").click()


def csrf_of(html: str) -> str:
    """The csrf_token of a console page's form (the sign-in form's, or a session's)."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


class SignInAnswer(NamedTuple):
    status: int
    headers: dict[str, str]
    cookie: str | None  # the session cookie it set, if any
    page: str


async def post_sign_in(http: aiohttp.ClientSession, base: str, token: str = ADMIN_TOKEN,
                       **headers: str) -> SignInAnswer:
    """Over HTTP, no cookie jar: the sign-in form fetched and posted with `token`; the answer."""
    async with http.get(base + "/admin/", headers=headers) as resp:
        login, form_token = resp.cookies["distbot_login"].value, csrf_of(await resp.text())
    async with http.post(base + "/admin/login", data={"csrf_token": form_token, "token": token}, headers=headers,
                         cookies={"distbot_login": login}, allow_redirects=False) as resp:
        session = resp.cookies.get("distbot_admin")
        return SignInAnswer(resp.status, dict(resp.headers), session.value if session is not None else None,
                            await resp.text())


async def no_sideways_scroll(page: Any) -> None:
    wide = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert wide <= 0, f"{page.url} scrolls sideways by {wide}px"


async def order_event(base: str, **event: Any) -> dict[str, Any]:
    """POST one order event to /api/orders/events as the shop would; its answer (200 expected)."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.post(base + "/api/orders/events", json=event) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()
