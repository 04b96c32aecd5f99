"""Poster rendering: the pack's background, the distributor's QR code and the text boxes, as a
JPEG of at most 2 MB. Pillow work runs in threads; decoded backgrounds, fonts and finished JPEGs
are cached per process, keyed on everything that changes the picture, so a repeat costs nothing.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import qrcode
from PIL import Image, ImageDraw, ImageFont
from cachetools import LRUCache
from qrcode.constants import ERROR_CORRECT_M

from content.fonts import cjk_font
from content.images import open_image, to_rgb

MAX_JPEG_BYTES = 2 * 1024 * 1024
JPEG_QUALITIES = (85, 75, 60, 45)
QR_QUIET_MODULES = 2
RENDER_VERSION = 1  # bump when the drawing changes, so no stale cached picture is reused
MIN_SHRINK = 0.6  # a text too wide shrinks to this fraction of its size, then is cut with "…"

FileRef = tuple[int, str, str]  # (pack id, pack digest, path in the pack); caches use digest and path
Loader = Callable[[FileRef], Awaitable[bytes]]


@dataclass(frozen=True)
class TextBox:
    text: str
    x: int
    y: int
    size: int
    color: str
    max_width: int
    align: str = "left"
    weight: str = "Regular"
    font: FileRef | None = None


@dataclass(frozen=True)
class PosterJob:
    background: FileRef
    qr_url: str
    qr_x: int
    qr_y: int
    qr_size: int
    texts: tuple[TextBox, ...]


def cache_key(pack: str, poster_key: str, name: str, code: str, qr_url: str, texts: Sequence[str] = ()) -> str:
    """Everything that changes the picture: the pack version (its digest), the poster, the
    distributor's name and code, the QR url (and the texts made from them)."""
    raw = json.dumps([RENDER_VERSION, pack, poster_key, name, code, qr_url, list(texts)], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


# ---- pure drawing (thread side) -------------------------------------------------------------
def qr_image(url: str, size: int) -> Image.Image:
    """A size×size white square with the QR code of `url` centred, in whole pixels per module."""
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=0)
    qr.add_data(url)
    qr.make(fit=True)
    matrix = qr.get_matrix()
    n = len(matrix)
    module = max(size // (n + 2 * QR_QUIET_MODULES), 1)
    modules = Image.frombytes("L", (n, n), bytes(0 if dark else 255 for row in matrix for dark in row))
    code = modules.resize((n * module, n * module), Image.Resampling.NEAREST)
    square = Image.new("L", (size, size), 255)
    offset = (size - n * module) // 2
    square.paste(code, (offset, offset))
    return square


_ANCHORS = {"left": "la", "center": "ma", "right": "ra"}


def _fit(text: str, font_for: Callable[[int], ImageFont.FreeTypeFont], size: int,
         max_width: int) -> tuple[str, ImageFont.FreeTypeFont]:
    font = font_for(size)
    if font.getlength(text) <= max_width:
        return text, font
    shrunk = max(int(size * max_width / font.getlength(text)), int(size * MIN_SHRINK), 8)
    font = font_for(shrunk)
    if font.getlength(text) <= max_width:
        return text, font
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text + "…", font


def draw_texts(img: Image.Image, texts: Sequence[TextBox], fonts: dict[FileRef, bytes]) -> None:
    draw = ImageDraw.Draw(img)
    for t in texts:
        if t.font is not None:
            data = fonts[t.font]

            def font_for(size: int, data: bytes = data, ref: FileRef = t.font) -> ImageFont.FreeTypeFont:
                return _pack_font(ref, data, size)
        else:
            def font_for(size: int, weight: str = t.weight) -> ImageFont.FreeTypeFont:
                return cjk_font(size, weight)
        text, font = _fit(t.text, font_for, t.size, t.max_width)
        if text:
            draw.text((t.x, t.y), text, font=font, fill=t.color, anchor=_ANCHORS.get(t.align, "la"))


def _pack_font(ref: FileRef, data: bytes, size: int) -> ImageFont.FreeTypeFont:
    return _font_of(ref[1], ref[2], size, data)


@functools.lru_cache(maxsize=64)
def _font_of(digest: str, path: str, size: int, data: bytes) -> ImageFont.FreeTypeFont:
    """A pack's font at a size: a pure function of the pack version, the path and the size."""
    return ImageFont.truetype(io.BytesIO(data), size)


def encode_jpeg(img: Image.Image) -> bytes:
    for quality in JPEG_QUALITIES:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        if buf.tell() <= MAX_JPEG_BYTES:
            return buf.getvalue()
    img = img.resize((img.width // 2, img.height // 2))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITIES[-1])
    return buf.getvalue()


# FreeType faces are not safe to share between threads; text is a small part of a render.
_text_lock = threading.Lock()


def compose_poster(background: Image.Image, job: PosterJob, fonts: dict[FileRef, bytes]) -> Image.Image:
    """The poster as a picture: the background, the QR code, the texts (CPU work: call from a thread)."""
    img = background.copy()
    img.paste(qr_image(job.qr_url, job.qr_size), (job.qr_x, job.qr_y))
    with _text_lock:
        draw_texts(img, job.texts, fonts)
    return img


def render_poster(background: Image.Image, job: PosterJob, fonts: dict[FileRef, bytes]) -> bytes:
    """The finished JPEG (CPU work: call from a thread)."""
    return encode_jpeg(compose_poster(background, job, fonts))


def preview_png(background: Image.Image, job: PosterJob, fonts: dict[FileRef, bytes]) -> bytes:
    """The same poster as a PNG, for the console's preview (CPU work: call from a thread)."""
    buf = io.BytesIO()
    compose_poster(background, job, fonts).save(buf, "PNG")
    return buf.getvalue()


def decode_background(data: bytes) -> Image.Image:
    with open_image(data) as img:
        return to_rgb(img) if img.mode != "RGB" else img.copy()


# ---- the cache (event-loop side) ------------------------------------------------------------
class PosterRenderer:
    """Process-local caches of decoded backgrounds, pack fonts and finished posters.

    Nothing here is needed by another process: any process can rebuild it from the database.
    """

    def __init__(self, *, cache_bytes: int = 64 * 1024 * 1024, backgrounds: int = 8, threads: int = 2):
        # Finished JPEGs up to `cache_bytes` in all, decoded backgrounds, pack font files.
        self._posters: LRUCache[str, bytes] = LRUCache(maxsize=cache_bytes, getsizeof=len)
        self._backgrounds: LRUCache[tuple[str, str], Image.Image] = LRUCache(maxsize=backgrounds)
        self._fonts: LRUCache[tuple[str, str], bytes] = LRUCache(maxsize=64)
        self._threads = threads
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self.renders = 0  # for tests and the benchmark

    def cached(self, key: str) -> bytes | None:
        return self._posters.get(key)

    async def render(self, key: str, job: PosterJob, load: Loader) -> bytes:
        """The poster for `key`, rendered at most once per process however many ask at once."""
        jpeg = self.cached(key)
        if jpeg is not None:
            return jpeg
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            jpeg = await self._render(job, load)
            if len(jpeg) <= self._posters.maxsize:
                self._posters[key] = jpeg
            future.set_result(jpeg)
            return jpeg
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved here, so an unawaited failure is not logged as lost
            raise
        finally:
            del self._inflight[key]

    async def preview(self, job: PosterJob, load: Loader) -> bytes:
        """The poster as a PNG, drawn as `render` draws it but neither cached nor counted."""
        return await self._render(job, load, preview_png)

    async def _render(self, job: PosterJob, load: Loader,
                      draw: Callable[[Image.Image, PosterJob, dict[FileRef, bytes]], bytes] = render_poster) -> bytes:
        bg_key = job.background[1:]
        background = self._backgrounds.get(bg_key)
        if background is None:
            data = await load(job.background)
            background = await asyncio.to_thread(decode_background, data)
            self._backgrounds[bg_key] = background
        fonts: dict[FileRef, bytes] = {}
        for t in job.texts:
            if t.font is not None and t.font not in fonts:
                if t.font[1:] not in self._fonts:
                    self._fonts[t.font[1:]] = await load(t.font)
                fonts[t.font] = self._fonts[t.font[1:]]
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self._threads))
        async with self._slots[1]:  # bounds memory: at most `threads` canvases at once
            picture = await asyncio.to_thread(draw, background, job, fonts)
        if draw is render_poster:
            self.renders += 1
        return picture

    def stats(self) -> dict[str, Any]:
        return {"posters": len(self._posters), "bytes": self._posters.currsize, "backgrounds": len(self._backgrounds),
                "renders": self.renders}
