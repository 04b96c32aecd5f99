"""Helpers for the payout tests: the sandbox WeChat platform with WeChat Pay's emulator mounted as
the product's sandbox mounts it (under pay/), the merchant's keys as files (the way a live
deployment configures them), a harness whose public_url is its own address (WeChat Pay's callbacks
come back to it), and readers of the claim link and page."""

from __future__ import annotations

import json
import socket
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization

from app.factory import create_app
from sandbox.pay_emulator import PayEmulator
from sandbox.platform import Platform
from sandbox.routes import create_sandbox_app
from wechat.pay import EmulatorKeys, PayKeys
from tests.conftest import Harness, make_config
from tests.pay_support import new_emulator

CLAIM = re.compile(r"https?://[^\s]+/pay/claim/[0-9]+\.[0-9]+\.[0-9a-f]+")


@pytest.fixture
def emulator(pay_keys: tuple[PayKeys, EmulatorKeys]) -> PayEmulator:
    """Callbacks paced like WeChat Pay's retries (a product under test may be slow to answer)."""
    return new_emulator(pay_keys[1], (0.0, 0.2, 0.2, 0.5, 1.0), callback_timeout=5.0)


@pytest.fixture
async def pay_wechat(platform: Platform, emulator: PayEmulator) -> AsyncIterator[TestServer]:
    """WeChat's API (cgi-bin/) and WeChat Pay's (pay/) on one server, apart from the product."""
    server = TestServer(create_sandbox_app(platform, pay=emulator))
    await server.start_server()
    yield server
    await server.close()


def key_files(keys: PayKeys, folder: Path) -> dict[str, str]:
    """The [pay] key fields, with the merchant's private key and WeChat Pay's public key as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / "apiclient_key.pem"
    public = folder / "pub_key.pem"
    private.write_bytes(keys.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    public.write_bytes(keys.public_key.public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"mchid": keys.mchid, "merchant_serial": keys.merchant_serial, "private_key_path": str(private),
            "apiv3_key": keys.apiv3_key.decode(), "public_key_id": keys.public_key_id, "public_key_path": str(public)}


class PayHarness(Harness):
    """The harness on a port chosen first, so that server.public_url (the claim links, the
    notify_url) is the harness itself."""

    async def start(self) -> PayHarness:
        # The socket is bound before the config names its port: a port only picked would be free
        # for another worker of the suite to take before this server binds it.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = self.config.model_copy(update={
            "wechat": self.config.wechat.model_copy(update={"api_base_url": str(self.wechat_server.make_url("/cgi-bin/"))}),
            "server": self.config.server.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})})
        self.config = config
        self.server = TestServer(create_app(config, platform=self.platform, **self.app_kwargs), port=port,
                                 socket_factory=lambda host, port, family: sock)
        await self.server.start_server()
        self.platform.webhook_url = self.url + "/wechat"
        if self.http is None:
            import aiohttp
            self.http = aiohttp.ClientSession()
        return self


def pay_config(db_url: str, keys: PayKeys, folder: Path, pay_server: TestServer, **pay: Any) -> Any:
    return make_config(db_url, distribution={"freeze_days": 0, "min_withdraw_fen": 1000},
                       pay={"mode": "sandbox", **key_files(keys, folder),
                            "api_base_url": str(pay_server.make_url("/pay/")), **pay})


def claim_links(platform: Platform, openid: str) -> list[str]:
    """The claim link of every message pushed to the user that carries one, oldest first."""
    found = []
    for item in platform.users[openid].timeline:
        links = CLAIM.findall(item.get("content", "") + " " + item.get("url", "")) if item.get("from") == "bot" else []
        if links and item.get("via") != "passive":  # pushed messages (提现记录's reply lists links too)
            found.append(links[0])
    return found


def json_script(html: str, element_id: str) -> dict[str, Any]:
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.DOTALL)
    assert m, f"no #{element_id} in the page"
    return json.loads(m.group(1))
