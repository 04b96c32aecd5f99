"""Training material is for distributors (CONTRACT §7): 培训 gives links signed for the reader;
an unsigned, tampered, expired or other rank's link, a training the link's rank may not read, a
superseded pack, a suspended reader and training pictures at a guessable path get no content."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from handlers.trainings import LINK_LIFE, link_token
from tests.conftest import ON_SQLITE, Harness
from tests.test_packs_support import MANIFEST, demo, png, small_pack, upload, zip_of

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py

REFUSED = "请回到公众号回复“培训”"


async def links(h: Harness, user: object) -> list[str]:
    """The paths of the training links 培训 gives (text or news)."""
    reply = await h.send(user, "text", content="培训")  # type: ignore[arg-type]
    assert reply is not None
    text = reply.get("content", "") or " ".join(a["url"] for a in reply.get("articles", []))
    return [u.removeprefix(h.config.server.public_url) for u in re.findall(r"https?://\S+", text)]


async def get(h: Harness, path: str) -> tuple[int, str]:
    assert h.http is not None
    async with h.http.get(h.url + path) as resp:
        return resp.status, await resp.text()


async def test_links_open_and_every_other_path_is_refused_without_content(harness: Harness) -> None:
    h = harness
    user = h.user()
    await h.register(user, "13800138000", "赵敏")
    assert (await upload(h, demo()))[0] == 201
    [first, _] = await links(h, user)
    _, _, pack_id, key, token = first.split("/")
    did, place, expires, signature = token.split(".")
    status, page = await get(h, first)
    assert status == 200 and "新人第一课" in page

    bad_signature = "0" * len(signature) if signature != "0" * len(signature) else "1" * len(signature)
    refused = {
        "unsigned": f"/t/{pack_id}/{key}",
        "no token": f"/t/{pack_id}/{key}/",
        "signature changed": f"/t/{pack_id}/{key}/{did}.{place}.{expires}.{bad_signature}",
        "other training": f"/t/{pack_id}/gold-1/{token}",
        "other pack": f"/t/{int(pack_id) + 1}/{key}/{token}",
        "other reader": f"/t/{pack_id}/{key}/{int(did) + 1}.{place}.{expires}.{signature}",
        "other rank": f"/t/{pack_id}/{key}/{did}.{int(place) + 1}.{expires}.{signature}",
        "later expiry": f"/t/{pack_id}/{key}/{did}.{place}.{int(expires) + 86400}.{signature}",
        "picture of a tampered link": f"/t/{pack_id}/{key}/{did}.{int(place) + 1}.{expires}.{signature}"
                                      "/images/sku1.jpg",
    }
    for why, path in refused.items():
        status, page = await get(h, path)
        assert status == 404 and REFUSED in page, (why, status, page)
        assert "第一步" not in page and "黄金" not in page, why

    # Genuine signatures that still open nothing: expired, or the gold training for a junior.
    config, now = h.config, datetime.now(UTC)
    old = link_token(config, int(pack_id), key, int(did), "junior", now - LINK_LIFE - timedelta(minutes=1))
    status, page = await get(h, f"/t/{pack_id}/{key}/{old}")
    assert status == 404 and REFUSED in page and "第一步" not in page
    junior_for_gold = link_token(config, int(pack_id), "gold-1", int(did), "junior", now)
    status, page = await get(h, f"/t/{pack_id}/gold-1/{junior_for_gold}")
    assert status == 403 and "黄金合伙人进阶" not in page and "不能查看" in page
    gold = link_token(config, int(pack_id), "gold-1", int(did), "gold", now)
    status, page = await get(h, f"/t/{pack_id}/gold-1/{gold}")  # a link made for gold opens it
    assert status == 200 and "黄金合伙人进阶" in page


async def test_a_superseded_pack_and_a_suspended_reader_get_nothing(harness: Harness) -> None:
    h = harness
    user = h.user()
    code = await h.register(user, "13900139000", "周芷若")
    assert (await upload(h, zip_of(small_pack())))[0] == 201
    [v1] = await links(h, user)
    assert (await get(h, v1))[0] == 200
    assert (await upload(h, zip_of(small_pack(MANIFEST.replace('version = "1"', 'version = "2"')))))[0] == 201
    status, page = await get(h, v1)
    assert status == 404 and "已更新或下线" in page and "第一步" not in page
    [v2] = await links(h, user)
    assert v2 != v1 and (await get(h, v2))[0] == 200

    status, _ = await h.api("POST", f"/distributors/{code}/suspend", json={"reason": "刷单嫌疑"})
    assert status == 200
    status, page = await get(h, v2)
    assert status == 403 and "第一步" not in page


async def test_training_pictures_are_only_under_the_link(harness: Harness) -> None:
    """A picture only a training shows is served under its signed link, not at /c/ (where the
    products' pictures stay public for the share pages)."""
    h = harness
    user = h.user()
    await h.register(user, "13700137000", "张无忌")
    body = "# 欢迎\n\n第一步：回复**海报**。\n\n![图](../images/inside.png)\n"
    pack = small_pack(**{"trainings/newcomer-1.md": body, "images/inside.png": png(32, 32)})
    status, answer = await upload(h, zip_of(pack))
    assert status == 201, answer
    [link] = await links(h, user)
    pack_id = link.split("/")[2]
    _, page = await get(h, link)
    assert f'src="{link}/images/inside.png"' in page
    assert h.http is not None
    async with h.http.get(h.url + link + "/images/inside.png") as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
    for path in (f"/c/{pack_id}/images/inside.png",  # guessable: refused
                 link + "/images/sku1.png",  # a file of the pack the training does not show
                 link + "/manifest.toml"):
        async with h.http.get(h.url + path) as resp:
            assert resp.status == 404, path
    async with h.http.get(f"{h.url}/c/{pack_id}/images/sku1.png") as resp:  # a product's picture
        assert resp.status == 200 and resp.content_type == "image/png"
