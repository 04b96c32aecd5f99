"""What a handler returns, as plain values that can be stored (dedupe, outbox) and rendered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wechatpy.replies import ArticlesReply, ImageReply, TextReply


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


Reply = Text | Image | News


@dataclass(frozen=True)
class Later:
    """Slow work (rendering, WeChat uploads) done after the update's transaction commits.

    Its result is the passive reply when it is ready within the reply deadline, otherwise it is
    delivered through the outbox and the customer-service API.
    """

    work: Callable[[], Awaitable[Reply | None]]
    key: str = field(default="")


def to_json(reply: Reply) -> dict[str, Any]:
    match reply:
        case Text(content):
            return {"type": "text", "content": content}
        case Image(media_id):
            return {"type": "image", "media_id": media_id}
        case News(articles):
            return {"type": "news", "articles": [a.__dict__ for a in articles]}
    raise TypeError(f"not a reply: {reply!r}")


def from_json(data: dict[str, Any]) -> Reply:
    match data.get("type"):
        case "text":
            return Text(data["content"])
        case "image":
            return Image(data["media_id"])
        case "news":
            return News(tuple(Article(**a) for a in data["articles"]))
    raise ValueError(f"not a stored reply: {data!r}")


def render(reply: Reply | None, *, account: str, openid: str) -> str:
    """The passive-reply XML for WeChat; "success" when there is nothing to say now."""
    if reply is None:
        return "success"
    common = {"source": account, "target": openid}
    match reply:
        case Text(content):
            return TextReply(content=content, **common).render()
        case Image(media_id):
            return ImageReply(media_id=media_id, **common).render()
        case News(articles):
            r = ArticlesReply(**common)
            # A news reply to a user message shows only its first article nowadays.
            a = articles[0]
            r.add_article({"title": a.title, "description": a.description, "url": a.url, "image": a.image})
            return r.render()
    raise TypeError(f"not a reply: {reply!r}")
