"""`distbot init --industry TRADE` (CONTRACT §2, §8): each trade's preset is written, stays within
the law, its packs pass the upload's validator, it refuses to overwrite without --force, and the
app started on it walks 注册 → 海报 → order → 收益 → 等级 (SQLite for every trade, PostgreSQL for one)."""

from __future__ import annotations

import io
import tomllib
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from aiohttp.test_utils import TestServer
from PIL import Image

from app.cli import main
from content.packs import ValidPack, validate_pack
from content.presets import TRADES
from domain.config import Config
from domain.formats import yuan
from handlers.content_packs import demo_command
from sandbox.platform import Platform
from tests.conftest import Harness, make_config
from tests.test_cli import assert_one_sentence, distbot
from tests.test_packs_support import upload
from wechat.dispatcher import REPLY_DEADLINE_SECONDS

BASE_SECTIONS = ("server", "wechat", "database", "admin", "pay")  # the sandbox's; the harness has its own
NEEDED_DETAILS = {"agriculture": {"产地", "批次"}}  # what every product of the trade must state


def check_law(trade: str, raw: dict[str, Any]) -> None:
    """≤ 3 levels; promotion asks for sales (never heads alone); rewards only on sales."""
    levels, ranks, rewards = raw["distribution"]["max_levels"], raw["ranks"], raw.get("rewards", {})
    assert 1 <= levels <= 3 and all(len(r["rates"]) <= levels for r in ranks)
    assert all(0 < rate < 0.5 for r in ranks for rate in r["rates"])
    assert ranks[0]["min_sales_fen"] == ranks[0]["min_team_size"] == 0
    assert all(r["min_sales_fen"] > 0 for r in ranks[1:]), "a promotion by headcount alone"
    assert set(rewards) <= {"repeat", "team_cap_fen", "team_tiers"}, "a reward that is not for sales"
    assert all(t["min_team_sales_fen"] > 0 and 0 < t["rate"] < 0.1 for t in rewards.get("team_tiers", []))
    assert ("repeat" in rewards) == (trade in ("fmcg", "services", "agriculture"))
    Config(**raw)  # the configuration loads


def check_pack(trade: str, shop: Path, zip_name: str, rank_keys: list[str]) -> ValidPack:
    """The zip holds exactly its source folder and passes the upload's validator; what §8 asks of it."""
    folder = shop / zip_name.removesuffix(".zip")
    with zipfile.ZipFile(shop / zip_name) as zf:
        assert sorted(zf.namelist()) == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                                               if p.is_file())
    pack = validate_pack(shop / zip_name, rank_keys)
    c = pack.content
    skus = {p["sku"] for p in c["products"]}
    assert skus <= {s["sku"] for s in c["scripts"]}, "a product without a script"
    assert all("{code}" in p["buy_url"] and NEEDED_DETAILS.get(trade, set()) <= set(p["details"])
               for p in c["products"])
    if zip_name == "pack.zip":
        assert len(skus) >= 3 and c["posters"] and len(c["trainings"]) >= 2
    return pack


async def poster(h: Harness, user: Any, text: str) -> list[str]:
    """The poster a chat asks for, opened with Pillow: its QR codes' texts."""
    reply = await h.send(user, "text", content=text)
    assert reply is not None and reply["type"] == "image", reply
    jpeg, kind, _ = h.platform.media[reply["media_id"]]
    with Image.open(io.BytesIO(jpeg)) as img:
        assert (img.format, img.size, kind) == ("JPEG", (1080, 1920), "image/jpeg")
        return [b.text for b in zxingcpp.read_barcodes(img.convert("L"), formats=zxingcpp.BarcodeFormat.QRCode)]


def fen(amount: int, rate: float) -> int:
    return int(amount * Decimal(str(rate)))


async def order(h: Harness, order_no: str, fen: int, code: str, *types: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for i, kind in enumerate(("paid", *types)):
        event = {"event_id": f"{order_no}-{i}", "order_no": order_no, "type": kind}
        if kind == "paid":
            event |= {"amount_fen": fen, "distributor_code": code}
        status, body = await h.api("POST", "/orders/events", json=event)
        assert status == 200, body
    return body


async def init_refusals(trade: str, shop: Path) -> None:
    """Nothing is overwritten without --force (exit 1, one sentence; run as a user runs it: the
    console script); with it, everything is, the pack's folder holding exactly what its zip holds."""
    config, zipped = shop / "config.toml", (shop / "pack.zip").read_bytes()
    config.write_text("# edited by hand\n", encoding="utf-8")
    (shop / "pack" / "stray.txt").write_text("left over", encoding="utf-8")
    code, _, err = await distbot("init", "--industry", trade, str(shop), cwd=shop.parent)
    assert code == 1
    assert_one_sentence(code, err, "config.toml", "--force")
    assert config.read_text(encoding="utf-8") == "# edited by hand\n" and (shop / "pack.zip").read_bytes() == zipped
    assert main(["init", "--industry", trade, str(shop), "--force"]) == 0
    assert "[[ranks]]" in config.read_text(encoding="utf-8") and not (shop / "pack" / "stray.txt").exists()


@pytest.mark.parametrize("trade, db_url", [(t, "sqlite") for t in TRADES] + [("agriculture", "postgresql")],
                         indirect=["db_url"])
async def test_a_preset_is_lawful_and_walks_from_sign_up_to_promotion(
        trade: str, db_url: str, tmp_path: Path, platform: Platform, wechat_server: TestServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    shop = tmp_path / "shop"
    assert main(["init", "--industry", trade, str(shop)]) == 0
    out = capsys.readouterr().out
    assert f"distbot serve --config {shop.resolve() / 'config.toml'}" in out and TRADES[trade] in out
    raw = tomllib.loads((shop / "config.toml").read_text(encoding="utf-8"))
    assert raw["wechat"]["mode"] == "sandbox"
    assert raw["database"]["url"] == f"sqlite+aiosqlite:///{shop.resolve() / 'data' / 'distbot.db'}"
    check_law(trade, raw)
    rank_keys = [r["key"] for r in raw["ranks"]]
    pack = check_pack(trade, shop, "pack.zip", rank_keys)
    if trade in ("education", "services"):  # a trial lesson or visit, and the training that sells it
        assert any("试听" in t["title"] or "体验" in t["title"] for t in pack.content["trainings"])
    if trade == "manufacturing":  # industrial goods sell on their parameters
        assert all(len(p["details"]) >= 5 for p in pack.content["products"])
    if trade == "agriculture":  # the origin on a poster; a seasonal version that comes and goes
        assert any("product.details.产地" in t["template"] for p in pack.content["posters"] for t in p["texts"])
        season = check_pack(trade, shop, "pack-season.zip", rank_keys)
        assert season.live_from is not None and season.live_until is not None and season.announce
        assert "pack-season.zip" in out
    else:
        assert not (shop / "pack-season.zip").exists()
    if trade == "manufacturing":  # once is enough: the same code for every trade
        await init_refusals(trade, shop)

    ranks = raw["ranks"]
    sections = {k: v for k, v in raw.items() if k not in BASE_SECTIONS}
    config = make_config(db_url, **sections)
    if trade == "services":  # as `distbot serve` in sandbox mode starts: the pack beside the config
        assert "loaded the content pack" in await demo_command(config, shop / "pack.zip")
    async with Harness(config, platform, wechat_server, reply_deadline=REPLY_DEADLINE_SECONDS) as h:
        if trade != "services":
            status, body = await upload(h, (shop / "pack.zip").read_bytes())
            assert status == 201 and body["live"], body
        boss, friend = h.user(), h.user()
        code = await h.register(boss, "13800138000", "张店主")
        friend_code = await h.register(friend, "13900139000", "李朋友", scene=code)
        drawn = await poster(h, boss, "海报")
        assert drawn == [t.url for t in platform.tickets.values() if t.scene == code]
        if trade == "agriculture":
            assert await poster(h, boss, "海报 origin") == drawn
            status, body = await upload(h, (shop / "pack-season.zip").read_bytes())
            assert status == 201 and body["window_state"] == "waiting" and not body["live"], body

        # The friend sells: the boss earns at depth 1. The boss sells up to the next rank's line.
        body = await order(h, "P-1", 10000, friend_code)
        assert [c["amount_fen"] for c in body["commissions"]] == [fen(10000, r) for r in ranks[0]["rates"]]
        line = ranks[1]["min_sales_fen"]
        await order(h, "P-2", line, code, "completed")
        earned = fen(line, ranks[0]["rates"][0]) + fen(10000, ranks[0]["rates"][1])
        earnings = await h.say(boss, "收益")  # the trade's freeze in force
        assert f"累计：{yuan(earned)}" in earnings and f"完成 {raw['distribution']['freeze_days']} 天后" in earnings
        status, body = await h.api("GET", f"/distributors/{code}")
        assert status == 200 and body["rank"] == ranks[1]["key"], body
        assert f"【我的等级】{ranks[1]['name']}" in await h.say(boss, "等级")
