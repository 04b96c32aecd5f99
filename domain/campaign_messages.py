"""What a campaign sends, built in one place for the console's preview and for WeChat: a text, an
image, or an article (news: a title, a digest, a cover and a Markdown body).

An image or a cover is kept with the campaign (campaign_images) and uploaded to WeChat when sending
starts, since a temporary media_id lives 3 days; the campaign's message is completed then
(`uploaded`) and only then are its recipients queued. Through the customer-service channel an
article goes as a news card linking to its page on our site (WeChat shows one article); through
群发 it is uploaded as news (media/uploadnews) and sent as mpnews.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.config import Config
from domain.messages import Article, Image, MpNews, News, Reply, Text, to_json
from domain.refusals import Refusal
from domain.signing import link_key, sign, verify
from storage.models import OutboxBody
from storage.models_campaigns import Campaign, CampaignImage

FORMATS = ("text", "image", "news")
FORMAT_NAMES = {"text": "文字", "image": "图片", "news": "图文"}
CHANNEL_NAMES = {"service": "客服消息（48 小时内互动过的分销员；其余用模板消息）",
                 "mass": "群发（每人每月最多 4 条）"}
STATUS_NAMES = {"scheduled": "待发送", "sending": "发送中", "done": "已完成", "cancelled": "已取消"}
KIND_NAMES = {"notice": "通知", "contest": "比赛", "training": "培训"}
MAX_DIGEST = 120  # characters of an article's digest (WeChat's limit)
MAX_BODY = 20_000  # characters of an article's Markdown body
MAX_IMAGE_BYTES = 2 * 1024 * 1024  # WeChat's temporary images: keep them at or under 2 MB
_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


@dataclass(frozen=True)
class Draft:
    """A campaign's message as typed: `text` is the message (text), a note for the template message
    (image) or the digest (news); `body` an article's Markdown."""

    title: str
    format: str = "text"
    text: str = ""
    body: str = ""


def image_type(data: bytes) -> str:
    """The content type of a picture WeChat takes (JPEG or PNG, at most 2 MB); Refusal
    invalid_campaign otherwise."""
    kind = next((t for magic, t in _MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        raise Refusal("invalid_campaign", "The image must be a JPEG or PNG.", sentence="图片须是 JPG 或 PNG 格式。",
                      details=[{"field": "image", "problem": "not a JPEG or PNG"}])
    if len(data) > MAX_IMAGE_BYTES:
        raise Refusal("invalid_campaign", "The image is larger than 2 MB.", sentence="图片不能超过 2 MB。",
                      details=[{"field": "image", "problem": "larger than 2 MB"}])
    return kind


def check(draft: Draft, image: bytes | None) -> str | None:
    """A draft's rules beyond the form's fields; the image's content type (None without one).
    Refusal invalid_campaign: an image or news campaign without its picture, a digest too long."""
    if draft.format == "text":
        return None
    if not image:
        raise Refusal("invalid_campaign", f"A {draft.format} campaign needs an image.",
                      sentence="图片活动要上传一张图片，图文活动要上传封面。",
                      details=[{"field": "image", "problem": "missing"}])
    if draft.format == "news" and len(draft.text) > MAX_DIGEST:
        raise Refusal("invalid_campaign", f"An article's digest (text) is at most {MAX_DIGEST} characters.",
                      sentence=f"图文的摘要最多 {MAX_DIGEST} 个字。", details=[{"field": "text", "problem": "too long"}])
    return image_type(image)


def message(draft: Draft, *, image: str = "", link: str = "") -> Reply:
    """What a recipient gets (and what the preview shows). `image`: WeChat's media_id when sending
    an image, else the picture's address (a cover; the preview's picture); `link`: the article's page."""
    if draft.format == "image":
        return Image(image)
    if draft.format == "news":
        return News((Article(draft.title, draft.text, link, image),))
    return Text(draft.text)


def news_article(draft: Draft, thumb_media_id: str, content_html: str) -> dict[str, Any]:
    """The article as media/uploadnews takes it (群发 sends it as mpnews)."""
    return {"thumb_media_id": thumb_media_id, "author": "", "title": draft.title, "content_source_url": "",
            "content": content_html, "digest": draft.text, "show_cover_pic": 1}


def draft_of(c: Campaign) -> Draft:
    return Draft(c.title, c.format, c.text, (c.article or {}).get("body", ""))


@dataclass(frozen=True)
class ToUpload:
    draft: Draft
    channel: str
    content: bytes
    content_type: str


def awaiting_upload(session: Session, campaign_id: int) -> ToUpload | None:
    """A campaign whose picture is not yet on WeChat (None: nothing to upload)."""
    row = session.execute(select(Campaign, CampaignImage).join(CampaignImage).where(
        Campaign.id == campaign_id, CampaignImage.media_id.is_(None))).first()
    if row is None:
        return None
    c, image = row
    return ToUpload(draft_of(c), c.channel, image.content, image.content_type)


def uploaded(session: Session, campaign_id: int, media_id: str, news_media_id: str | None, *, link: str,
             cover_url: str, now: datetime) -> None:
    """Complete a campaign's message with what WeChat gave for its picture (and its article, 群发)."""
    c = session.get(Campaign, campaign_id)
    image = session.get(CampaignImage, campaign_id)
    body = session.get(OutboxBody, c.body_id) if c is not None else None
    if c is None or image is None or body is None or image.media_id is not None:
        return
    draft = draft_of(c)
    service = to_json(message(draft, image=media_id if draft.format == "image" else cover_url, link=link))
    sent = to_json(MpNews(news_media_id)) if news_media_id else service
    body.payload = {**sent, "template": body.payload.get("template"), "service": service}
    image.media_id, image.uploaded_at = media_id, now


def waits_for_upload(session: Session, campaign_id: int) -> bool:
    return session.scalar(select(CampaignImage.campaign_id).where(
        CampaignImage.campaign_id == campaign_id, CampaignImage.media_id.is_(None))) is not None


# ---- an article's page on our site (the news card of the customer-service channel opens it) ---------
def article_path(config: Config, campaign_id: int) -> str:
    """The signed path of a campaign's article page (its cover is `<path>/cover`): not guessable, so a
    campaign not yet sent cannot be read ahead."""
    return f"/a/{campaign_id}/{sign(link_key(config, 'campaign article'), str(campaign_id))}"


def article_link_valid(config: Config, campaign_id: int, signature: str) -> bool:
    return verify(link_key(config, "campaign article"), str(campaign_id), signature)
