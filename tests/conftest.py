"""Shared fixtures. Every test that touches the database runs on SQLite and on PostgreSQL.

PostgreSQL: $DISTBOT_TEST_PG_URL (a server URL whose user may CREATE DATABASE; .ci/run sets it),
else a throw-away cluster started from the machine's PostgreSQL binaries, else the PostgreSQL
half is skipped with that reason.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import exists, select

from app.factory import create_app
from wechat.dispatcher import REPLY_DEADLINE_SECONDS
from kit.app_keys import READER
from wechat.wechat_keys import OUTBOX
from domain.clock import FakeClock
from domain.config import Config
from sandbox.platform import Platform, SimUser
from sandbox.routes import create_sandbox_app
from devtools.pgcluster import PgCluster, find_pg_bin
from storage.models import OutboxMessage, OutboxStatus
from tests.db_support import drop_pools, migrated_sqlite, pg_database, run_apart
from tests.eventually import eventually

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DISTBOT_") and name != "DISTBOT_TEST_PG_URL":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str | None]:
    url = os.environ.get("DISTBOT_TEST_PG_URL")
    if url:
        yield url
        run_apart(drop_pools(url))
        return
    if find_pg_bin() is None:
        yield None
        return
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


# A test (`@ON_SQLITE`) or a module (`pytestmark = ON_SQLITE`) whose PostgreSQL half would add time,
# not coverage — input refused before any database work, the WeChat protocol, pages rendered from
# packs — runs on SQLite only. What each database does with what is stored is tested on both by
# the tests of the flows that store it (orders, ledger, withdrawals, outbox, campaigns, jobs ...).
ON_SQLITE = pytest.mark.on_sqlite


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL halves of the tests marked ON_SQLITE are not collected."""
    def postgres_half(item: pytest.Item) -> bool:
        params = getattr(item, "callspec", None)
        return params is not None and "postgresql" in (params.params.get("db_url"), params.params.get("empty_db_url"))
    items[:] = [i for i in items if not (i.get_closest_marker("on_sqlite") and postgres_half(i))]


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Any, pg_server_url: str | None) -> AsyncIterator[str]:
    """A migrated database of the test's own, on each database (a copy of the session's template:
    tests/db_support.py)."""
    async with _database(request.param, tmp_path, pg_server_url, migrated=True) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Any, pg_server_url: str | None) -> AsyncIterator[str]:
    """An empty database of the test's own, for the tests of the migrations themselves."""
    async with _database(request.param, tmp_path, pg_server_url, migrated=False) as url:
        yield url


def require_pg(pg_server_url: str | None) -> str:
    """The PostgreSQL server, or the one skip of every PostgreSQL half: the machine has none (CI
    always has one: .ci/run installs and starts it)."""
    if pg_server_url is None:
        pytest.skip("PostgreSQL half: no DISTBOT_TEST_PG_URL and no PostgreSQL binaries on this machine")
    return pg_server_url


@asynccontextmanager
async def _database(kind: str, tmp_path: Path, pg_server_url: str | None, *, migrated: bool) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield migrated_sqlite(tmp_path) if migrated else f"sqlite+aiosqlite:///{tmp_path}/distbot.db"
        return
    async with pg_database(require_pg(pg_server_url), migrated=migrated) as url:
        yield url


def make_config(db_url: str, **sections: Any) -> Config:
    """A test config: sandbox mode, the given database, per-section overrides."""
    data: dict[str, Any] = {
        "database": {"url": db_url},
        "admin": {"token": ADMIN_TOKEN},
        "wechat": {"template_id": "tmpl-notice"},
        "outbox": {"rate_per_second": 1000},
        # A harness whose scheduler is up at 03:00 China time backs up there, never into the working directory.
        "backup": {"dir": str(Path(tempfile.gettempdir()) / "distbot-test-backups")},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return Config(**data)


class Harness:
    """The bot served over real HTTP, with the sandbox WeChat platform as a separate server,
    exactly as a real deployment talks to WeChat."""

    def __init__(self, config: Config, platform: Platform, wechat_server: TestServer, *,
                 clock: FakeClock | None = None, **app_kwargs: Any):
        self.config = config
        self.platform = platform
        # The app's clock, which a test moves; WeChat's time moves with it (signed timestamps hold).
        self.clock = clock or FakeClock()
        platform.clock = self.clock.epoch
        self.wechat_server = wechat_server
        self.app_kwargs = app_kwargs
        self.server: TestServer | None = None
        self.http: aiohttp.ClientSession | None = None

    @property
    def app(self) -> web.Application:
        assert self.server is not None
        return self.server.app

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> Harness:
        config = self.config.model_copy(update={"wechat": self.config.wechat.model_copy(
            update={"api_base_url": str(self.wechat_server.make_url("/cgi-bin/"))})})
        self.config = config
        self.server = TestServer(create_app(config, platform=self.platform, clock=self.clock, **self.app_kwargs))
        await self.server.start_server()
        self.platform.webhook_url = self.url + "/wechat"
        if self.http is None:
            self.http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        await self.stop()
        if self.http is not None:
            await self.http.close()

    async def __aenter__(self) -> Harness:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- the WeChat side --------------------------------------------------------------------
    def user(self, nickname: str = "") -> SimUser:
        return self.platform.user(nickname=nickname)

    async def send(self, user: SimUser, kind: str, **kw: Any) -> dict[str, Any] | None:
        assert self.http is not None
        return await self.platform.send(self.http, user, kind, **kw)

    async def say(self, user: SimUser, text: str) -> str:
        """Send a text; the text of the passive reply ('' when none)."""
        reply = await self.send(user, "text", content=text)
        return reply.get("content", "") if reply else ""

    async def click(self, user: SimUser, key: str) -> dict[str, Any] | None:
        return await self.send(user, "click", key=key)

    async def follow(self, user: SimUser, scene: str = "") -> str:
        reply = await self.send(user, "subscribe", scene=scene)
        return reply.get("content", "") if reply else ""

    async def register(self, user: SimUser, phone: str, name: str, code: str = "", scene: str = "") -> str:
        """Follow (with the scene) and register; returns the new distributor's code."""
        await self.follow(user, scene=scene)
        await self.say(user, f"注册 {code}".strip())
        await self.say(user, phone)
        reply = await self.say(user, name)
        m = re.search(r"推广码：([A-Z0-9]{6})", reply)
        assert m, reply
        return m.group(1)

    async def settled(self) -> None:
        """Until the outbox has nothing left to send, neither due nor in its worker's hands: every
        message due so far is with WeChat, so a count of what a user got is final."""
        async def nothing_left() -> bool:
            now = self.clock.now()  # rows due later (a notice's window, a back-off) are not left over
            pending = await self.app[READER].run(lambda s: s.scalar(select(exists().where(
                OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now))))
            return not pending and not self.app[OUTBOX].working  # in this order: a claim is seen
        await eventually(nothing_left, what="the outbox sends everything queued")

    # ---- the admin / shop side --------------------------------------------------------------
    async def api(self, method: str, path: str, *, token: str | None = ADMIN_TOKEN, **kw: Any) -> tuple[int, Any]:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.http.request(method, self.url + "/api" + path, headers=headers, **kw) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = await resp.text()
            return resp.status, body


@pytest.fixture
def platform() -> Platform:
    return Platform(app_id="wxsandbox0000000000", app_secret="sandbox-secret", token="sandbox-token",
                    template_ids=frozenset({"tmpl-notice"}))


@pytest.fixture
async def wechat_server(platform: Platform) -> AsyncIterator[TestServer]:
    server = TestServer(create_sandbox_app(platform))
    await server.start_server()
    yield server
    await server.close()


# ---- the clock (domain.clock): a test moves it (`clock.move(minutes=31)`) instead of waiting ----
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def harness(db_url: str, platform: Platform, wechat_server: TestServer, clock: FakeClock
                  ) -> AsyncIterator[Harness]:
    # The product's own deadline (4 s): a busy machine made 2 s miss now and then on PostgreSQL,
    # and a missed deadline turns the passive reply a test reads into a later message.
    async with Harness(make_config(db_url), platform, wechat_server, reply_deadline=REPLY_DEADLINE_SECONDS,
                       clock=clock) as h:
        yield h


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Each phase's report on the test item (rep_setup, rep_call): fixtures that keep
    evidence of a failure (the console's screenshots) read it."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# The console's browser fixtures (`served`, `page`, `browser`) for every test module; defined with their
# helpers in tests/console_support.py, imported last (that module reads this one's names).
from tests.console_support import browser, page, served  # noqa: E402, F401
