"""Opening pictures from content packs with Pillow's decompression-bomb guard on.

Pillow warns (DecompressionBombWarning) above MAX_IMAGE_PIXELS and refuses at twice that; we
refuse at the warning: the side limit is checked from the header, before any pixel is decoded,
and the warning itself is turned into an error for every Pillow call in the process.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from domain.catalogue import PACK, say

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_SIDE = 4096
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF"})

Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


class BadImage(Exception):
    """A picture Pillow cannot open, too big, or of a kind we do not take; the message says which."""


def open_image(data: bytes, *, load: bool = True) -> Image.Image:
    """The decoded picture (CPU work: call from a thread). BadImage with a sentence otherwise."""
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImage(say(PACK, "image_too_large", mb=len(data) / 1048576))
    try:
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(say(PACK, "image_bomb", side=MAX_SIDE)) from None
    except (OSError, ValueError, SyntaxError):
        raise BadImage(say(PACK, "not_image")) from None
    if img.format not in ALLOWED_FORMATS:
        img.close()
        raise BadImage(say(PACK, "image_format", format=img.format))
    w, h = img.size
    if w > MAX_SIDE or h > MAX_SIDE or w < 1 or h < 1:
        img.close()
        raise BadImage(say(PACK, "image_too_wide", w=w, h=h, side=MAX_SIDE))
    if load:
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise BadImage(say(PACK, "image_bomb", side=MAX_SIDE)) from None
        except (OSError, ValueError, SyntaxError, EOFError):
            raise BadImage(say(PACK, "image_damaged")) from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy, transparent parts on white (posters are JPEG)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")
