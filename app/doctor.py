"""`distbot doctor`: what breaks live deployments, checked one line each (CONTRACT §2).

Every line starts `ok` or `FAIL`, then the check's name and what was found; the command exits 1
on any FAIL. The checks: the config parses; the database answers and is migrated to the code's
head; WeChat answers (api_base_url: the sandbox in sandbox mode), the AppSecret gets a token, the
menu there is the one `distbot menu push` makes; server.public_url is https in live mode and
answers /healthz; wechat.template_id is set; the WeChat Pay key files load when Pay is on; this
machine's clock is within MAX_SKEW of WeChat's (its HTTP Date).

The token goes through the database's shared token row (wechat.client), so the service's processes
take the new one: a fresh token from WeChat would otherwise retire theirs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.factory import pay_keys  # the service's own loading of the keys
from domain.clock import Clock
from domain.config import Config, ConfigError, load_config
from kit.menu import menu_payload
from storage.backup import sqlite_file
from storage.db import create_engine
from storage.migrate import alembic_config
from storage.writer import Writer
from wechat.client import WeChatAPI, WeChatError

MAX_SKEW = timedelta(seconds=60)  # WeChat's own signatures allow 300 s; a minute off means no time sync
TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True)
class Check:
    ok: bool
    name: str
    detail: str

    @property
    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.name}: {self.detail}"


async def diagnose(path: str | None, clock: Clock | None = None) -> list[Check]:
    """Every check of the deployment configured at `path` (--config, $DISTBOT_CONFIG, ./config.toml)."""
    clock = clock or Clock()
    try:
        config = load_config(path)
    except ConfigError as e:
        return [Check(False, "config", str(e))]
    checks = [Check(True, "config", f"parses ({config.wechat.mode} mode)")]
    database = await _database(config)
    checks.append(database)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        checks += await _wechat(config, http, clock, database.ok)
        checks.append(await _public_url(config, http))
    checks += [_template(config), _pay(config)]
    return checks


# ---- the database ---------------------------------------------------------------------------------
async def _database(config: Config) -> Check:
    url = config.database.url
    file = sqlite_file(url)
    if file is not None and not file.is_file():
        return Check(False, "database", f"no SQLite file at {file}: run `distbot db upgrade` (or serve) first")
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            current = set(await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads()))
    except Exception as e:  # any driver's error: unreachable, refused, bad password
        return Check(False, "database", f"cannot reach it: {_first_line(e)}")
    finally:
        await engine.dispose()
    head = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    if current != head:
        found = ", ".join(sorted(current)) or "none (no schema)"
        return Check(False, "database", f"at revision {found}, the code's is {', '.join(sorted(head))}: "
                                        "run `distbot db upgrade`")
    return Check(True, "database", f"reachable, migrated to {', '.join(sorted(head))}")


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e) or type(e).__name__
    return text.strip().splitlines()[0]


# ---- WeChat ---------------------------------------------------------------------------------------
async def _wechat(config: Config, http: aiohttp.ClientSession, clock: Clock, database_ok: bool) -> list[Check]:
    base = config.api_base_url
    try:
        async with http.get(base + "token") as resp:
            date = resp.headers.get("Date")
    except (aiohttp.ClientError, TimeoutError) as e:
        cause = f"cannot reach {base}: {str(e) or type(e).__name__}"
        if config.sandbox and not config.wechat.api_base_url:
            cause += " (the sandbox WeChat is part of `distbot serve`: start it first)"
        unchecked = "not checked: WeChat is unreachable"
        return [Check(False, "wechat", cause), *(Check(False, name, unchecked) for name in ("app secret", "menu", "clock"))]
    checks = [Check(True, "wechat", f"{base} answers"), await _with_api(config, http, database_ok)]
    checks.append(await _menu(config, http) if checks[-1].ok else Check(False, "menu", "not checked: no token"))
    return [*checks, _skew(date, clock)]


def _api(config: Config, http: aiohttp.ClientSession, writer: Writer) -> WeChatAPI:
    return WeChatAPI(base_url=config.api_base_url, app_id=config.wechat.app_id,
                     app_secret=config.wechat.app_secret, writer=writer, http=http)


async def _using_api(config: Config, http: aiohttp.ClientSession,
                     work: Callable[[WeChatAPI], Awaitable[Any]]) -> Any:
    engine = create_engine(config.database.url)
    writer = Writer(engine)
    try:
        return await work(_api(config, http, writer))
    finally:
        await writer.close()
        await engine.dispose()


async def _with_api(config: Config, http: aiohttp.ClientSession, database_ok: bool) -> Check:
    if not database_ok:
        return Check(False, "app secret", "not checked: the token is shared through the database, which failed")

    async def fresh_token(api: WeChatAPI) -> None:
        # The stored token, then a new one in its place: only a new one proves the AppSecret.
        await api.access_token(invalid=await api.access_token())
    try:
        await _using_api(config, http, fresh_token)
    except WeChatError as e:
        return Check(False, "app secret", f"WeChat gave no access token for {config.wechat.app_id} ({e})")
    return Check(True, "app secret", f"WeChat gave an access token for {config.wechat.app_id}")


async def _menu(config: Config, http: aiohttp.ClientSession) -> Check:
    try:
        found = await _using_api(config, http, lambda api: api.call("GET", "menu/get"))
    except WeChatError as e:
        return Check(False, "menu", f"WeChat has no menu of ours ({e}): run `distbot menu push`")
    if _plain(found.get("menu", {})) != _plain(menu_payload()):
        return Check(False, "menu", "WeChat's menu differs from the configured one: run `distbot menu push`")
    return Check(True, "menu", "WeChat's menu is the configured one")


def _plain(value: Any) -> Any:
    """A menu without the empty sub_button lists WeChat adds to plain buttons."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not (k == "sub_button" and not v) and k != "menuid"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _skew(date: str | None, clock: Clock) -> Check:
    if date is None:
        return Check(False, "clock", "WeChat's answer has no Date header to compare with")
    try:
        theirs = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return Check(False, "clock", f"WeChat's Date header {date!r} cannot be read")
    skew = clock.now() - theirs
    seconds = round(skew.total_seconds())
    if abs(skew) > MAX_SKEW:
        return Check(False, "clock", f"{seconds:+d} s from WeChat's clock (allowed ±{MAX_SKEW.seconds} s): "
                                     "set up time sync (chrony or systemd-timesyncd)")
    return Check(True, "clock", f"{seconds:+d} s from WeChat's clock")


# ---- the rest of the config -----------------------------------------------------------------------
async def _public_url(config: Config, http: aiohttp.ClientSession) -> Check:
    url = config.server.public_url
    if not config.sandbox and not url.startswith("https://"):
        return Check(False, "public_url", f"{url} is not https: live mode needs TLS in front (WeChat Pay, "
                                          "share pages); see docs/deploy.md")
    try:
        async with http.get(url + "/healthz") as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as e:
        return Check(False, "public_url", f"{url}/healthz cannot be reached: {str(e) or type(e).__name__}")
    if status != 200:
        return Check(False, "public_url", f"{url}/healthz answered HTTP {status}")
    return Check(True, "public_url", f"{url}/healthz answers")


def _template(config: Config) -> Check:
    if not config.wechat.template_id:
        return Check(False, "template", "wechat.template_id is empty: notices cannot reach users outside "
                                        "WeChat's 48-hour window")
    return Check(True, "template", f"wechat.template_id is {config.wechat.template_id}")


def _pay(config: Config) -> Check:
    pay = config.pay
    if not pay.on:
        return Check(True, "pay", "off")
    if not pay.private_key_path:
        return Check(True, "pay", f"{pay.mode}: the sandbox's own keys")
    try:
        pay_keys(config)
    except ConfigError as e:
        return Check(False, "pay", str(e))
    return Check(True, "pay", f"{pay.mode}: the keys at {Path(pay.private_key_path).name} and "
                              f"{Path(pay.public_key_path).name} load")
