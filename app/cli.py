"""The `distbot` command. User mistakes end in one sentence on stderr and a non-zero status."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from content.presets import TRADES
from domain.config import Config, ConfigError, load_config
from domain.config_sections import SCOPES
from kit.logs import setup_logging
from storage.backup import BackupError

log = logging.getLogger("distbot")
LOOPBACK = ("127.0.0.1", "localhost")  # a public_url on this machine


class CliError(Exception):
    """A user's mistake, told in one sentence; the command exits with `status`."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def _config(args: argparse.Namespace) -> Config:
    overrides = {}
    server = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None))) if v}
    if server:
        overrides["server"] = server
    return load_config(args.config, **overrides)


def _served_links(config: Config) -> Config:
    """In sandbox mode a public_url on this machine follows the port and host served (--port,
    DISTBOT_SERVER__PORT): the links in chat (share pages, trainings) open this server, not 8080."""
    url = urlsplit(config.server.public_url)
    host = "127.0.0.1" if config.server.host in ("0.0.0.0", "::", "") else config.server.host
    same = url.port == config.server.port and (host in LOOPBACK or url.hostname == host)
    if not config.sandbox or url.hostname not in LOOPBACK or same:
        return config
    served = urlunsplit((url.scheme, f"{host}:{config.server.port}", url.path, "", ""))
    return config.model_copy(update={"server": config.server.model_copy(update={"public_url": served})})


def cmd_serve(args: argparse.Namespace) -> None:
    config = _served_links(_config(args))  # a mistake here is told before the app's modules load (a second)
    _check_database(config)
    from aiohttp import web

    from app.factory import create_app
    from kit.feature import FeatureConflict
    try:
        app = create_app(config)
    except FeatureConflict as e:  # two features claim one command, key or route: fix app/features.py
        raise CliError(str(e)) from None
    if config.sandbox:
        _run_db(lambda: _load_demo_pack(config, _config_path(args).parent / "pack.zip"))
    sockets = _listen(config.server.host, config.server.port)
    mode = "sandbox" if config.sandbox else "live"
    print(f"distbot serving in {mode} mode on http://{config.server.host}:{config.server.port}"
          + ("  (simulator: /sandbox/)" if config.sandbox else ""), flush=True)
    # Everything loaded so far lives as long as the process: keep it out of the cyclic
    # collector, and collect young objects less often (each reply allocates many).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    web.run_app(app, sock=sockets, print=None, access_log=None)


def _listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of `host`, as aiohttp would bind them, before the app
    starts: on a port in use, serve stops in one sentence before its workers do anything."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                   flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as e:  # most often the port is taken
        for sock in sockets:
            sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sockets


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    config = _config(args)

    async def run() -> None:
        from storage.db import create_engine
        from storage.migrate import upgrade
        engine = create_engine(config.database.url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
    _run_db(run)
    print("database schema is up to date")


def cmd_menu_push(args: argparse.Namespace) -> None:
    config = _config(args)
    import aiohttp

    from kit.menu import menu_payload
    from wechat.client import WeChatAPI, WeChatError
    from storage.db import create_engine
    from storage.migrate import upgrade
    from storage.writer import Writer

    async def run() -> None:
        engine = create_engine(config.database.url)
        writer = Writer(engine)
        try:
            await upgrade(engine)
            async with aiohttp.ClientSession() as http:
                api = WeChatAPI(base_url=config.api_base_url, app_id=config.wechat.app_id,
                                app_secret=config.wechat.app_secret, writer=writer, http=http)
                try:
                    await api.create_menu(menu_payload())
                except WeChatError as e:
                    raise CliError(f"WeChat refused the menu: {e}") from None
        finally:
            await writer.close()
            await engine.dispose()
    _run_db(run)
    print("menu created")


def cmd_content_import(args: argparse.Namespace) -> None:
    from content.packs import PackInvalid
    from content.store import PackConflict
    from domain.catalogue import PACK, say
    from handlers.content_packs import import_command

    config = _config(args)
    path = Path(args.pack)
    if not path.is_file():
        raise CliError(f"{path} does not exist or is not a file")

    async def run() -> None:
        try:
            print(await import_command(config, path))
        except PackInvalid as e:
            raise CliError("\n".join([say(PACK, "pack_invalid", path=path, n=len(e.problems)),
                                       *(f"  {p}" for p in e.problems)])) from None
        except PackConflict as e:
            raise CliError(f"pack {e.name!r} version {e.version!r} is already stored; nothing was imported "
                           "(give the pack a new version)") from None
    _run_db(run)


def _config_path(args: argparse.Namespace) -> Path:
    """The config file in use (load_config's choice: --config, $DISTBOT_CONFIG, ./config.toml)."""
    return Path(args.config or os.environ.get("DISTBOT_CONFIG") or "config.toml")


async def _load_demo_pack(config: Config, beside: Path) -> None:
    """The starter pack when no pack is live: `beside` (the pack.zip `distbot init` wrote next to
    the config) when it is there, else the demo pack."""
    from handlers.content_packs import demo_command

    print(await demo_command(config, beside if beside.is_file() else None), flush=True)


def cmd_init(args: argparse.Namespace) -> None:
    from app.init_cmd import InitRefused, init

    try:
        print(init(args.industry, Path(args.dir), force=args.force))
    except InitRefused as e:
        raise CliError(str(e), status=1) from None
    except OSError as e:  # DIR is a file, or not writable
        raise CliError(f"cannot write to {args.dir}: {e.strerror or e}") from None


def cmd_backup(args: argparse.Namespace) -> None:
    from storage.backup import backup

    config = _config(args)
    _run_db(lambda: backup(config.database.url, Path(args.dest)))
    print(f"backup written to {args.dest}")


def cmd_restore(args: argparse.Namespace) -> None:
    from storage.restore import restore

    config = _config(args)

    async def run() -> None:
        try:
            print(await restore(config.database.url, Path(args.backup)), flush=True)
        except BackupError as e:  # a refusal changed nothing: exit status 1 (CONTRACT §2)
            raise CliError(str(e), status=1) from None
    _run_db(run)


def cmd_doctor(args: argparse.Namespace) -> int:
    from app.doctor import diagnose

    logging.getLogger().setLevel(logging.WARNING)  # its lines are the checks, not the client's INFO logs
    checks = asyncio.run(diagnose(args.config))
    for check in checks:
        print(check.line, flush=True)
    return 0 if all(c.ok for c in checks) else 1


def _password(args: argparse.Namespace) -> str:
    """The new password: a line of stdin (--password-stdin, or stdin is no terminal), else asked twice."""
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("the same again: ") != first:
        raise CliError("the two passwords differ; nothing was changed")
    return first


def _staff_unit(config: Config, work: Callable[[Any], Any]) -> Any:
    """What `work(session)` returns, run in one unit of work (the schema upgraded first); a
    refusal of domain.staff ends in its sentence."""
    from domain.refusals import Refusal
    from storage.db import create_engine
    from storage.migrate import upgrade
    from storage.writer import Writer
    found: list[Any] = []

    async def run() -> None:
        engine = create_engine(config.database.url)
        writer = Writer(engine)
        try:
            await upgrade(engine)
            found.append(await writer.run(work))
        except Refusal as e:
            raise CliError(e.message) from None
        finally:
            await writer.close()
            await engine.dispose()
    _run_db(run)
    return found[0]


def _staff_audited(session: Any, command: str, name: str) -> datetime:
    """The audit row of a `distbot staff` change, in its unit of work (token "cli"); the time."""
    from domain import audit_log as audit
    from domain.clock import Clock
    now = Clock().now()
    audit.record(session, audit.Entry(at=now, token_name="cli", actor="cli", method="CLI", path=f"distbot staff {command}",
                                      status=200, summary=f"员工账号 {name}：{command}", object_id=name))
    return now


def cmd_staff_add(args: argparse.Namespace) -> None:
    from domain import staff
    from domain.refusals import Refusal
    from kit.scopes import token_names
    config = _config(args)
    try:
        name, roles = staff.checked_name(args.name, token_names(config)), staff.checked_roles(args.role)
        password_hash = staff.hash_password(staff.checked_password(_password(args)))
    except Refusal as e:
        raise CliError(e.message) from None
    _staff_unit(config, lambda s: staff.add(s, name, password_hash, roles, _staff_audited(s, "add", name)))
    print(f"staff account {name} added ({roles})")


def cmd_staff_disable(args: argparse.Namespace) -> None:
    from domain import staff

    def disable(s: Any) -> None:
        _staff_audited(s, "disable", args.name)
        staff.set_disabled(s, staff.account(s, name=args.name).id, True, "")
    _staff_unit(_config(args), disable)
    print(f"staff account {args.name} disabled; its console sessions end at their next request")


def cmd_staff_list(args: argparse.Namespace) -> None:
    from domain import staff
    from domain.formats import china_time
    for a in _staff_unit(_config(args), staff.accounts):
        seen = china_time(a.last_sign_in_at) if a.last_sign_in_at else "never signed in"
        print(f"{a.name}\t{a.roles.replace(' ', ',')}\t{'disabled' if a.disabled else 'enabled'}\t{seen}")


def _check_database(config: Config) -> None:
    async def ping() -> None:
        from sqlalchemy import text

        from storage.db import create_engine
        from storage.reader import Reader
        engine = create_engine(config.database.url)
        reader = Reader(engine)
        try:
            await reader.run(lambda session: session.execute(text("SELECT 1")))
        finally:
            await reader.close()
            await engine.dispose()
    _run_db(ping)


def _run_db(fn: Callable[[], Awaitable[None]]) -> None:
    try:
        asyncio.run(fn())
    except (CliError, ConfigError):
        raise
    except BackupError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot reach the database: {e.strerror or e}") from None
    except Exception as e:
        from sqlalchemy.exc import DBAPIError, OperationalError
        if isinstance(e, (OperationalError, DBAPIError)):
            raise CliError(f"database error: {str(e.orig).splitlines()[0] if e.orig else e}") from None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distbot", description="WeChat distributor assistant")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="TOML config (default: $DISTBOT_CONFIG, else ./config.toml)")
        return p

    serve = with_config(sub.add_parser("serve", help="webhook, admin API and scheduler in one process"))
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(fn=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    with_config(db.add_parser("upgrade", help="apply schema migrations")).set_defaults(fn=cmd_db_upgrade)

    menu = sub.add_parser("menu", help="official-account menu").add_subparsers(dest="menu_command", required=True)
    with_config(menu.add_parser("push", help="create the menu through the WeChat API")).set_defaults(fn=cmd_menu_push)

    content = sub.add_parser("content", help="content packs").add_subparsers(dest="content_command", required=True)
    pack_import = with_config(content.add_parser("import", help="import a content pack zip (same checks as the upload)"))
    pack_import.add_argument("pack", metavar="PACK.zip")
    pack_import.set_defaults(fn=cmd_content_import)

    people = sub.add_parser("staff", help="console accounts of persons").add_subparsers(dest="staff_command",
                                                                                       required=True)
    add = with_config(people.add_parser("add", help="add an account; its password from stdin (asked twice on a terminal)"))
    add.add_argument("name")
    add.add_argument("--role", action="append", required=True, choices=SCOPES, help="a scope it holds (repeatable)")
    add.add_argument("--password-stdin", action="store_true", help="read the password as one line of stdin")
    add.set_defaults(fn=cmd_staff_add)
    disable = with_config(people.add_parser("disable", help="disable an account (its sessions end)"))
    disable.add_argument("name")
    disable.set_defaults(fn=cmd_staff_disable)
    with_config(people.add_parser("list", help="the accounts: name, roles, state, last sign-in")).set_defaults(
        fn=cmd_staff_list)

    start = sub.add_parser("init", help="write config.toml and a content pack for a trade into DIR")
    start.add_argument("--industry", required=True, choices=TRADES, help="the trade: " + ", ".join(
        f"{k} ({v})" for k, v in TRADES.items()))
    start.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to write them (default: .)")
    start.add_argument("--force", action="store_true", help="replace the files if they exist")
    start.set_defaults(fn=cmd_init)

    backup = with_config(sub.add_parser("backup", help="consistent online backup of the database"))
    backup.add_argument("dest")
    backup.set_defaults(fn=cmd_backup)
    restore = with_config(sub.add_parser("restore", help="restore a backup into the configured, empty database"))
    restore.add_argument("backup", metavar="BACKUP")
    restore.set_defaults(fn=cmd_restore)
    with_config(sub.add_parser("doctor", help="check a deployment, one line per check")).set_defaults(fn=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        status = args.fn(args)
    except (ConfigError, CliError) as e:
        print(f"distbot: {e}", file=sys.stderr)
        return e.status if isinstance(e, CliError) else 2
    except KeyboardInterrupt:
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
