"""Scheduled backups and `distbot restore` (CONTRACT §2, §9), on both databases: a backup taken by
the `backup` job while orders are being posted restores into an empty database, with every ledger
row of the orders answered before it and each balance equal to its entries; a restore into a
database that has tables exits 1 and changes nothing; the job's next run prunes to `keep`."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from domain.config import ConfigError, load_config
from domain.formats import CHINA
from handlers.backups import backup as backup_job
from kit.app_keys import READER
from sandbox.platform import Platform
from storage.backup import BackupError, verify
from storage.restore import restore
from storage.tables import ENTRIES
from tests.conftest import Harness, make_config
from tests.db_support import pg_database
from tests.money_support import check_invariants, event, post_event, seed, snapshot
from tests.test_cli import assert_one_sentence, distbot
from tests.test_jobs import until_runs

WRITERS, ORDERS_EACH = 4, 12


@asynccontextmanager
async def empty_database(db_url: str, tmp_path: Path, pg_server_url: str | None) -> AsyncIterator[str]:
    """A database of the same kind as `db_url` with no tables at all."""
    if db_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'restored' / 'distbot.db'}"
        return
    assert pg_server_url is not None
    async with pg_database(pg_server_url, migrated=False) as url:
        yield url


def config_file(tmp_path: Path, url: str) -> Path:
    p = tmp_path / "target.toml"
    p.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    return p


def ledger(session: Any) -> dict[int, dict[str, Any]]:
    return {r.id: r._asdict() for r in session.execute(select(ENTRIES))}


async def test_a_backup_under_order_load_restores_whole_and_old_ones_are_pruned(
        db_url: str, pg_server_url: str | None, platform: Platform, wechat_server: TestServer, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    config = make_config(db_url, backup={"dir": str(folder), "keep": 2})
    async with Harness(config, platform, wechat_server) as h:
        sellers = [(await seed(h, name=f"分销员{i}"))[0] for i in range(WRITERS)]
        answered: list[str] = []
        numbers = itertools.count(1)
        halfway = asyncio.Event()

        async def post_orders(seller: Any) -> None:
            for _ in range(ORDERS_EACH):
                order_no = f"BK{next(numbers):04d}"
                status, body = await post_event(h, event(order_no, "paid", amount_fen=10_000 + len(answered),
                                                         distributor_code=seller.code))
                assert status == 200, body
                answered.append(order_no)
                if len(answered) >= WRITERS * ORDERS_EACH // 3:
                    halfway.set()

        load = [asyncio.create_task(post_orders(s)) for s in sellers]
        await halfway.wait()
        before_backup = set(answered)
        status, body = await h.api("POST", "/jobs/backup/run")
        assert status == 202, body
        run = await until_runs(h, "backup", 1)
        await asyncio.gather(*load)
        assert run["last_status"] == "ok", run
        assert run["next_run_at"].endswith("T03:00:00+08:00")  # [backup] schedule's default, China time
        (made,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
        assert made.suffix == (".db" if db_url.startswith("sqlite") else ".dump")
        source = await h.app[READER].run(ledger)

        # Into an empty database: every ledger row of the orders answered before the backup, no row
        # the source lacks, and the restored service's balances equal to their entries.
        async with empty_database(db_url, tmp_path, pg_server_url) as target:
            assert "restored" in await restore(target, made)  # what `distbot restore` runs
            async with Harness(make_config(target), platform, wechat_server) as restored:
                copied = await restored.app[READER].run(ledger)
                assert all(source[i] == row for i, row in copied.items())
                wanted = {i for i, row in source.items() if row["order_no"] in before_backup}
                assert wanted and wanted <= set(copied)
                await check_invariants(restored)
                # The restored database has tables now: a second restore is refused and changes nothing.
                before = await snapshot(restored)
                code, _, err = await distbot("restore", str(made), "--config", str(config_file(tmp_path, target)),
                                             cwd=tmp_path)
                assert code == 1 and "not empty" in err
                assert_one_sentence(code, err, "nothing was changed")
                assert await snapshot(restored) == before

        # A damaged or missing backup is one sentence, before anything is touched.
        damaged = tmp_path / f"damaged{made.suffix}"
        damaged.write_bytes(made.read_bytes()[: made.stat().st_size // 2])
        for path, words in ((damaged, "damaged"), (tmp_path / "missing.db", "no backup at")):
            with pytest.raises(BackupError, match=words):
                await restore(config.database.url, path)
        if db_url.startswith("sqlite"):  # an earlier database's -wal beside an empty path would be replayed onto it
            (tmp_path / "moved").mkdir()
            (tmp_path / "moved" / "distbot.db-wal").write_bytes(b"frames of another database")
            with pytest.raises(BackupError, match="left from an earlier database"):
                await restore(f"sqlite+aiosqlite:///{tmp_path / 'moved' / 'distbot.db'}", made)
            assert not (tmp_path / "moved" / "distbot.db").exists()

        # The next run: a new checked backup, the oldest pruned to keep = 2 (an old one planted: its
        # name says 2020); a .partial of a run killed long ago goes too, one being written stays.
        oldest = folder / f"distbot-20200101-030000{made.suffix}"
        killed, writing = folder / f".{oldest.name}.partial", folder / ".distbot-now.db.partial"
        for p in (oldest, killed, writing):
            p.write_bytes(b"half a backup")
        os.utime(killed, (made.stat().st_mtime - 7200,) * 2)
        h.clock.move(days=1)
        assert (await h.api("POST", "/jobs/backup/run"))[0] == 202
        assert (await until_runs(h, "backup", 2))["last_status"] == "ok"
        kept = {p.name for p in folder.iterdir()}
        assert {k for k in kept if not k.startswith(".")} == {made.name, max(kept)}, kept
        assert killed.name not in kept and writing.name in kept
        newest = folder / max(kept)
        assert await verify(newest) in ("sqlite", "postgresql")
        async with h.http.get(h.url + "/metrics") as resp:  # type: ignore[union-attr]
            metrics = await resp.text()
        (gauge,) = [line for line in metrics.splitlines() if line.startswith("distbot_backup_last_success_timestamp")]
        assert float(gauge.split()[1]) == pytest.approx(newest.stat().st_mtime)


def test_the_backup_section_sets_the_jobs_folder_and_schedule(tmp_path: Path) -> None:
    p = tmp_path / "etc" / "config.toml"
    p.parent.mkdir()
    p.write_text('[backup]\ndir = "bk"\nschedule = "30 2 * * 1-5"\nkeep = 3\n', encoding="utf-8")
    config = load_config(p)
    assert config.backup.dir == str(tmp_path / "etc" / "bk") and config.backup.keep == 3  # beside the config file
    job = backup_job.under(config)
    assert job.scheduled(config)
    saturday = datetime(2026, 12, 12, 12, 0, tzinfo=CHINA)
    assert job.next_run_at(saturday) == datetime(2026, 12, 14, 2, 30, tzinfo=CHINA)  # cron's 1-5: Monday to Friday
    for line, words in (('schedule = "0 3 * *"', "backup.schedule: needs five fields"),
                        ('schedule = "0 3 * * 8"', "backup.schedule"), ("keep = 0", "backup.keep")):
        p.write_text(f"[backup]\n{line}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(words)):
            load_config(p)
    p.write_text('[backup]\nschedule = ""\n', encoding="utf-8")
    assert not backup_job.under(load_config(p)).scheduled(load_config(p))  # off; POST .../run still runs it
