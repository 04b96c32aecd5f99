"""The demo content pack: text files in this folder plus pictures drawn here with Pillow, so the
repository carries no binary artwork. `make run` imports it in sandbox mode when no pack is live;
`python -m content.demo demo-pack.zip` writes it out for a look or a curl upload.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

from content.fonts import cjk_font

HERE = Path(__file__).parent
SOURCES = ("manifest.toml", "scripts", "trainings")
POSTER_SIZE = (1080, 1920)


def _vertical_gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    mask = Image.linear_gradient("L").resize(size)
    return Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)


def _jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _product_art(kind: str, size: int = 640) -> Image.Image:
    """A simple still life for each demo product: a gift box, a bar, a rice sack."""
    colours = {"sku1": ((250, 235, 215), (178, 34, 34)), "sku2": ((245, 232, 220), (120, 60, 40)),
               "sku3": ((240, 244, 230), (200, 170, 90))}
    back, main = colours[kind]
    img = _vertical_gradient((size, size), (255, 255, 255), back)
    d = ImageDraw.Draw(img)
    s = size / 640
    if kind == "sku1":  # a red gift box with a gold ribbon and jujubes around it
        d.rounded_rectangle((140 * s, 200 * s, 500 * s, 500 * s), 24 * s, fill=main)
        d.rectangle((300 * s, 200 * s, 340 * s, 500 * s), fill=(230, 180, 60))
        d.rectangle((140 * s, 330 * s, 500 * s, 370 * s), fill=(230, 180, 60))
        d.ellipse((250 * s, 150 * s, 320 * s, 210 * s), outline=(230, 180, 60), width=int(12 * s))
        d.ellipse((320 * s, 150 * s, 390 * s, 210 * s), outline=(230, 180, 60), width=int(12 * s))
        for i in range(7):
            cx, cy = (90 + 75 * i) * s, 560 * s
            d.ellipse((cx - 28 * s, cy - 20 * s, cx + 28 * s, cy + 20 * s), fill=(150, 20, 25))
    elif kind == "sku2":  # stacked bars
        for i in range(4):
            y = (420 - 70 * i) * s
            d.rounded_rectangle((170 * s + i * 10 * s, y, 470 * s - i * 10 * s, y + 60 * s), 12 * s, fill=main,
                                outline=(80, 35, 20), width=int(3 * s))
            for k in range(6):
                d.ellipse(((200 + 42 * k) * s, y + 22 * s, (212 + 42 * k) * s, y + 34 * s), fill=(230, 200, 150))
    else:  # a rice sack with grains
        d.rounded_rectangle((170 * s, 180 * s, 470 * s, 520 * s), 60 * s, fill=(250, 246, 232), outline=main,
                            width=int(8 * s))
        d.rectangle((210 * s, 300 * s, 430 * s, 400 * s), fill=(60, 120, 60))
        d.text((320 * s, 350 * s), "五常", font=cjk_font(int(56 * s), "Bold"), fill=(250, 246, 232), anchor="mm")
        for k in range(40):
            a = k * 2.4
            r = (40 + 3 * k) * s
            cx, cy = 320 * s + r * math.cos(a), 560 * s + r * math.sin(a) * 0.2
            d.ellipse((cx - 8 * s, cy - 4 * s, cx + 8 * s, cy + 4 * s), fill=(245, 240, 225), outline=main)
    return img


def _poster_background(title: str, subtitle: str, art: Image.Image | None,
                       shelf: list[tuple[Image.Image, str]] = ()) -> Image.Image:
    w, h = POSTER_SIZE
    img = _vertical_gradient((w, h), (196, 40, 36), (244, 150, 60))
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    for i, (cx, cy, r) in enumerate(((120, 160, 220), (980, 420, 300), (200, 1200, 260), (900, 1000, 160))):
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255, 28 + 8 * i))
    for k in range(24):  # falling snow
        x, y = (k * 337) % w, (k * 613) % 1300 + 40
        d.regular_polygon((x, y, 10 + k % 4 * 4), 6, fill=(255, 255, 255, 120))
    img.paste(overlay, mask=overlay)
    d2 = ImageDraw.Draw(img)
    d2.text((w // 2, 230), title, font=cjk_font(96, "Bold"), fill=(255, 246, 230), anchor="mm")
    d2.text((w // 2, 350), subtitle, font=cjk_font(44), fill=(255, 230, 200), anchor="mm")
    if art is not None:
        framed = art.resize((760, 760))
        d2.rounded_rectangle((150, 480, 930, 1260), 36, fill=(255, 255, 255))
        img.paste(framed, (160, 490))
    for i, (thumb, label) in enumerate(shelf):  # a row of products, each on its own card
        x = 70 + i * 320
        d2.rounded_rectangle((x, 720, x + 300, 1120), 28, fill=(255, 255, 255))
        img.paste(thumb.resize((260, 260)), (x + 20, 740))
        d2.text((x + 150, 1060), label, font=cjk_font(34, "Medium"), fill=(140, 30, 20), anchor="mm")
    # The white card that carries the distributor's texts and QR code (see manifest.toml).
    d2.rounded_rectangle((40, 1440, 1040, 1860), 36, fill=(255, 255, 255))
    return img


def pictures() -> dict[str, bytes]:
    arts = {k: _product_art(k) for k in ("sku1", "sku2", "sku3")}
    files = {f"images/{k}.jpg": _jpeg(a) for k, a in arts.items()}
    shelf = [(arts["sku1"], "红枣礼盒"), (arts["sku2"], "阿胶糕"), (arts["sku3"], "五常大米")]
    files["posters/default.jpg"] = _jpeg(_poster_background("冬季好物", "分享给朋友 · 一起过个暖冬", None, shelf))
    files["posters/sku1.jpg"] = _jpeg(_poster_background("有机红枣礼盒", "新疆若羌 · 产地直供", arts["sku1"]))
    return files


def demo_files() -> dict[str, bytes]:
    """Every file of the demo pack, by its path in the zip."""
    files: dict[str, bytes] = {}
    for source in SOURCES:
        path = HERE / source
        for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            files[f.relative_to(HERE).as_posix()] = f.read_bytes()
    files.update(pictures())
    return files


def make_zip(files: dict[str, bytes | str]) -> bytes:
    """A zip of the given files (tests build broken packs with it too)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data.encode() if isinstance(data, str) else data)
    return buf.getvalue()


def demo_zip() -> bytes:
    return make_zip(demo_files())
