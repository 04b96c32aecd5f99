"""Industry presets (CONTRACT §8): a configuration and a content pack for each trade the seed names.

Everything a preset says is data in its folder, `content/presets/<trade>/`: `config.toml` (the
trade's ranks, rates, freeze days and reward plans, written under the sandbox's `base.toml`) and
one folder per pack, `pack/` and for a seasonal trade `season/` (manifest.toml, scripts, trainings
as they are; the pictures drawn here with Pillow from the folder's `art.toml`, so the repository
carries no binary artwork). `distbot init --industry TRADE` (app/init_cmd.py) writes them out.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent
TRADES = {"fmcg": "快消品", "education": "教育培训", "services": "生活服务", "agriculture": "农产品",
          "manufacturing": "工业制造"}
# A preset's pack folders and the zip `distbot init` makes of each (its source folder beside it).
PACK_ZIPS = {"pack": "pack.zip", "season": "pack-season.zip"}
ART = "art.toml"
BASE_DATABASE_URL = '"sqlite+aiosqlite:///data/distbot.db"'
_WINDOW_LINE = re.compile(r'^(live_from|live_until) = "(\d{4})(-\d\d-\d\dT[^"]+)"$', re.MULTILINE)


def config_text(trade: str, database_url: str) -> str:
    """The trade's config.toml: the sandbox's base with this database, then the trade's sections."""
    base = (HERE / "base.toml").read_text(encoding="utf-8").replace(BASE_DATABASE_URL, json.dumps(database_url))
    return base + "\n" + (HERE / trade / "config.toml").read_text(encoding="utf-8")


def pack_folders(trade: str) -> list[str]:
    """The trade's pack folders, `pack` first."""
    return [name for name in PACK_ZIPS if (HERE / trade / name / "manifest.toml").is_file()]


def pack_files(trade: str, folder: str, today: date) -> dict[str, bytes]:
    """Every file of one of the trade's packs by its path in the zip: the folder's texts (a
    seasonal window moved to its next coming, seen from `today`) and the pictures art.toml draws."""
    from content.presets.drawing import pictures  # Pillow only when a pack is built, not for the trade names

    root = HERE / trade / folder
    files = {p.relative_to(root).as_posix(): p.read_bytes()
             for p in sorted(root.rglob("*")) if p.is_file() and p.name != ART}
    files["manifest.toml"] = next_season(files["manifest.toml"].decode("utf-8"), today).encode("utf-8")
    files.update(pictures(tomllib.loads((root / ART).read_text(encoding="utf-8"))))
    return files


def next_season(manifest: str, today: date) -> str:
    """A seasonal version's live_from/live_until moved on by whole years until its window has not
    yet ended on `today` (a preset written in any year starts with the coming season)."""
    found = {m.group(1): m for m in _WINDOW_LINE.finditer(manifest)}
    if "live_until" not in found:
        return manifest
    until = found["live_until"]
    years = 0
    while date.fromisoformat(f"{int(until.group(2)) + years}{until.group(3)[:6]}") <= today:
        years += 1
    return _WINDOW_LINE.sub(lambda m: f'{m.group(1)} = "{int(m.group(2)) + years}{m.group(3)}"', manifest)
