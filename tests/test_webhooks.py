"""Outgoing webhooks (CONTRACT §4.11, §7) through the real interfaces, on both databases: a receiver
started by the test checks every signature, ours and the Standard Webhooks one with the
`standardwebhooks` library, for a plain secret and a whsec_ one; events arrive in order per distributor, are retried
after 500s with back-off, at least once (a receiver dedupes by id); a dead endpoint slows neither
chat nor order ingestion; /metrics shows deliveries and the backlog."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER, WEBHOOKS
from storage import db as storage_db
from domain.config import Config, ConfigError, load_config
from storage.durable_queue import Backoff
from storage.tables import WEBHOOK_DELIVERIES
from tests.conftest import Harness, make_config
from tests.eventually import eventually
from tests.test_jobs import until_runs
from tests.test_ops import get, sample

SECRET = "webhook-secret-0123456789"
WHSEC = "whsec_" + base64.b64encode(bytes(range(7, 31))).decode()  # the spec's form, 24 bytes


def library_secret(secret: str) -> str:
    """What a receiver gives standardwebhooks' Webhook(...): a whsec_ secret as it is, a plain one
    as whsec_ + base64 of its UTF-8 bytes (as the README shows)."""
    return secret if secret.startswith("whsec_") else "whsec_" + base64.b64encode(secret.encode()).decode()


class Receiver:
    """An ERP's endpoint: verifies the signature, answers 500 to the first `fail` requests."""

    def __init__(self, fail: int = 0, delay: float = 0.0, secret: str = SECRET):
        self.fail, self.delay, self.secret = fail, delay, secret
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        self.bad_signatures = 0
        self.attempts: list[tuple[str, str, int]] = []  # (event id, webhook-id, webhook-timestamp) of each
        self.last: tuple[bytes, dict[str, str]] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        try:
            Webhook(library_secret(self.secret)).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=401)
        if not hmac.compare_digest(request.headers.get("X-Distbot-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.last = body, dict(request.headers)
        self.attempts.append((json.loads(body)["id"], request.headers["webhook-id"],
                              int(request.headers["webhook-timestamp"])))
        if self.fail > 0:
            self.fail -= 1
            self.refused += 1
            return web.Response(status=500)
        event = json.loads(body)
        assert request.headers["X-Distbot-Event"] == event["type"]
        self.accepted.append(event)
        return web.Response(status=204)

    def types_of(self, code: str) -> list[str]:
        return [e["type"] for e in self.accepted if e["data"].get("distributor_code") == code]


@asynccontextmanager
async def serving(r: Receiver) -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
    r = Receiver()
    async with serving(r) as server:
        yield r, server


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer,
            receiver: tuple[Receiver, TestServer]) -> AsyncIterator[Harness]:
    config = make_config(db_url, distribution={"freeze_days": 0},
                         webhooks=[{"url": str(receiver[1].make_url("/hook")), "secret": SECRET}])
    async with Harness(config, platform, wechat_server) as harness:
        harness.app[WEBHOOKS].queue.backoff = Backoff(0.05, cap=3600)
        yield harness


async def event(h: Harness, **body: Any) -> None:
    status, answer = await h.api("POST", "/orders/events", json=body)
    assert status == 200, answer


async def test_events_arrive_signed_and_in_order(h: Harness, receiver: tuple[Receiver, TestServer]) -> None:
    r, _ = receiver
    a = await h.register(h.user(), "13900001001", "钱多多")
    b_user = h.user()
    b = await h.register(b_user, "13900001002", "李小明", code=a)
    await event(h, event_id="e1", order_no="W1", type="paid", amount_fen=30000, distributor_code=b)
    await event(h, event_id="e2", order_no="W1", type="completed")
    await event(h, event_id="e3", order_no="W1", type="refunded", amount_fen=10000)
    assert "提现申请已提交" in await h.say(b_user, "提现 15")
    status, listed = await h.api("GET", "/withdrawals?status=pending")
    [w] = listed["withdrawals"]
    assert (await h.api("POST", f"/withdrawals/{w['id']}/approve"))[0] == 200

    await eventually(lambda: len(r.types_of(b)) == 4 and len(r.types_of(a)) == 3)
    assert r.bad_signatures == 0
    # Each distributor's events in the order they happened.
    assert r.types_of(b) == ["distributor.registered", "commission.created", "commission.reversed", "withdrawal.paid"]
    assert r.types_of(a) == ["distributor.registered", "commission.created", "commission.reversed"]
    by_type = {(e["type"], e["data"]["distributor_code"]): e for e in r.accepted}
    created = by_type[("commission.created", b)]["data"]
    assert (created["order_no"], created["depth"], created["amount_fen"]) == ("W1", 0, 3000)
    assert by_type[("commission.created", a)]["data"]["amount_fen"] == 900
    assert by_type[("commission.reversed", b)]["data"]["amount_fen"] == 1000
    assert by_type[("withdrawal.paid", b)]["data"] == {**by_type[("withdrawal.paid", b)]["data"],
                                                       "withdrawal_id": w["id"], "amount_fen": 1500}
    assert by_type[("distributor.registered", b)]["data"]["inviter_code"] == a
    assert len({e["id"] for e in r.accepted}) == len(r.accepted) == 7
    assert all(set(e) == {"id", "type", "created_at", "data"} for e in r.accepted)


async def test_a_whsec_secret_is_the_standard_webhooks_key(db_url: str, platform: Platform,
                                                           wechat_server: TestServer) -> None:
    """With a whsec_ secret the library verifies with the secret as it is; a tampered body, id or
    timestamp, or the secret read as plain text, does not verify."""
    r = Receiver(secret=WHSEC)
    async with serving(r) as server:
        config = make_config(db_url, webhooks=[{"url": str(server.make_url("/hook")), "secret": WHSEC}])
        async with Harness(config, platform, wechat_server) as h:
            code = await h.register(h.user(), "13900001007", "吴九")
            await eventually(lambda: r.types_of(code) == ["distributor.registered"])
    assert r.bad_signatures == 0 and r.last is not None
    body, headers = r.last
    assert headers["webhook-id"] == json.loads(body)["id"] and headers["webhook-signature"].startswith("v1,")
    assert Webhook(WHSEC).verify(body, headers)["data"]["distributor_code"] == code
    stale = str(int(headers["webhook-timestamp"]) - 1)
    for forged_body, forged in ((body.replace(b"}", b" }", 1), headers), (body, {**headers, "webhook-id": "evt-x"}),
                                (body, {**headers, "webhook-timestamp": stale})):
        with pytest.raises(WebhookVerificationError):
            Webhook(WHSEC).verify(forged_body, forged)
    with pytest.raises(WebhookVerificationError):  # the whsec_ text as a plain secret is another key
        Webhook("whsec_" + base64.b64encode(WHSEC.encode()).decode()).verify(body, headers)


async def test_refused_deliveries_are_retried_until_accepted(h: Harness, receiver: tuple[Receiver, TestServer]
                                                            ) -> None:
    r, _ = receiver
    r.fail = 3
    began = h.clock.epoch()
    code = await h.register(h.user(), "13900001003", "王五")
    await event(h, event_id="r1", order_no="R1", type="paid", amount_fen=2000, distributor_code=code)
    await eventually(lambda: len(r.types_of(code)) == 2)
    assert r.refused == 3 and r.types_of(code) == ["distributor.registered", "commission.created"]
    # Each try carries the event's id as webhook-id (the same on every retry) and the time it was sent.
    ids = [event_id for event_id, _, _ in r.attempts]
    assert ids == [ids[0]] * 4 + [ids[4]] and ids[4] != ids[0]
    assert all(hook_id == event_id for event_id, hook_id, _ in r.attempts)
    assert all(int(began) <= sent <= h.clock.epoch() for _, _, sent in r.attempts)

    async def marked() -> list[Any] | None:  # the receiver answers before the sender writes down its answer
        async with h.app[SESSIONMAKER]() as session:
            rows = (await session.execute(select(WEBHOOK_DELIVERIES.c.status, WEBHOOK_DELIVERIES.c.attempts))).all()
        return list(rows) if all(s != "sending" for s, _ in rows) else None
    rows = await eventually(marked, what="every delivery marked")
    assert [s for s, _ in rows] == ["sent", "sent"] and max(n for _, n in rows) == 4  # 3 refusals, then 2xx
    _, _, text = await get(h, "/metrics")
    assert sample(text, "distbot_webhook_deliveries_total", result="error") == 3
    assert sample(text, "distbot_webhook_deliveries_total", result="ok") == 2
    assert sample(text, "distbot_webhook_backlog") == 0


async def test_sent_deliveries_are_pruned_after_a_week(h: Harness, receiver: tuple[Receiver, TestServer],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    r, _ = receiver
    monkeypatch.setattr(storage_db, "PRUNE_CHUNK", 2)  # several units for the old rows
    code = await h.register(h.user(), "13900001006", "周八")
    for k in range(5):
        await event(h, event_id=f"p{k}", order_no=f"P{k}", type="paid", amount_fen=1000, distributor_code=code)
    await event(h, event_id="p-late", order_no="PL", type="paid", amount_fen=1000, distributor_code=code)
    await eventually(lambda: len(r.types_of(code)) == 7)
    w = WEBHOOK_DELIVERIES.c
    async with h.app[SESSIONMAKER]() as session, session.begin():
        ids = (await session.scalars(select(w.id).order_by(w.id))).all()
        old, kept = ids[:5], ids[5:]  # five sent 8 days ago, one just now, one waiting for a retry
        await session.execute(update(WEBHOOK_DELIVERIES).where(w.id.in_(old))
                              .values(sent_at=datetime.now(UTC) - timedelta(days=8)))
        await session.execute(update(WEBHOOK_DELIVERIES).where(w.id == ids[-1])
                              .values(status="pending", sent_at=None, next_attempt_at=datetime.now(UTC) + timedelta(hours=1)))
    status, body = await h.api("POST", "/jobs/prune-webhook-deliveries/run")
    assert (status, body["status"]) == (202, "started")
    await until_runs(h, "prune-webhook-deliveries", 1)
    async with h.app[SESSIONMAKER]() as session:
        assert (await session.scalars(select(w.id).order_by(w.id))).all() == kept


async def test_a_dead_endpoint_slows_nothing(db_url: str, platform: Platform, wechat_server: TestServer,
                                             receiver: tuple[Receiver, TestServer]) -> None:
    r, server = receiver
    r.delay = 30.0  # never answers within the sender's 5 s
    config = make_config(db_url, webhooks=[{"url": str(server.make_url("/hook")), "secret": SECRET}])
    async with Harness(config, platform, wechat_server) as h:
        user = h.user()
        code = await h.register(user, "13900001004", "赵六")  # passive replies, in time
        for k in range(5):
            await event(h, event_id=f"d{k}", order_no=f"D{k}", type="paid", amount_fen=1000, distributor_code=code)
        assert "收益" in await h.say(user, "收益")
        _, _, text = await get(h, "/metrics")
        assert sample(text, "distbot_webhook_backlog") == 6
        assert r.accepted == []


async def test_nothing_is_written_without_endpoints(harness: Harness) -> None:
    code = await harness.register(harness.user(), "13900001005", "孙七")
    await event(harness, event_id="n1", order_no="N1", type="paid", amount_fen=1000, distributor_code=code)
    async with harness.app[SESSIONMAKER]() as session:
        assert await session.scalar(select(func.count()).select_from(WEBHOOK_DELIVERIES)) == 0


@pytest.mark.parametrize("webhooks,words", [
    ([{"url": "ftp://erp/x", "secret": SECRET}], "http:// or https://"),
    ([{"url": "https://erp/x", "secret": "short"}], "at least 16"),
    ([{"url": "https://erp/x", "secret": "whsec_not/base64!here"}], "base64"),
    ([{"url": "https://erp/x", "secret": "whsec_" + base64.b64encode(b"0123456789").decode()}], "16 bytes"),
    ([{"url": "https://erp/x", "secret": SECRET, "events": ["order.paid"]}], "distributor.registered"),
    ([{"url": "https://erp/x", "secret": SECRET}, {"url": "https://erp/x", "secret": SECRET}], "each url once"),
])
def test_bad_webhook_config_is_refused(tmp_path: Any, webhooks: list[dict[str, Any]], words: str) -> None:
    lines = []
    for w in webhooks:
        lines += ["[[webhooks]]", f'url = "{w["url"]}"', f'secret = "{w["secret"]}"']
        if "events" in w:
            lines.append("events = " + json.dumps(w["events"]))
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="webhooks") as e:
        load_config(path)
    assert words in str(e.value)
    assert isinstance(Config(webhooks=[{"url": "https://erp/x", "secret": SECRET}]).webhooks[0].events, tuple)


def test_a_whsec_secret_is_accepted_and_decoded() -> None:
    plain, whsec = Config(webhooks=[{"url": "https://erp/a", "secret": SECRET},
                                    {"url": "https://erp/b", "secret": WHSEC}]).webhooks
    assert plain.hmac_key == SECRET.encode() and whsec.hmac_key == bytes(range(7, 31))
