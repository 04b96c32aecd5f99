"""`distbot doctor` (CONTRACT §2): against the app served with its built-in sandbox WeChat, every
check passes; each broken item in turn makes its own line FAIL (and the command exit 1)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from app.doctor import diagnose
from domain.clock import FakeClock
from kit.menu import menu_payload
from tests.console_support import serve
from tests.test_cli import distbot
from tests.test_config import LIVE_WECHAT

NAMES = ["config", "database", "wechat", "app secret", "menu", "clock", "public_url", "template", "pay"]
PAY_KEYS = {"mode": "sandbox", "mchid": "1900000001", "merchant_serial": "ABC", "private_key_path": "/nowhere/key.pem",
            "apiv3_key": "a" * 32, "public_key_id": "PUB_KEY_ID_1", "public_key_path": "/nowhere/pub.pem"}


def toml(sections: dict[str, dict[str, Any]]) -> str:
    return "".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
                   for name, keys in sections.items())


async def push_menu(base: str) -> None:
    """The menu pushed to the served sandbox, as `distbot menu push` does."""
    api = base + "/sandbox/cgi-bin/"
    async with aiohttp.ClientSession() as http:
        async with http.get(api + "token", params={"grant_type": "client_credential", "appid": "wxsandbox0000000000",
                                                   "secret": "sandbox-secret"}) as resp:
            token = (await resp.json(content_type=None))["access_token"]
        async with http.post(api + "menu/create", params={"access_token": token}, json=menu_payload()) as resp:
            assert (await resp.json(content_type=None))["errcode"] == 0


async def test_doctor_passes_a_sound_deployment_and_fails_each_broken_item(tmp_path: Path) -> None:
    async with serve(tmp_path) as (base, app):
        port = int(base.rsplit(":", 1)[1])
        empty = tmp_path / "empty.db"
        sqlite3.connect(empty).close()
        good = {"server": {"host": "127.0.0.1", "port": port, "public_url": base},
                "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'distbot.db'}"},
                "admin": {"token": "a-secret-admin-token"}, "wechat": {"template_id": "tmpl-notice"}}
        path = tmp_path / "config.toml"

        async def run(change: dict[str, dict[str, Any]], clock: FakeClock | None = None) -> dict[str, str]:
            path.write_text(toml({k: {**good.get(k, {}), **change.get(k, {})} for k in {**good, **change}}))
            return {c.name: c.line for c in await diagnose(str(path), clock)}

        menu = await run({})
        assert menu["menu"].startswith("FAIL menu: WeChat has no menu of ours") and "distbot menu push" in menu["menu"]
        await push_menu(base)
        lines = await run({})
        assert list(lines) == NAMES and all(line.startswith("ok ") for line in lines.values()), lines

        broken: list[tuple[str, dict[str, dict[str, Any]], str]] = [
            ("config", {"server": {"port": "eighty"}}, "server.port"),
            ("database", {"database": {"url": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}}, "cannot reach it"),
            ("database", {"database": {"url": f"sqlite+aiosqlite:///{empty}"}}, "distbot db upgrade"),
            ("wechat", {"wechat": {"api_base_url": "http://127.0.0.1:1/cgi-bin/"}}, "cannot reach"),
            ("app secret", {"wechat": {"app_secret": "not-the-secret"}}, "40125"),
            ("public_url", {"server": {"public_url": "http://127.0.0.1:1"}}, "cannot be reached"),
            ("public_url", {"wechat": {**LIVE_WECHAT, "api_base_url": base + "/sandbox/cgi-bin/"}}, "is not https"),
            ("template", {"wechat": {"template_id": ""}}, "wechat.template_id is empty"),
            ("pay", {"pay": PAY_KEYS}, "cannot read the WeChat Pay keys"),
        ]
        for name, change, words in broken:
            lines = await run(change)
            assert lines[name].startswith(f"FAIL {name}: ") and words in lines[name], (name, lines)
            assert name == "config" or lines["config"].startswith("ok config"), lines
        clock = FakeClock()
        clock.move(minutes=-10)
        skewed = await run({}, clock)
        assert re.match(r"FAIL clock: -(599|600|601) s from WeChat's clock", skewed["clock"]), skewed
        assert "time sync" in skewed["clock"]
        assert sum(line.startswith("FAIL") for line in skewed.values()) == 1, skewed

        # The command itself: one line per check on stdout, exit status 1 on a FAIL, 0 without.
        path.write_text(toml({**good, "wechat": {"template_id": ""}}))
        code, out, err = await distbot("doctor", "--config", str(path), cwd=tmp_path)
        assert code == 1, err
        assert [line.split(" ", 1)[0] for line in out.splitlines()] == ["ok"] * 7 + ["FAIL", "ok"], out
        assert "FAIL template: " in out
