"""Campaigns with a picture or an article (issue 23 item 8), on both databases through /api and
the sandbox WeChat: an image sent as customer-service images, an article as 群发 mpnews (uploaded as
news with its cover) and as a news card opening its signed page; what WeChat would refuse refused
first (422); what was sent to whom, with a failure's WeChat error (GET /api/campaigns/{id}/recipients).
And the 活动 page in Chromium (SQLite): 预览 from the code that builds the message, 创建 with the
channel chosen, the campaign's page with its preview and recipients."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from sqlalchemy import update

from domain import campaigns
from kit.app_keys import WRITER
from storage.tables import OUTBOX
from tests.conftest import Harness
from tests.console_support import sign_in
from tests.test_campaigns import distributors, post, wait_done
from tests.test_campaign_mass import wait_counted
from tests.test_console_engage import seed_people


def png(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, "PNG")
    return out.getvalue()


def bot_items(user: Any, kind: str) -> list[dict[str, Any]]:
    return [m for m in user.timeline if m.get("from") == "bot" and m.get("type") == kind]


async def recipients(h: Harness, cid: int, **query: Any) -> dict[str, Any]:
    status, body = await h.api("GET", f"/campaigns/{cid}/recipients", params=query)
    assert status == 200, body
    return body


async def test_image_and_article_campaigns_and_what_was_sent_to_whom(harness: Harness) -> None:
    h = harness
    a, b, gone = await distributors(h, 3)
    picture = base64.b64encode(png()).decode()
    # Refused before anything is stored: no picture, not a picture, a digest over 120 characters.
    for fields in ({"format": "image"}, {"format": "image", "image_base64": base64.b64encode(b"GIF89a...").decode()},
                   {"format": "news", "image_base64": picture, "text": "长" * 121}):
        status, body = await post(h, **fields)
        assert status == 422 and body["error"] == "invalid_campaign", (fields, body)
    assert (await h.api("GET", "/campaigns"))[1]["total"] == 0

    # An image through customer-service messages: uploaded when sending starts, one image each.
    gone.subscribed = False  # unfollowed meanwhile: WeChat answers 43004 for them
    status, created = await post(h, format="image", image_base64=picture, text="年货节海报")
    assert status == 201 and created["format"] == "image", created
    done = await wait_done(h, created["id"])
    assert (done["sent"], done["failed"]) == (2, 1), done
    await h.settled()
    for user in (a, b):
        [item] = bot_items(user, "image")
        assert h.platform.media[item["media_id"]][0] == png()
    listed = await recipients(h, created["id"])
    assert listed["total"] == 3 and [r["state"] for r in listed["recipients"]] == ["sent", "sent", "failed"]
    assert listed["recipients"][0]["name"] and listed["recipients"][0]["channel"] == "custom"
    assert "43004" in listed["recipients"][2]["error"], listed
    assert len((await recipients(h, created["id"], limit=1, offset=2))["recipients"]) == 1
    assert (await h.api("GET", "/campaigns/987654/recipients"))[0] == 404

    # An article through 群发: uploaded as news with its cover, sent as mpnews; the Markdown neutralised.
    body = "## 活动规则\n\n满 199 减 30。<script>alert(1)</script>"
    status, mass = await post(h, title="年货节攻略", format="news", channel="mass", image_base64=picture,
                              text="三分钟看懂年货节", article_body=body, audience={"ranks": ["junior"]})
    assert status == 201, mass
    await wait_counted(h, mass["id"])
    [upload] = [body for name, body in h.platform.calls if name == "media/uploadnews"]
    article = upload["articles"][0]
    assert article["title"] == "年货节攻略" and article["digest"] == "三分钟看懂年货节"
    assert "<h2>活动规则</h2>" in article["content"] and "<script>" not in article["content"]
    for user in (a, b):
        [item] = bot_items(user, "mpnews")
        assert item["articles"][0]["title"] == "年货节攻略"
    assert {r["channel"] for r in (await recipients(h, mass["id"]))["recipients"]} == {"mass"}

    # The same article through customer-service messages: a news card opening its signed page.
    status, card = await post(h, title="年货节攻略", format="news", image_base64=picture, text="三分钟看懂年货节",
                              article_body=body)
    assert status == 201
    await wait_done(h, card["id"])
    await h.settled()
    [news] = bot_items(a, "news")
    link = news["articles"][0]["url"]
    assert link.startswith("http") and news["articles"][0]["picurl"] == link + "/cover"
    path = link[link.index("/a/"):]
    async with aiohttp.ClientSession() as http:
        async with http.get(h.url + path) as resp:
            page = await resp.text()
            assert resp.status == 200 and "年货节攻略" in page and "&lt;script&gt;" in page and "<script>" not in page
        async with http.get(h.url + path + "/cover") as resp:
            assert resp.status == 200 and await resp.read() == png()
        async with http.get(h.url + path[:-4] + "0000") as resp:
            assert resp.status == 404  # a guessed signature opens nothing


@pytest.mark.parametrize("page", ["desktop"], indirect=True)
async def test_the_campaign_page_previews_creates_and_shows_recipients(
        served: tuple[str, web.Application], page: Any, tmp_path: Path) -> None:
    from playwright.async_api import expect
    base, app = served
    cover = tmp_path / "cover.png"
    cover.write_bytes(png("blue"))
    await sign_in(page, base)
    await page.get_by_role("link", name="活动", exact=True).click()
    await page.get_by_label("标题").fill("年货节攻略")
    await page.get_by_label("格式").select_option(label="图文")
    await page.get_by_label("内容").fill("三分钟看懂<b>年货节</b>")
    await page.get_by_label("图片").set_input_files(str(cover))
    await page.get_by_label("正文").fill("## 活动规则\n\n满 199 减 30")
    await page.get_by_label("渠道").select_option("mass")
    await page.get_by_label("发送时间").fill("2099-01-01T20:00")
    await page.get_by_role("button", name="预览").click()
    preview = page.get_by_role("region", name="预览")
    message = preview.get_by_role("figure", name="分销员看到的消息")
    await expect(message).to_contain_text("年货节攻略")
    await expect(message).to_contain_text("三分钟看懂<b>年货节</b>")  # text, not markup
    await expect(message.get_by_role("img", name="封面")).to_be_visible()
    await preview.get_by_text("点开后的文章").click()
    await expect(preview.get_by_role("heading", name="活动规则")).to_be_visible()
    await expect(page.get_by_label("渠道")).to_have_value("mass")  # the form kept as typed
    await expect(page.get_by_text("已选好一张图片")).to_be_visible()
    await page.get_by_role("button", name="创建").click()  # the picture carried over from the preview
    await expect(page.get_by_role("status")).to_contain_text("「年货节攻略」已创建")
    await page.get_by_role("link", name="年货节攻略").click()
    await expect(page.get_by_role("heading", name="年货节攻略")).to_be_visible()
    await expect(page.get_by_text("群发（每人每月最多 4 条）")).to_be_visible()
    shown = page.get_by_role("region", name="预览").get_by_role("img", name="封面")
    assert await shown.evaluate("img => img.naturalWidth") == 16  # the stored cover, served to the console
    await expect(page.get_by_text("还没有开始发送")).to_be_visible()

    # A campaign being sent (this app has no workers: its rows are marked here as the outbox would).
    sent, failed = await seed_people(app, "张三", "李四")
    now = datetime.now(UTC)

    def queue(s: Any) -> int:
        c = campaigns.schedule(s, title="双十二预告", kind="notice", text="今晚八点开抢", audience="all",
                               send_at=now, now=now)
        while campaigns.enqueue_batch(s, c.id, now):
            pass
        s.execute(update(OUTBOX).where(OUTBOX.c.openid == sent.openid).values(
            status="sent", channel="custom", sent_at=now))
        s.execute(update(OUTBOX).where(OUTBOX.c.openid == failed.openid).values(
            status="failed", errcode=45015, last_error="WeChat error 45015: response out of time limit"))
        return c.id
    cid = await app[WRITER].run(queue)
    await page.goto(f"{base}/admin/campaigns/{cid}")
    rows = page.get_by_role("table", name="发送明细").get_by_role("row")
    await expect(rows.filter(has_text="张三")).to_contain_text("已发送")
    await expect(rows.filter(has_text="张三")).to_contain_text("客服消息")
    await expect(rows.filter(has_text="李四")).to_contain_text("失败")
    await expect(rows.filter(has_text="李四")).to_contain_text("45015")
    await expect(page.get_by_role("region", name="预览")).to_contain_text("今晚八点开抢")
