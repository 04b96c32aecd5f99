"""Helpers shared by the content tests (packs, posters, scripts, trainings); no tests here."""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import aiohttp
from PIL import Image

from content.demo import demo_zip, make_zip
from tests.conftest import Harness

MANIFEST = """\
[pack]
name = "winter-2026"
version = "1"

[[products]]
sku = "SKU-1"
name = "有机红枣礼盒"
price_fen = 12900
selling_points = ["新疆若羌产地直供", "无添加"]
image = "images/sku1.png"

[[scripts]]
key = "sku1-moments"
sku = "SKU-1"
title = "朋友圈文案"
template = "scripts/sku1.txt.j2"

[[posters]]
key = "default"
background = "posters/bg.png"
qr = {x = 200, y = 420, size = 180}
texts = [{template = "{{ distributor.name }} 邀你一起", x = 20, y = 440, size = 28, color = "#333333"}]

[[trainings]]
key = "newcomer-1"
title = "新人第一课"
body = "trainings/newcomer-1.md"
ranks = ["junior"]
"""

SCRIPT = "{{ distributor.name }}推荐：{{ product.name }} 只要 {{ product.price }}，点 {{ share_url }}"
TRAINING = "# 欢迎\n\n第一步：回复**海报**。\n\n<script>alert(1)</script>\n"


def png(width: int, height: int, colour: tuple[int, int, int] = (240, 200, 160)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


@lru_cache(maxsize=1)
def _background() -> bytes:
    return png(400, 640)


def small_pack(manifest: str = MANIFEST, **files: Any) -> dict[str, Any]:
    """A small valid pack as {path: content}; keyword arguments (small_pack(**{"a/b.png": data}))
    replace or add files, None leaves a file out."""
    out: dict[str, Any] = {"manifest.toml": manifest, "images/sku1.png": png(64, 64),
                           "posters/bg.png": _background(), "scripts/sku1.txt.j2": SCRIPT,
                           "trainings/newcomer-1.md": TRAINING}
    for path, data in files.items():
        if data is None:
            out.pop(path, None)
        else:
            out[path] = data
    return out


def zip_of(files: dict[str, Any]) -> bytes:
    return make_zip(files)


@lru_cache(maxsize=1)
def demo() -> bytes:
    return demo_zip()


async def upload(harness: Harness, data: bytes, *, filename: str = "pack.zip", field: str = "pack",
                 token: str | None = None) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field(field, data, filename=filename, content_type="application/zip")
    kw: dict[str, Any] = {"data": form}
    if token is not None:
        kw["token"] = token
    return await harness.api("POST", "/content-packs", **kw)
