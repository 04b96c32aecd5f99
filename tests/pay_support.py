"""WeChat Pay's emulator over real HTTP for tests: the keys (made once per test session), the
emulator mounted where the sandbox mounts it (/sandbox/pay/), a PayClient on it, and a notify_url
that answers callbacks the way the product must (401 to anything that does not verify)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sandbox.pay_emulator import PayEmulator
from sandbox.platform import Platform
from sandbox.routes import create_sandbox_app
from wechat.pay import (
    EmulatorKeys,
    PayClient,
    PayKeys,
    SignatureInvalid,
    sandbox_keys,
)

APPID = "wxsandbox0000000000"
REPORT_1005 = [{"info_type": "岗位类型", "info_content": "推广员"},
               {"info_type": "报酬说明", "info_content": "12月佣金"}]


@pytest.fixture(scope="session")
def pay_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[PayKeys, EmulatorKeys]:
    return sandbox_keys(tmp_path_factory.mktemp("paykeys"))


def new_emulator(keys: EmulatorKeys, callback_delays: tuple[float, ...], callback_timeout: float,
                 timeout_delay: float | None = None) -> PayEmulator:
    """The emulator with test timings: when callbacks are retried, how long one may take, and how
    long an injected timeout hangs."""
    emulator = PayEmulator(keys, appid=APPID)
    emulator.callback_delays, emulator.callback_timeout = callback_delays, callback_timeout
    emulator.transfer_delay = 0.02
    if timeout_delay is not None:
        emulator.timeout_delay = timeout_delay
    return emulator


@pytest.fixture
def emulator(pay_keys: tuple[PayKeys, EmulatorKeys]) -> PayEmulator:
    """Quick callbacks: the client's tests only need them to arrive."""
    return new_emulator(pay_keys[1], (0.0, 0.05, 0.05, 0.05, 0.05), callback_timeout=1.0, timeout_delay=1.0)


@pytest.fixture
async def pay_server(emulator: PayEmulator) -> AsyncIterator[TestServer]:
    """The sandbox app with the emulator, mounted at /sandbox as the product mounts it."""
    platform = Platform(app_id=APPID, app_secret="sandbox-secret", token="sandbox-token")
    app = web.Application()
    app.add_subapp("/sandbox", create_sandbox_app(platform, pay=emulator))
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def pay_url(server: TestServer) -> str:
    return str(server.make_url("/sandbox/pay/"))


@pytest.fixture
def client(pay_keys: tuple[PayKeys, EmulatorKeys], http: aiohttp.ClientSession, pay_server: TestServer) -> PayClient:
    return PayClient(pay_keys[0], http, pay_url(pay_server), timeout=5.0)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    bill: dict[str, Any] | None  # the decrypted bill; None: it did not verify
    answered: int


@dataclass
class NotifyEndpoint:
    """The product's /pay/notify in miniature: verifies with PayClient.read_notification, answers 401
    when that fails, else the next scripted answer (an HTTP status, or "slow": no answer in time)."""

    client: PayClient
    script: list[int | str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    slow_seconds: float = 2.0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            bill: dict[str, Any] | None = self.client.read_notification(request.headers, body)
        except SignatureInvalid:
            bill = None
        answer = 401 if bill is None else (self.script.pop(0) if self.script else 200)
        if answer == "slow":
            await asyncio.sleep(self.slow_seconds)
            answer = 200
        assert isinstance(answer, int)
        self.received.append(Received(dict(request.headers), body, bill, answer))
        if answer == 401:
            return web.json_response({"code": "FAIL", "message": "签名错误"}, status=401)
        return web.Response(status=answer)

    @property
    def bills(self) -> list[dict[str, Any]]:
        """The notifications that verified and were answered 2xx."""
        return [r.bill for r in self.received if r.bill is not None and 200 <= r.answered < 300]

    def ids(self) -> list[str]:
        return [json.loads(r.body)["id"] for r in self.received if r.bill is not None]


@pytest.fixture
async def notify(client: PayClient) -> AsyncIterator[NotifyEndpoint]:
    endpoint = NotifyEndpoint(client)
    app = web.Application()
    app.router.add_post("/pay/notify", endpoint.handle)
    server = TestServer(app)
    await server.start_server()
    endpoint.url = str(server.make_url("/pay/notify"))
    yield endpoint
    await server.close()


async def create(client: PayClient, out_bill_no: str, notify_url: str = "http://127.0.0.1:9/pay/notify",
                 **kw: Any) -> Any:
    """create_bill with the test defaults (¥12.50 to o-user-1, scene 1005)."""
    args: dict[str, Any] = {"appid": APPID, "out_bill_no": out_bill_no, "openid": "o-user-1", "amount_fen": 1250,
                            "remark": "佣金提现", "scene_id": "1005", "report_infos": REPORT_1005,
                            "notify_url": notify_url}
    return await client.create_bill(**{**args, **kw})


def write_public_pem(directory: Path, keys: EmulatorKeys) -> Path:
    from cryptography.hazmat.primitives import serialization
    path = directory / "wechatpay_public.pem"
    path.write_bytes(keys.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path
