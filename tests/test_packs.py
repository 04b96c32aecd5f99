"""Content packs: the validator against a table of broken packs, hostile zips, and the upload,
list, activate and command-line paths."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from content.packs import PackInvalid, validate_pack
from tests.conftest import ADMIN_TOKEN, Harness
from tests.test_packs_support import MANIFEST, demo, png, small_pack, upload, zip_of

RANKS = ["junior", "gold"]


def problems_of(tmp_path: Path, data: bytes) -> list[dict[str, Any]]:
    path = tmp_path / "pack.zip"
    path.write_bytes(data)
    with pytest.raises(PackInvalid) as e:
        validate_pack(path, RANKS)
    return [p.as_json() for p in e.value.problems]


def has(problems: list[dict[str, Any]], file: str, field: str, words: str) -> bool:
    return any(p["file"] == file and p["field"] == field and words in p["message"] for p in problems)


def bomb_png(side: int) -> bytes:
    """A tiny PNG whose header claims side×side pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_small_and_demo_packs_are_valid(tmp_path: Path) -> None:
    path = tmp_path / "small.zip"
    path.write_bytes(zip_of(small_pack()))
    pack = validate_pack(path, RANKS)
    assert (pack.name, pack.version, pack.counts()) == ("winter-2026", "1", {
        "products": 1, "scripts": 1, "posters": 1, "trainings": 1})
    assert set(pack.files) == {"images/sku1.png", "posters/bg.png"}
    path.write_bytes(demo())
    assert validate_pack(path, RANKS).counts() == {"products": 3, "scripts": 6, "posters": 3, "trainings": 3}


M = "manifest.toml"
BROKEN: list[tuple[str, dict[str, Any], list[tuple[str, str, str]]]] = [
    ("toml syntax", {"manifest.toml": MANIFEST.replace('name = "有机红枣礼盒"', 'name = "有机红枣礼盒')},
     [(M, "", "TOML 语法错误")]),
    ("missing key", {"manifest.toml": MANIFEST.replace('title = "朋友圈文案"\n', "")},
     [(M, "scripts[0].title", "缺少必填的键 'title'")]),
    ("unknown key", {"manifest.toml": MANIFEST.replace("price_fen = 12900", "price_fen = 12900\ncolour = 1")},
     [(M, "products[0].colour", "未知的键 'colour'")]),
    ("unknown section", {"manifest.toml": MANIFEST + "\n[[product]]\nsku = 'x'\n"},
     [(M, "product", "未知的键")]),
    ("wrong type", {"manifest.toml": MANIFEST.replace("price_fen = 12900", 'price_fen = "129"')},
     [(M, "products[0].price_fen", "须为整数")]),
    ("duplicate sku", {"manifest.toml": MANIFEST + '\n[[products]]\nsku = "sku-1"\nname = "再来一个"\nprice_fen = 1\n'},
     [(M, "products[1].sku", "重复的 sku 'sku-1'")]),
    ("duplicate key", {"manifest.toml": MANIFEST + '\n[[scripts]]\nkey = "sku1-moments"\ntitle = "x"\n'
                                                   'template = "scripts/sku1.txt.j2"\n'},
     [(M, "scripts[1].key", "重复的 key")]),
    ("file absent", {"scripts/sku1.txt.j2": None}, [(M, "scripts[0].template", "压缩包里没有这个文件")]),
    ("path outside", {"manifest.toml": MANIFEST.replace("scripts/sku1.txt.j2", "../sku1.txt.j2")},
     [(M, "scripts[0].template", "须相对于压缩包根目录")]),
    ("not an image", {"images/sku1.png": b"not a picture"}, [("images/sku1.png", "products[0].image", "不是 Pillow 能打开的图片")]),
    ("image too wide", {"images/sku1.png": png(4100, 8)}, [("images/sku1.png", "products[0].image", "4096")]),
    ("decompression bomb", {"images/sku1.png": bomb_png(30000)},
     [("images/sku1.png", "products[0].image", "解压炸弹")]),
    ("image over 10 MB", {"images/sku1.png": os.urandom(10 * 1024 * 1024 + 10)},
     [("images/sku1.png", "products[0].image", "图片最多 10 MB")]),
    ("template syntax", {"scripts/sku1.txt.j2": "第一行\n{{ distributor.name }\n"},
     [("scripts/sku1.txt.j2", "scripts[0].template", "模板错误")]),
    ("template unknown variable", {"scripts/sku1.txt.j2": "{{ os.environ }}"},
     [("scripts/sku1.txt.j2", "scripts[0].template", "unknown variable 'os'")]),
    ("template escape", {"scripts/sku1.txt.j2": "{{ ''.__class__.__mro__ }}"},
     [("scripts/sku1.txt.j2", "scripts[0].template", "not allowed")]),
    ("poster text template", {"manifest.toml": MANIFEST.replace("{{ distributor.name }} 邀你一起",
                                                                "{{ product.name }}")},
     [(M, "posters[0].texts[0].template", "没有 sku")]),
    ("qr outside", {"manifest.toml": MANIFEST.replace("x = 200, y = 420", "x = 300, y = 420")},
     [(M, "posters[0].qr", "超出了 400×640 的背景图")]),
    ("text outside", {"manifest.toml": MANIFEST.replace("x = 20, y = 440", "x = 20, y = 630")},
     [(M, "posters[0].texts[0]", "超出了 400×640 的背景图")]),
    ("bad colour", {"manifest.toml": MANIFEST.replace('"#333333"', '"dark"')},
     [(M, "posters[0].texts[0].color", "'dark' 不是颜色")]),
    ("unknown rank", {"manifest.toml": MANIFEST.replace('ranks = ["junior"]', 'ranks = ["platinum"]')},
     [(M, "trainings[0].ranks", "未知的等级 'platinum'")]),
    ("unknown rank on a script and a poster",
     {"manifest.toml": MANIFEST.replace('template = "scripts/sku1.txt.j2"', 'template = "scripts/sku1.txt.j2"\nranks = ["vip"]')
      .replace('key = "default"', 'key = "default"\nranks = ["gold", "vip2"]')},
     [(M, "scripts[0].ranks", "未知的等级 'vip'"), (M, "posters[0].ranks", "未知的等级 'vip2'")]),
    ("unknown sku", {"manifest.toml": MANIFEST.replace('sku = "SKU-1"\ntitle', 'sku = "SKU-9"\ntitle')},
     [(M, "scripts[0].sku", "SKU-9")]),
    ("training picture absent", {"trainings/newcomer-1.md": "![x](../images/none.png)"},
     [(M, "trainings[0].body", "压缩包里没有这个文件")]),
    ("no manifest", {"manifest.toml": None, "pack/manifest.toml": MANIFEST}, [(M, "", "pack/manifest.toml")]),
    ("not utf-8", {"trainings/newcomer-1.md": "培训".encode("gbk")},
     [("trainings/newcomer-1.md", "trainings[0].body", "不是 UTF-8 文本")]),
]


@pytest.mark.parametrize("files,expected", [(f, e) for _, f, e in BROKEN], ids=[n for n, _, _ in BROKEN])
def test_validator_names_each_problem(tmp_path: Path, files: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    problems = problems_of(tmp_path, zip_of(small_pack(**files)))
    for file, field, words in expected:
        assert has(problems, file, field, words), problems


def test_toml_error_has_line_and_column(tmp_path: Path) -> None:
    bad = MANIFEST.replace('version = "1"', 'version = = "1"')
    [p] = problems_of(tmp_path, zip_of(small_pack(bad)))
    assert p["line"] == 3 and p["column"] >= 1


def test_template_error_has_its_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, zip_of(small_pack(**{"scripts/sku1.txt.j2": "第一行\n第二行 {% if %}\n"})))
    assert problems[0]["line"] == 2


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    manifest = (MANIFEST.replace("price_fen = 12900", "price_fen = -1\nweight = 3")
                .replace("x = 200, y = 420", "x = 390, y = 420").replace('title = "新人第一课"\n', "")
                .replace('title = "朋友圈文案"\n', "").replace('version = "1"', 'version = "1"\nauthor = "me"'))
    files = {"scripts/sku1.txt.j2": "好\n{{ distributor.name }", "images/sku1.png": b"junk",
             "trainings/newcomer-1.md": None}
    problems = problems_of(tmp_path, zip_of(small_pack(manifest, **files)))
    found = {(p["file"], p["field"]) for p in problems}
    assert {(M, "pack.author"), (M, "products[0].price_fen"), (M, "products[0].weight"),
            ("images/sku1.png", "products[0].image"), (M, "scripts[0].title"),
            ("scripts/sku1.txt.j2", "scripts[0].template"), (M, "posters[0].qr"), (M, "trainings[0].title"),
            (M, "trainings[0].body")} <= found, problems


# ---- hostile zips -------------------------------------------------------------------------------
def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _lying_size(data: bytes, size: int) -> bytes:
    """The zip with the first central-directory entry claiming `size` uncompressed bytes."""
    at = data.index(b"PK\x01\x02")
    return data[:at + 24] + struct.pack("<I", size) + data[at + 28:]


MANIFEST_ONLY = [("manifest.toml", MANIFEST.encode())]
HOSTILE = [
    ("traversal", _zip(MANIFEST_ONLY + [("../evil.txt", b"x")]), "路径穿越"),
    ("traversal inside", _zip(MANIFEST_ONLY + [("a/../../evil.txt", b"x")]), "路径穿越"),
    ("absolute", _zip(MANIFEST_ONLY + [("/etc/cron.d/evil", b"x")]), "绝对路径"),
    ("backslash", _zip(MANIFEST_ONLY + [("..\\evil.txt", b"x")]), "反斜杠"),
    ("symlink", _zip(MANIFEST_ONLY + [_symlink("images/sku1.png", "/etc/passwd")]), "符号链接"),
    ("too many members", _zip(MANIFEST_ONLY + [(f"f/{i}.txt", b"") for i in range(2001)]), "最多 2000 个"),
    ("zip bomb ratio", _zip(MANIFEST_ONLY + [("zeros.bin", bytes(8 * 1024 * 1024))]), "压缩炸弹"),
    ("huge total", _lying_size(_zip([("manifest.toml", MANIFEST.encode())]), 300 * 1024 * 1024), "解压后最多 200 MiB"),
    ("not a zip", b"PK\x03\x04 definitely not a zip", "不是可读取的 zip 文件"),
]


@pytest.mark.parametrize("data,words", [(d, w) for _, d, w in HOSTILE], ids=[n for n, _, _ in HOSTILE])
def test_hostile_zips_are_refused_before_extraction(tmp_path: Path, data: bytes, words: str) -> None:
    problems = problems_of(tmp_path, data)
    assert any(words in p["message"] for p in problems), problems


def test_member_lying_about_its_size_is_caught(tmp_path: Path) -> None:
    data = zip_of(small_pack())
    at = data.index(b"PK\x01\x02")  # the first member is manifest.toml; claim it is 10 bytes
    problems = problems_of(tmp_path, data[:at + 24] + struct.pack("<I", 10) + data[at + 28:])
    assert any(p["file"] == "manifest.toml" for p in problems), problems


# ---- the HTTP API -------------------------------------------------------------------------------
async def test_upload_list_conflict_and_activate(harness: Harness) -> None:
    status, body = await upload(harness, zip_of(small_pack()))
    assert status == 201, body
    assert {k: body[k] for k in ("name", "version", "products", "scripts", "posters", "trainings")} == {
        "name": "winter-2026", "version": "1", "products": 1, "scripts": 1, "posters": 1, "trainings": 1}
    assert isinstance(body["id"], int) and body["live"] is True
    v1 = body["id"]

    status, body = await upload(harness, zip_of(small_pack()))
    assert status == 409 and body["error"] == "pack_exists"

    status, body = await upload(harness, zip_of(small_pack(MANIFEST.replace('version = "1"', 'version = "2"'))))
    assert status == 201 and body["live"] is True
    v2 = body["id"]
    status, body = await harness.api("GET", "/content-packs")
    assert status == 200
    assert [(p["id"], p["version"], p["live"]) for p in body["packs"]] == [(v2, "2", True), (v1, "1", False)]

    status, body = await harness.api("POST", f"/content-packs/{v1}/activate")
    assert status == 200 and body["live"] is True and body["version"] == "1"
    status, body = await harness.api("GET", "/content-packs")
    assert {p["version"]: p["live"] for p in body["packs"]} == {"1": True, "2": False}
    status, body = await harness.api("GET", f"/content-packs/{v1}")
    assert status == 200 and body["items"]["scripts"] == ["sku1-moments"]
    status, body = await harness.api("POST", "/content-packs/999999/activate")
    assert status == 404

    status, spec = await harness.api("GET", "/openapi.json")
    assert "/api/content-packs" in spec["paths"] and "/api/content-packs/{id}/activate" in spec["paths"]


async def test_invalid_and_oversized_uploads_store_nothing(harness: Harness) -> None:
    bad = zip_of(small_pack(MANIFEST.replace('title = "朋友圈文案"\n', ""), **{"images/sku1.png": b"junk"}))
    status, body = await upload(harness, bad)
    assert status == 422 and body["error"] == "invalid_pack"
    assert {(d["file"], d["field"]) for d in body["details"]} >= {
        ("manifest.toml", "scripts[0].title"), ("images/sku1.png", "products[0].image")}

    status, body = await upload(harness, _zip(MANIFEST_ONLY + [("../evil.txt", b"x")]))
    assert status == 422 and "路径穿越" in body["details"][0]["message"]

    big = os.urandom(1024 * 1024) * 51  # 51 MiB, sent as it comes: no Content-Length shortcut
    async def chunks() -> Any:
        boundary = "distbotboundary"
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"pack\"; filename=\"big.zip\"\r\n"
               "Content-Type: application/zip\r\n\r\n").encode()
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]
        yield f"\r\n--{boundary}--\r\n".encode()
    assert harness.http is not None
    async with harness.http.post(harness.url + "/api/content-packs", data=chunks(), headers={
            "Authorization": f"Bearer {ADMIN_TOKEN}",
            "Content-Type": "multipart/form-data; boundary=distbotboundary"}) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "too_large"

    status, body = await upload(harness, zip_of(small_pack()), field="file")
    assert status == 400
    status, body = await upload(harness, zip_of(small_pack()), token="wrong")
    assert status == 401

    status, body = await harness.api("GET", "/content-packs")
    assert body == {"packs": [], "total": 0}


# ---- the command line ---------------------------------------------------------------------------
def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/cli.db"\n')
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    good.write_bytes(zip_of(small_pack()))
    bad.write_bytes(zip_of(small_pack(**{"scripts/sku1.txt.j2": None})))

    assert main(["content", "import", str(good), "--config", str(config)]) == 0
    assert "imported content pack winter-2026 version 1" in capsys.readouterr().out
    assert main(["content", "import", str(good), "--config", str(config)]) == 2
    assert "already stored" in capsys.readouterr().err
    assert main(["content", "import", str(bad), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "没有通过检查" in err and "scripts[0].template" in err and "Traceback" not in err
    assert main(["content", "import", str(tmp_path / "none.zip"), "--config", str(config)]) == 2
