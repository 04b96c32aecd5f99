"""The presets' pictures, drawn with Pillow from a pack folder's art.toml: a stand-in picture per
product and poster backgrounds laid out for the posters' texts and QR code (the card at the bottom)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw

from content.fonts import cjk_font

POSTER_SIZE = (1080, 1920)


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _gradient(size: tuple[int, int], top: str, bottom: str) -> Image.Image:
    mask = Image.linear_gradient("L").resize(size)
    return Image.composite(Image.new("RGB", size, _rgb(bottom)), Image.new("RGB", size, _rgb(top)), mask)


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def product_picture(label: str, colour: str, size: int = 640) -> Image.Image:
    """A product's stand-in picture: its package in the product's colour, the name on it."""
    img = _gradient((size, size), "#ffffff", "#eeeeee")
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((120, 130, 520, 530), 40, fill=_rgb(colour))
    d.rounded_rectangle((150, 160, 490, 250), 20, fill=(255, 255, 255))
    d.text((320, 390), label, font=cjk_font(64 if len(label) <= 5 else 46, "Bold"), fill=(255, 255, 255),
           anchor="mm")
    return img


def poster_background(spec: dict[str, Any], colours: list[str], art: dict[str, Image.Image]) -> Image.Image:
    """A poster's background: title and subtitle on the trade's gradient, one product large or a
    shelf of them, and the white card at the bottom that carries the texts and the QR code."""
    w, h = POSTER_SIZE
    img = _gradient((w, h), *colours)
    d = ImageDraw.Draw(img)
    d.text((w // 2, 230), spec["title"], font=cjk_font(88, "Bold"), fill=(255, 250, 240), anchor="mm")
    d.text((w // 2, 350), spec["subtitle"], font=cjk_font(44), fill=(255, 240, 220), anchor="mm")
    if "picture" in spec:
        d.rounded_rectangle((150, 480, 930, 1260), 36, fill=(255, 255, 255))
        img.paste(art[spec["picture"]].resize((760, 760)), (160, 490))
    shelf = spec.get("shelf", [])
    for i, path in enumerate(shelf):
        x = (w - 320 * len(shelf) + 20) // 2 + i * 320
        d.rounded_rectangle((x, 800, x + 300, 1100), 28, fill=(255, 255, 255))
        img.paste(art[path].resize((260, 260)), (x + 20, 820))
    d.rounded_rectangle((40, 1440, 1040, 1860), 36, fill=(255, 255, 255))
    return img


def pictures(art: dict[str, Any]) -> dict[str, bytes]:
    """The JPEG files an art.toml describes, by path."""
    drawn = {i["path"]: product_picture(i["label"], i["colour"]) for i in art.get("images", [])}
    files = {path: _jpeg(img) for path, img in drawn.items()}
    for spec in art.get("posters", []):
        files[spec["path"]] = _jpeg(poster_background(spec, art["colours"], drawn))
    return files
