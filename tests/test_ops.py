"""/healthz and /metrics."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import Application

from app.factory import create_app
from domain.messages import Text
from domain.outbox_rows import enqueue
from sandbox.platform import Platform
from kit.app_keys import CLOCK, WRITER
from tests.conftest import Harness, make_config


async def get(h: Harness, path: str) -> tuple[int, str, str]:
    assert h.http is not None
    async with h.http.get(h.url + path) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, matched by name and (a subset of) its labels."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


async def test_healthz(harness: Harness) -> None:
    assert harness.http is not None
    async with harness.http.get(harness.url + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_healthz_without_a_database_is_503() -> None:
    config = make_config("postgresql+asyncpg://x@127.0.0.1:1/x")
    server = TestServer(create_app(config, workers=False, migrate=False))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/healthz")) as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "error"
    finally:
        await server.close()


async def test_metrics_count_requests_latency_and_dedupe(harness: Harness) -> None:
    user = harness.user()
    await harness.follow(user)
    await harness.say(user, "帮助")
    fields = harness.platform.message_fields(user, "text", content="帮助")
    assert harness.http is not None
    for _ in range(2):  # the second delivery is a dedupe hit
        query, body = harness.platform.envelope(fields)
        async with harness.http.post(harness.url + "/wechat", params=query, data=body) as resp:
            assert resp.status == 200
    async with harness.http.post(harness.url + "/wechat", params={"signature": "x"}, data=b"") as resp:
        assert resp.status == 403
    await harness.api("GET", "/distributors")
    status, ctype, text = await get(harness, "/metrics")
    assert status == 200 and ctype == "text/plain"
    assert sample(text, "distbot_http_requests_total", route="/wechat", method="POST", status="200") == 4
    assert sample(text, "distbot_http_requests_total", route="/wechat", method="POST", status="403") == 1
    assert sample(text, "distbot_http_requests_total", route="/api/distributors", method="GET",
                  status="200") == 1
    # follow, 帮助, 帮助 and its retry, each answered passively
    assert sample(text, "distbot_handler_seconds_count", outcome="passive") == 4
    assert sample(text, "distbot_handler_seconds_bucket", outcome="passive", le="+Inf") == 4
    assert sample(text, "distbot_dedupe_hits_total") == 1
    assert sample(text, "distbot_outbox_depth") == 0
    assert sample(text, "distbot_updates_total", kind="text") == 2


async def test_an_unmatched_path_is_counted_without_its_text(harness: Harness) -> None:
    await get(harness, "/secret-probe-123")
    _, _, text = await get(harness, "/metrics")
    assert "secret-probe-123" not in text
    assert sample(text, "distbot_http_requests_total", route="unmatched", status="404") == 1


@pytest.fixture
async def idle(db_url: str, platform: Platform, wechat_server: Any) -> Any:
    async with Harness(make_config(db_url), platform, wechat_server, workers=False) as h:
        yield h


async def test_metrics_show_the_current_outbox_depth(idle: Harness) -> None:
    def queue(session: Any) -> None:
        for i in range(3):
            enqueue(session, f"depth:{i}", "oSomeone", Text(f"消息{i}"), now=idle.app[CLOCK].now())
    await idle.app[WRITER].run(queue)
    _, _, text = await get(idle, "/metrics")
    assert sample(text, "distbot_outbox_depth") == 3


async def test_outbox_depth_falls_back_to_zero_once_sent(harness: Harness) -> None:
    user = harness.user()
    await harness.follow(user)
    await harness.app[WRITER].run(lambda session: enqueue(session, "depth:sent", user.openid, Text("已送达"),
                                                                      now=harness.app[CLOCK].now()))
    await harness.platform.wait_for(user.openid, lambda i: i.get("via") == "custom")
    await harness.settled()  # its mark follows the send
    _, _, text = await get(harness, "/metrics")
    assert sample(text, "distbot_outbox_depth") == 0
    assert sample(text, "distbot_outbox_sent_total", channel="custom") == 1


def test_each_app_has_its_own_registry() -> None:
    config = make_config("sqlite+aiosqlite:///:memory:")
    a: Application = create_app(config, workers=False)
    b: Application = create_app(config, workers=False)
    from kit.app_keys import METRICS
    a[METRICS].dedupe_hits.inc()
    assert sample(b[METRICS].render().decode(), "distbot_dedupe_hits_total") == 0
