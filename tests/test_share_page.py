"""Share pages that sell (CONTRACT §5, §6, §7): a 话术's share link opens the product's page in
Chromium (picture, price, the details table, a buy link carrying the 推广码) and sets WeChat's share
card through the JS-SDK, signed with the jsapi_ticket (read back from the sandbox's stand-in); a
pack's `details` and `buy_url` are checked at upload; templates see product.details."""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from content.product_fields import shop_link
from content.templating import share_url
from kit.app_keys import CONFIG
from tests.conftest import ADMIN_TOKEN, Harness
from tests.eventually import eventually
from tests.test_packs_support import MANIFEST, small_pack, upload, zip_of
from wechat.wechat_keys import WECHAT

PRODUCT = """
details = {"产地" = "新疆若羌", "批次" = "2026-11", "等级" = "<script>window.__pwned=1</script>特级"}
buy_url = "https://shop.example.com/p/1?ref={code}&from=share"
"""
SHOP_PACK = MANIFEST.replace('image = "images/sku1.png"\n', 'image = "images/sku1.png"\n' + PRODUCT, 1)
SCRIPT = "{{ product.name }} 产地{{ product.details.产地 }} {{ share_url }}"


def _pack(product_lines: str, script: str = SCRIPT) -> bytes:
    """The small pack with these product lines, its script and its poster's text using product.details."""
    manifest = MANIFEST.replace('image = "images/sku1.png"\n', 'image = "images/sku1.png"\n' + product_lines, 1)
    manifest = manifest.replace('key = "default"\n', 'key = "default"\nsku = "SKU-1"\n', 1).replace(
        "{{ distributor.name }} 邀你一起", "{{ distributor.name }} 产地{{ product.details.产地 }}", 1)
    return zip_of(small_pack(manifest, **{"scripts/sku1.txt.j2": script}))


async def _sim(http: aiohttp.ClientSession, base: str, openid: str, text: str) -> str:
    async with http.post(base + "/sandbox/sim/send", json={"openid": openid, "type": "text", "content": text}) as r:
        return ((await r.json())["reply"] or {}).get("content", "")


async def _share_link(base: str) -> tuple[str, str]:
    """A distributor registered in the simulator, the shop pack uploaded, and 话术's link: (code, link)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/sandbox/sim/users", json={"nickname": "小李"}) as r:
            openid = (await r.json())["openid"]
        async with http.post(base + "/sandbox/sim/send", json={"openid": openid, "type": "subscribe"}) as r:
            assert r.status == 200
        await _sim(http, base, openid, "注册")
        await _sim(http, base, openid, "13912345678")
        code = re.search(r"推广码：([A-Z0-9]{6})", await _sim(http, base, openid, "李小龙")).group(1)
        form = aiohttp.FormData()
        form.add_field("pack", zip_of(small_pack(SHOP_PACK, **{"scripts/sku1.txt.j2": SCRIPT})), filename="p.zip")
        async with http.post(base + "/api/content-packs", data=form,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 201, await r.text()
        script = await _sim(http, base, openid, "话术 SKU-1")
    assert "产地新疆若羌" in script, script
    link = re.search(r"http\S+", script).group(0)
    assert link == f"{base}/s/{code}?sku=SKU-1"  # a buy_url makes share_url our page
    return code, link


@pytest.mark.parametrize("page", ["desktop"], indirect=True)
async def test_a_share_link_shows_the_product_and_sets_the_share_card(served: tuple[str, web.Application],
                                                                       page: Any) -> None:
    base, app = served
    code, link = await _share_link(base)
    answer = await page.goto(link)
    policy = answer.headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";")[0]
    assert answer.headers["x-content-type-options"] == "nosniff" and "referrer-policy" in answer.headers
    await page.evaluate("window.__violations = []; document.addEventListener('securitypolicyviolation',"
                        " e => window.__violations.push(e.blockedURI))")

    await page.get_by_role("heading", name="有机红枣礼盒").wait_for()
    picture = page.get_by_role("img", name="有机红枣礼盒")
    assert await picture.evaluate("img => img.complete && img.naturalWidth") == 64  # the pack's picture, loaded
    assert await page.get_by_text("¥129.00").first.is_visible()
    assert await page.get_by_text("新疆若羌产地直供").is_visible()
    details = page.get_by_role("table", name="商品详情")
    assert await details.get_by_role("row").all_inner_texts() == [
        "产地\t新疆若羌", "批次\t2026-11", "等级\t<script>window.__pwned=1</script>特级"]
    buy = page.get_by_role("link", name="立即购买")
    assert await buy.get_attribute("href") == f"https://shop.example.com/p/1?ref={code}&from=share"
    assert await page.get_by_text(f"推广码：{code}").is_visible()

    async def share_calls() -> dict[str, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(base + "/sandbox/sim/jssdk") as r:
            calls = {c["kind"]: c for c in (await r.json())["calls"] if c["url"] == link}
        return calls if len(calls) == 3 else {}
    calls = await eventually(share_calls, what="the page's wx.config and both share calls")
    config = calls["config"]["data"]
    assert calls["config"]["ok"] and config["appId"] == app[CONFIG].wechat.app_id
    assert set(config["jsApiList"]) == {"updateAppMessageShareData", "updateTimelineShareData"}
    ticket = await app[WECHAT].jsapi_ticket()  # the shared ticket, recomputed by hand
    plain = f"jsapi_ticket={ticket}&noncestr={config['nonceStr']}&timestamp={config['timestamp']}&url={link}"
    assert config["signature"] == hashlib.sha1(plain.encode()).hexdigest()
    friend, moments = calls["updateAppMessageShareData"], calls["updateTimelineShareData"]
    assert friend["ok"] and moments["ok"]  # after wx.ready, each listed in jsApiList
    assert friend["data"] == {"title": "有机红枣礼盒", "desc": "新疆若羌产地直供，无添加", "link": link,
                              "imgUrl": await picture.evaluate("img => img.src")}
    assert friend["data"]["imgUrl"].startswith(base + "/c/")
    assert {k: moments["data"][k] for k in ("title", "link", "imgUrl")} == \
        {k: friend["data"][k] for k in ("title", "link", "imgUrl")}
    assert await page.evaluate("window.__pwned") is None and await page.evaluate("window.__violations") == []


def test_a_buy_url_sends_share_url_to_the_share_page_and_carries_the_code_encoded() -> None:
    own = {"sku": "SKU-1", "name": "红枣", "price_fen": 12900, "url": "https://shop.test/p/1"}
    buying = {**own, "buy_url": "https://shop.test/buy?c={code}&x=1"}
    assert share_url("https://x.test", "K7QF2M", own) == "https://shop.test/p/1?ref=K7QF2M"  # as before
    assert share_url("https://x.test", "K7QF2M", buying) == "https://x.test/s/K7QF2M?sku=SKU-1"
    assert shop_link(buying, "A B/&") == "https://shop.test/buy?c=A%20B%2F%26&x=1"
    assert shop_link(own, "K7QF2M") == "https://shop.test/p/1?ref=K7QF2M"
    assert shop_link({**own, "url": None}, "K7QF2M") is None


REFUSED = [  # (the product's lines, the field named, words of the message)
    ('buy_url = "javascript:alert(1)"\n', "products[0].buy_url", "须以 https:// 或 http:// 开头"),
    ('buy_url = "https://shop.example.com/p/1?ref={code}&n={name}"\n', "products[0].buy_url", "只能用 {code}"),
    ('buy_url = "https://shop.example.com/p/1 onclick=x"\n', "products[0].buy_url", "不能含空格"),
    ('buy_url = "https:///p/1"\n', "products[0].buy_url", "没有主机名"),
    ('details = "产地新疆"\n', "products[0].details", "须为表（table）"),
    ('details = {"批次" = 202611}\n', "products[0].details.批次", "须为非空文字"),
    ('details = {"产地" = {"省" = "新疆"}}\n', "products[0].details.产地", "须为非空文字"),
    ('details = {"" = "新疆"}\n', "products[0].details", "详情名"),
]


async def test_pack_details_and_buy_url_are_checked_and_seen_by_templates(harness: Harness) -> None:
    h = harness
    for lines, field, words in REFUSED:
        status, answer = await upload(h, _pack(lines))
        assert status == 422, (lines, answer)
        problem = next(p for p in answer["details"] if p["field"] == field)
        assert words in problem["message"], (lines, problem)
        assert "SKU-1" in problem["message"] or words == "须为表（table）", problem  # the checker's own words
    # A template naming a detail the product does not have is refused at upload, naming the file;
    # the keys as CONTRACT §6 writes them (Chinese, unquoted, which TOML itself refuses) are read.
    for lines in ('details = {"批次" = "2026-11"}\n', 'details = {批次 = "2026-11"}\n'):
        status, answer = await upload(h, _pack(lines))
        assert status == 422 and answer["details"][0]["file"] == "scripts/sku1.txt.j2", answer
        assert not any("TOML" in p["message"] for p in answer["details"]), answer

    user = h.user()
    code = await h.register(user, "13800138000", "王小明")
    status, answer = await upload(h, _pack(PRODUCT))
    assert status == 201, answer
    script = await h.say(user, "话术")
    public = h.config.server.public_url
    assert f"产地新疆若羌 {public}/s/{code}?sku=SKU-1" in script, script
    poster = await h.send(user, "text", content="海报")  # its text uses product.details (else an apology)
    assert poster is not None and poster["type"] == "image", poster
    with Image.open(io.BytesIO(h.platform.media[poster["media_id"]][0])) as img:
        assert img.size == (400, 640)
    assert h.http is not None
    async with h.http.get(f"{h.url}/s/{code}") as resp:  # a general script's link: every product
        page = await resp.text()
    assert resp.status == 200 and "有机红枣礼盒" in page and "立即购买" not in page and "王** 向您推荐" in page
    assert f'<a href="/s/{code}?sku=SKU-1">有机红枣礼盒</a>' in page  # each card opens its product's page
    assert '"title": "王** 向您推荐"' in page
    # Without a ticket from WeChat (the last one expired) the page still shows, without a share card.
    h.clock.move(hours=3)
    h.platform.fail_next["ticket/getticket"] = [-1]
    async with h.http.get(f"{h.url}/s/{code}?sku=SKU-1") as resp:
        page = await resp.text()
    assert resp.status == 200 and "立即购买" in page and "wx-config" not in page
    assert "<td>&lt;script&gt;window.__pwned=1&lt;/script&gt;特级</td>" in page  # pack text is text
