"""The [pay] section (CONTRACT §4.10): "off" by default, the demo config in the sandbox, live mode
refusing to start without every key field, bad values named; the sandbox's keys made once under
the data folder; a warning for a plain-HTTP public_url; the jsapi_ticket shared through the
database like the access token."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from app.factory import create_app, pay_keys
from sandbox.platform import Platform
from wechat.client import WeChatAPI
from domain.config import Config, ConfigError, load_config
from storage.db import create_engine
from storage.migrate import upgrade
from storage.writer import Writer
from tests.conftest import make_config
from tests.test_config import LIVE_WECHAT, REPO, error, write

LIVE = {"wechat": LIVE_WECHAT, "admin": {"token": "a-real-admin-token"}}


def test_pay_is_off_by_default_and_sandbox_in_the_demo_config() -> None:
    assert Config().pay.mode == "off" and not Config().pay.on
    assert Config().pay.max_transfer_fen == 20000 and Config().pay.transfer_scene_id == "1005"
    demo = load_config(REPO / "config.toml")
    assert demo.pay.mode == "sandbox" and demo.pay.on
    assert demo.pay_base_url == "http://127.0.0.1:8080/sandbox/pay/"


def test_bad_pay_values_stop_start_up_naming_the_key(tmp_path: Path) -> None:
    assert "pay.mode" in error(write(tmp_path, '[pay]\nmode = "on"\n'))
    assert "pay.apiv3_key" in error(write(tmp_path, '[pay]\napiv3_key = "short"\n'))
    assert "pay.public_key_id" in error(write(tmp_path, '[pay]\npublic_key_id = "KEY1"\n'))
    assert "pay.transfer_scene_id" in error(write(tmp_path, '[pay]\ntransfer_scene_id = "9999"\n'))
    assert "pay.max_transfer_fen" in error(write(tmp_path, '[pay]\nmax_transfer_fen = 5\n'))
    assert "pay.foo" in error(write(tmp_path, '[pay]\nfoo = 1\n'))


def test_live_payouts_need_every_key_field(tmp_path: Path) -> None:
    message = error(write(tmp_path, '[pay]\nmode = "live"\n'), **LIVE)
    assert "pay.mchid" in message
    fields = {"mchid": "1900000001", "merchant_serial": "ABC", "private_key_path": "k.pem", "apiv3_key": "a" * 32,
              "public_key_id": "PUB_KEY_ID_0001", "public_key_path": "p.pem"}
    for missing in fields:
        given = "\n".join(f'{k} = "{v}"' for k, v in fields.items() if k != missing)
        assert f"pay.{missing}" in error(write(tmp_path, f'[pay]\nmode = "live"\n{given}\n'), **LIVE)
    given = "\n".join(f'{k} = "{v}"' for k, v in fields.items())
    config = load_config(write(tmp_path, f'[pay]\nmode = "live"\n{given}\n'), **LIVE)
    assert config.pay_base_url == "https://api.mch.weixin.qq.com/"
    # The key files must exist: a clear sentence, not a traceback.
    with pytest.raises(ConfigError) as err:
        pay_keys(config)
    assert "pay.private_key_path" in str(err.value)
    # A sandbox emulator only exists in the sandbox.
    assert "pay.mode" in error(write(tmp_path, '[pay]\nmode = "sandbox"\n'), **LIVE)


def test_sandbox_keys_are_made_once_in_the_data_folder(tmp_path: Path) -> None:
    config = make_config(f"sqlite+aiosqlite:///{tmp_path}/db/distbot.db", pay={"mode": "sandbox"})
    assert config.data_dir == tmp_path / "db"
    first, emulator = pay_keys(config)
    again, _ = pay_keys(config)
    assert first is not None and emulator is not None and again is not None
    assert (tmp_path / "db" / "pay-sandbox").is_dir()
    assert (first.merchant_serial, first.public_key_id, first.apiv3_key) == (
        again.merchant_serial, again.public_key_id, again.apiv3_key)
    assert pay_keys(make_config(f"sqlite+aiosqlite:///{tmp_path}/x.db")) == (None, None)


def test_a_plain_http_public_url_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.factory"):
        create_app(make_config(f"sqlite+aiosqlite:///{tmp_path}/a.db",
                               pay={"mode": "sandbox", "api_base_url": "https://api.mch.weixin.qq.com/"}))
    assert any("plain HTTP" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app.factory"):
        create_app(make_config(f"sqlite+aiosqlite:///{tmp_path}/b.db", pay={"mode": "sandbox"},
                               server={"public_url": "https://distbot.example.com"}))
        create_app(make_config(f"sqlite+aiosqlite:///{tmp_path}/c.db"))
        create_app(make_config(f"sqlite+aiosqlite:///{tmp_path}/d.db", pay={"mode": "sandbox"}))  # the emulator
    assert not any("plain HTTP" in r.getMessage() for r in caplog.records)


async def test_the_jsapi_ticket_is_shared_through_the_database(db_url: str, platform: Platform,
                                                               wechat_server: TestServer) -> None:
    import aiohttp
    engine = create_engine(db_url)
    await upgrade(engine)
    writer = Writer(engine)
    try:
        async with aiohttp.ClientSession() as http:
            def client() -> WeChatAPI:
                return WeChatAPI(base_url=str(wechat_server.make_url("/cgi-bin/")), app_id=platform.app_id,
                                 app_secret=platform.app_secret, writer=writer, http=http)
            one, two = client(), client()  # two processes' clients
            ticket = await one.jsapi_ticket()
            assert ticket in platform.jsapi_tickets
            assert await two.jsapi_ticket() == ticket and await one.jsapi_ticket() == ticket
            assert sum(1 for name, _ in platform.calls if name == "ticket/getticket") == 1
            # The access token is unaffected, and a ticket WeChat no longer takes is replaced.
            assert await one.access_token() in platform.tokens
            fresh = await two.jsapi_ticket(invalid=ticket)
            assert fresh != ticket and await one.jsapi_ticket(invalid=ticket) == fresh
            assert sum(1 for name, _ in platform.calls if name == "ticket/getticket") == 2
    finally:
        await writer.close()
        await engine.dispose()
