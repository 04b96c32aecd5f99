"""Share posters: the QR code decodes to the url qrcode/create returned, Chinese text has real
glyphs, repeats cost nothing, and a slow poster arrives through the customer-service API."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import zxingcpp
from aiohttp.test_utils import TestServer
from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageStat
from sqlalchemy import select

from sandbox.platform import Platform
from kit.app_keys import SESSIONMAKER
from content.posters import PosterJob, TextBox, draw_texts, render_poster
from kit.chat import NOT_REGISTERED
from storage.models_content import DistributorQrCode
from tests.conftest import ON_SQLITE, Harness, make_config
from tests.test_packs_support import demo, upload

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py


def calls(platform: Platform, name: str) -> int:
    return sum(1 for n, _ in platform.calls if n == name)


def decode_qr(jpeg: bytes) -> list[str]:
    with Image.open(io.BytesIO(jpeg)) as img:
        return [b.text for b in zxingcpp.read_barcodes(img.convert("L"), formats=zxingcpp.BarcodeFormat.QRCode)]


async def poster_of(harness: Harness, user, text: str = "海报") -> tuple[str, bytes]:  # noqa: ANN001
    reply = await harness.send(user, "text", content=text)
    assert reply is not None and reply["type"] == "image", reply
    content, kind, _ = harness.platform.media[reply["media_id"]]
    assert kind == "image/jpeg" and len(content) <= 2 * 1024 * 1024
    return reply["media_id"], content


async def test_poster_qr_decodes_to_the_ticket_url_and_repeats_are_free(harness: Harness) -> None:
    p = harness.platform
    alice = harness.user()
    assert await harness.say(alice, "海报") == NOT_REGISTERED
    code = await harness.register(alice, "13800138000", "张三丰")
    assert "还没有可用的推广海报" in await harness.say(alice, "海报")
    status, body = await upload(harness, demo())
    assert status == 201, body

    media_id, jpeg = await poster_of(harness, alice)
    [ticket] = [t for t in p.tickets.values() if t.scene == code]
    assert decode_qr(jpeg) == [ticket.url]
    assert p.scene_of(ticket.url) == code
    with Image.open(io.BytesIO(jpeg)) as img:
        assert img.size == (1080, 1920)
    qr_calls, uploads = calls(p, "qrcode/create"), calls(p, "media/upload")
    assert (qr_calls, uploads) == (1, 1)
    body = next(b for n, b in p.calls if n == "qrcode/create")
    assert body["action_name"] == "QR_STR_SCENE" and body["expire_seconds"] == 30 * 24 * 3600

    again, _ = await poster_of(harness, alice)  # a repeat: the same media, no call to WeChat
    assert again == media_id
    assert (calls(p, "qrcode/create"), calls(p, "media/upload")) == (1, 1)

    listing = await harness.say(alice, "海报 列表")
    assert "海报 default" in listing and "海报 sku1" in listing
    other, other_jpeg = await poster_of(harness, alice, "海报 sku1")
    assert other != media_id and decode_qr(other_jpeg) == [ticket.url]
    assert calls(p, "qrcode/create") == 1  # one QR code serves every poster of the distributor
    assert "没有找到海报" in await harness.say(alice, "海报 nope")

    # A QR code close to expiry is made anew, and so is the poster.
    async with harness.app[SESSIONMAKER]() as session, session.begin():
        row = await session.scalar(select(DistributorQrCode))
        row.expires_at = datetime.now(UTC) + timedelta(days=2)
    renewed, renewed_jpeg = await poster_of(harness, alice)
    assert renewed != media_id and calls(p, "qrcode/create") == 2
    newest = [t for t in p.tickets.values() if t.scene == code and t.url != ticket.url]
    assert decode_qr(renewed_jpeg) == [newest[0].url]


def _box(img: Image.Image) -> Image.Image:
    return img.crop((0, 0, 600, 80))


def test_chinese_text_renders_with_real_glyphs() -> None:
    bg = Image.new("RGB", (600, 80), "white")
    text = TextBox("张三丰邀你一起", 10, 10, 48, "#000000", 580)
    cjk = bg.copy()
    draw_texts(cjk, [text], {})
    fallback = bg.copy()
    fallback_font = ImageFont.load_default(48)  # a font without CJK glyphs: boxes or nothing
    ImageDraw.Draw(fallback).text((10, 10), text.text, font=fallback_font, fill="#000000")
    # Ink is there, and it is not what a font without CJK glyphs draws.
    assert ImageStat.Stat(_box(cjk).convert("L")).mean[0] < 245
    diff = ImageChops.difference(_box(cjk), _box(fallback)).convert("L")
    assert ImageStat.Stat(diff).mean[0] > 5
    # Different characters give different pictures (tofu boxes would all look alike).
    glyphs = []
    for ch in "张三丰":
        one = Image.new("L", (60, 60), 255)
        draw_texts(one, [TextBox(ch, 4, 4, 48, "#000000", 56)], {})
        glyphs.append(one.tobytes())
    assert len(set(glyphs)) == 3


def test_render_poster_keeps_qr_and_text_inside_2mb() -> None:
    bg = Image.effect_noise((1080, 1920), 80).convert("RGB")  # worst case for JPEG size
    job = PosterJob((1, "digest", "bg"), "http://weixin.qq.com/q/abcdefghij0123456789", 700, 1500, 300,
                    (TextBox("张三 邀你一起", 80, 1530, 48, "#8a1c14", 580, weight="Bold"),))
    jpeg = render_poster(bg, job, {})
    assert len(jpeg) <= 2 * 1024 * 1024
    assert decode_qr(jpeg) == ["http://weixin.qq.com/q/abcdefghij0123456789"]


@pytest.fixture
async def slow_harness(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    """Replies are due after 10 ms: every poster misses the passive window."""
    async with Harness(make_config(db_url), platform, wechat_server, reply_deadline=0.01) as h:
        yield h


async def test_poster_too_slow_for_the_window_arrives_through_customer_service(slow_harness: Harness) -> None:
    h = slow_harness
    status, _ = await upload(h, demo())
    assert status == 201
    user = h.user()
    await h.follow(user)
    for text in ("注册", "13900139000", "李四"):
        await h.say(user, text)
    await h.platform.wait_for(user.openid, lambda m: "推广码" in m.get("content", ""))
    reply = await h.send(user, "text", content="poster")
    assert reply is None  # "success" now, the picture later
    item = await h.platform.wait_for(user.openid, lambda m: m.get("type") == "image" and m["via"] == "custom")
    assert item["media_id"] in h.platform.media
