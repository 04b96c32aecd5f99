"""The `distbot` console script, run as a user runs it: a subprocess, its exit status, its stderr."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from app.cli import _config, _served_links
from kit.menu import menu_payload
from sandbox.platform import Platform
from tests.db_support import migrated_sqlite
from tests.serve_support import DISTBOT, Served, free_port
from tests.test_config import live



def config_file(tmp_path: Path, db: Path, extra: str = "", *, migrated: bool = False) -> Path:
    """config.toml for a SQLite file; `migrated`: the file starts as a copy of the tests' migrated
    template (for commands whose test is not about migrating: a fresh schema takes seconds)."""
    if migrated:
        migrated_sqlite(db.parent, db.name)
    p = tmp_path / "config.toml"
    p.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{db}"\n{extra}', encoding="utf-8")
    return p


async def distbot(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(DISTBOT, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def assert_one_sentence(code: int, err: str, *words: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("distbot: ")
    for w in words:
        assert w in lines[0], (w, lines[0])


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_db_upgrade_creates_the_schema_on_a_fresh_path(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "dir" / "distbot.db"
    code, out, err = await distbot("db", "upgrade", "--config", str(config_file(tmp_path, db)), cwd=tmp_path)
    assert code == 0, err
    assert "up to date" in out
    assert {"distributors", "followers", "outbox", "processed_messages", "alembic_version"} <= tables(db)
    # Running it again is harmless.
    code, _, err = await distbot("db", "upgrade", "--config", str(config_file(tmp_path, db)), cwd=tmp_path)
    assert code == 0, err


async def test_db_upgrade_reads_distbot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "env.db"
    monkeypatch.setenv("DISTBOT_CONFIG", str(config_file(tmp_path, db)))
    code, _, err = await distbot("db", "upgrade", cwd=tmp_path)
    assert code == 0, err
    assert "distributors" in tables(db)


@pytest.mark.parametrize("toml,words", [
    ("[server]\nprot = 1\n", ("server.prot",)),
    ("[distribution]\nmax_levels = 4\n", ("distribution.max_levels",)),
    ("[server\n", ("TOML",)),
    ('[wechat]\nmode = "live"\napp_secret = "real"\n', ("admin.token",)),
], ids=["unknown-key", "four-levels", "broken-toml", "live-default-token"])
async def test_a_bad_config_is_one_sentence(tmp_path: Path, toml: str, words: tuple[str, ...]) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(toml, encoding="utf-8")
    code, _, err = await distbot("db", "upgrade", "--config", str(p), cwd=tmp_path)
    assert_one_sentence(code, err, *words)


async def test_serve_refuses_the_sandbox_token_in_live_mode(tmp_path: Path) -> None:
    """CONTRACT §7: live mode refuses the sandbox's defaults; serve stops before it listens."""
    p = config_file(tmp_path, tmp_path / "never.db", '[admin]\ntoken = "a-real-admin-token"\n'
                    + live(token="sandbox-token"))
    code, out, err = await distbot("serve", "--config", str(p), "--port", str(free_port()), cwd=tmp_path)
    assert_one_sentence(code, err, "wechat.token", "sandbox-token", "live mode")
    assert "serving" not in out and not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("args", [("serve",), ("menu", "push"), ("backup", "b.db"), ("content", "import", "x.zip")])
async def test_every_command_refuses_a_bad_config_in_one_sentence(tmp_path: Path, args: tuple[str, ...]) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[wechat]\ntokne = 'x'\n", encoding="utf-8")
    code, _, err = await distbot(*args, "--config", str(p), cwd=tmp_path)
    assert_one_sentence(code, err, "wechat.tokne")


async def test_a_missing_config_file_is_one_sentence(tmp_path: Path) -> None:
    code, _, err = await distbot("db", "upgrade", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert_one_sentence(code, err, "nope.toml")


@pytest.mark.parametrize("args", [("db", "upgrade"), ("serve",), ("menu", "push"), ("backup", "out.dump")])
async def test_an_unreachable_postgresql_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         args: tuple[str, ...]) -> None:
    monkeypatch.setenv("DISTBOT_DATABASE__URL", "postgresql+asyncpg://x@127.0.0.1:1/x")
    monkeypatch.chdir(tmp_path)
    code, _, err = await distbot(*args, cwd=tmp_path)
    assert_one_sentence(code, err)
    assert "database" in err or "pg_dump" in err


# ---- menu push ------------------------------------------------------------------------------------
async def test_menu_push_creates_the_menu_through_the_api(tmp_path: Path, platform: Platform,
                                                          wechat_server: TestServer) -> None:
    p = config_file(tmp_path, tmp_path / "m.db",
                    f'[wechat]\napi_base_url = "{wechat_server.make_url("/cgi-bin/")}"\n', migrated=True)
    code, out, err = await distbot("menu", "push", "--config", str(p), cwd=tmp_path)
    assert code == 0, err
    assert "menu created" in out
    assert platform.menu == menu_payload()
    assert [name for name, _ in platform.calls] == ["token", "menu/create"]


async def test_menu_push_refused_by_wechat_is_one_sentence(tmp_path: Path, platform: Platform,
                                                           wechat_server: TestServer) -> None:
    p = config_file(tmp_path, tmp_path / "m.db",
                    f'[wechat]\napp_secret = "wrong"\napi_base_url = "{wechat_server.make_url("/cgi-bin/")}"\n',
                    migrated=True)
    code, _, err = await distbot("menu", "push", "--config", str(p), cwd=tmp_path)
    assert_one_sentence(code, err, "40125")
    assert platform.menu is None


async def test_menu_push_to_an_unreachable_wechat_is_one_sentence(tmp_path: Path) -> None:
    p = config_file(tmp_path, tmp_path / "m.db", '[wechat]\napi_base_url = "http://127.0.0.1:1/cgi-bin/"\n',
                    migrated=True)
    code, _, err = await distbot("menu", "push", "--config", str(p), cwd=tmp_path)
    assert_one_sentence(code, err)


# ---- backup ---------------------------------------------------------------------------------------
async def test_db_upgrade_and_backup_on_both_databases(tmp_path: Path, empty_db_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    db_url = empty_db_url  # `db upgrade` migrates it from scratch
    monkeypatch.setenv("DISTBOT_DATABASE__URL", db_url)
    code, _, err = await distbot("db", "upgrade", cwd=tmp_path)
    assert code == 0, err
    dest = tmp_path / "backup.out"
    code, _, err = await distbot("backup", str(dest), cwd=tmp_path)
    assert code == 0, err
    if db_url.startswith("sqlite"):
        assert "distributors" in tables(dest)
    else:
        proc = await asyncio.create_subprocess_exec(shutil.which("pg_restore") or "pg_restore", "--list", str(dest),
                                                    stdout=asyncio.subprocess.PIPE)
        listing, _ = await proc.communicate()
        assert proc.returncode == 0 and b"TABLE public distributors" in listing


async def test_backup_writes_a_database_that_opens(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    p = config_file(tmp_path, db, migrated=True)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO distributors (code, openid, phone, name, rank, status, registered_at) "
                     "VALUES ('K7QF2M', 'o1', '13800138000', '张三', 'junior', 'active', '2026-11-25 02:00:00')")
    dest = tmp_path / "backups" / "copy.db"
    code, out, err = await distbot("backup", str(dest), "--config", str(p), cwd=tmp_path)
    assert code == 0, err
    assert str(dest) in out
    with sqlite3.connect(dest) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT code, name FROM distributors").fetchall() == [("K7QF2M", "张三")]


async def test_backup_onto_an_existing_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    p = config_file(tmp_path, db, migrated=True)
    dest = tmp_path / "precious.db"
    dest.write_bytes(b"do not overwrite")
    code, _, err = await distbot("backup", str(dest), "--config", str(p), cwd=tmp_path)
    assert_one_sentence(code, err, "exists")
    assert dest.read_bytes() == b"do not overwrite"


async def test_backup_without_a_database_is_one_sentence(tmp_path: Path) -> None:
    p = config_file(tmp_path, tmp_path / "never-created.db")
    code, _, err = await distbot("backup", str(tmp_path / "b.db"), "--config", str(p), cwd=tmp_path)
    assert_one_sentence(code, err, "never-created.db")
    assert not (tmp_path / "b.db").exists()


async def test_usage_errors_exit_non_zero(tmp_path: Path) -> None:
    code, _, err = await distbot("frobnicate", cwd=tmp_path)
    assert code != 0 and "Traceback" not in err and "usage" in err


# ---- serve ----------------------------------------------------------------------------------------
async def test_serve_creates_the_schema_and_answers_healthz(tmp_path: Path) -> None:
    db = tmp_path / "served.db"
    served = await Served(config_file(tmp_path, db), tmp_path).start()
    try:
        assert "distributors" in tables(db)
    finally:
        await served.stop()


def test_serve_on_another_port_links_to_it_in_sandbox_mode(tmp_path: Path) -> None:
    """`serve --port` in sandbox mode: the links in chat (public_url on this machine) follow the
    port; a public_url elsewhere is kept as configured."""
    p = config_file(tmp_path, tmp_path / "s.db")
    config = _served_links(_config(argparse.Namespace(config=str(p), host=None, port=18999)))
    assert config.server.public_url == "http://127.0.0.1:18999"
    p.write_text(p.read_text(encoding="utf-8") + '[server]\npublic_url = "https://shop.example.com/bot"\n',
                 encoding="utf-8")
    config = _served_links(_config(argparse.Namespace(config=str(p), host=None, port=18999)))
    assert config.server.public_url == "https://shop.example.com/bot"


async def test_serve_on_a_port_in_use_is_one_sentence(tmp_path: Path) -> None:
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = config_file(tmp_path, tmp_path / "s.db", migrated=True)
        proc = await asyncio.create_subprocess_exec(DISTBOT, "serve", "--config", str(p), "--port", str(port),
                                                    cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            raise AssertionError("distbot serve kept running on a port that is in use") from None
    assert_one_sentence(proc.returncode or 0, err.decode(), str(port))
