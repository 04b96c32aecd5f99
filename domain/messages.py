"""Messages to a follower as plain values: what a handler replies, what the outbox sends, what
dedupe stores. Rendering them (passive-reply XML, customer-service JSON) is the transport's job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any



@dataclass(frozen=True)
class Text:
    content: str


@dataclass(frozen=True)
class Image:
    media_id: str


@dataclass(frozen=True)
class Article:
    title: str
    description: str = ""
    url: str = ""
    image: str = ""


@dataclass(frozen=True)
class News:
    articles: tuple[Article, ...]


@dataclass(frozen=True)
class MpNews:
    """An article uploaded to WeChat as news (media/uploadnews): what a 群发 of an article sends."""

    media_id: str


Reply = Text | Image | News | MpNews


def to_json(reply: Reply) -> dict[str, Any]:
    match reply:
        case Text(content):
            return {"type": "text", "content": content}
        case Image(media_id):
            return {"type": "image", "media_id": media_id}
        case News(articles):
            return {"type": "news", "articles": [a.__dict__ for a in articles]}
        case MpNews(media_id):
            return {"type": "mpnews", "media_id": media_id}
    raise TypeError(f"not a reply: {reply!r}")


def from_json(data: dict[str, Any]) -> Reply:
    match data.get("type"):
        case "text":
            return Text(data["content"])
        case "image":
            return Image(data["media_id"])
        case "news":
            return News(tuple(Article(**a) for a in data["articles"]))
        case "mpnews":
            return MpNews(data["media_id"])
    raise ValueError(f"not a stored reply: {data!r}")
