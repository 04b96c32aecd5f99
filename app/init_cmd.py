"""`distbot init --industry TRADE [DIR]`: a configuration and a content pack for a trade (CONTRACT §2,
§8), written from the presets in content/presets/. The pack is checked by the upload's validator
before anything is written; nothing existing is overwritten without --force."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

from content.demo import make_zip
from content.packs import PackInvalid, ValidPack, validate_pack
from content.presets import PACK_ZIPS, TRADES, config_text, pack_files, pack_folders
from domain.clock import Clock
from domain.formats import CHINA, china_time


class InitRefused(Exception):
    """Something init would write is already there (exit status 1, nothing written)."""


def targets(trade: str, folder: Path) -> list[Path]:
    """What init writes for a trade: config.toml, then each pack's zip and source folder."""
    return [folder / "config.toml"] + [folder / p for name in pack_folders(trade)
                                       for p in (PACK_ZIPS[name], PACK_ZIPS[name].removesuffix(".zip"))]


def init(trade: str, folder: Path, *, force: bool = False) -> str:
    """Write the trade's config.toml and packs into `folder`; what to do next, for stdout."""
    existing = [p for p in targets(trade, folder) if p.exists()]
    if existing and not force:
        raise InitRefused(f"{existing[0]} already exists; nothing was written (add --force to replace "
                          + ", ".join(p.name for p in existing) + ")")
    folder = folder.resolve()
    config = config_text(trade, f"sqlite+aiosqlite:///{folder / 'data' / 'distbot.db'}")
    rank_keys = [r["key"] for r in tomllib.loads(config)["ranks"]]
    today = Clock().now().astimezone(CHINA).date()
    packs = {name: (files, make_zip(files)) for name in pack_folders(trade)
             for files in [pack_files(trade, name, today)]}
    checked = {name: _checked(data, rank_keys) for name, (_, data) in packs.items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(config, encoding="utf-8")
    for name, (files, data) in packs.items():
        zip_path = folder / PACK_ZIPS[name]
        _write_folder(zip_path.with_suffix(""), files)
        zip_path.write_bytes(data)
    return _next_steps(trade, folder, checked)


def _checked(data: bytes, rank_keys: list[str]) -> ValidPack:
    """The pack as the upload checks it (a preset that fails is a bug of ours, said plainly)."""
    with tempfile.TemporaryDirectory(prefix="distbot-init-") as tmp:
        path = Path(tmp) / "pack.zip"
        path.write_bytes(data)
        try:
            return validate_pack(path, rank_keys)
        except PackInvalid as e:
            raise RuntimeError("the preset's pack fails the validator: " + "; ".join(map(str, e.problems))) from None


def _write_folder(root: Path, files: dict[str, bytes]) -> None:
    """The pack's source folder, replaced as a whole so that it holds exactly what the zip holds."""
    if root.is_dir():
        shutil.rmtree(root)
    elif root.exists():
        root.unlink()
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _next_steps(trade: str, folder: Path, packs: dict[str, ValidPack]) -> str:
    config = folder / "config.toml"
    lines = [f"wrote the {TRADES[trade]} preset to {folder}: config.toml (sandbox mode, SQLite under data/)"]
    for name, pack in packs.items():
        c = pack.counts()
        window = (f", live from {china_time(pack.live_from)} until {china_time(pack.live_until)}"
                  if pack.live_from and pack.live_until else "")
        lines.append(f"  {PACK_ZIPS[name]} ({pack.name} version {pack.version}: {c['products']} products, "
                     f"{c['scripts']} scripts, {c['posters']} posters, {c['trainings']} trainings{window}) "
                     f"and its source folder {PACK_ZIPS[name].removesuffix('.zip')}/")
    lines += ["next:", f"  distbot serve --config {config}",
              f"  (in sandbox mode serve imports {folder / 'pack.zip'} when no content pack is live yet;"
              " after editing pack/, zip its contents, raise the version and run"
              f" `distbot content import {folder / 'pack.zip'} --config {config}`)"]
    for name in packs:
        if name != "pack":
            lines.append(f"  distbot content import {folder / PACK_ZIPS[name]} --config {config}"
                         "   # the seasonal version: the content job switches it on and off")
    return "\n".join(lines)
