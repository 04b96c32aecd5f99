"""What a handler returns, as plain values that can be stored (dedupe, outbox) and rendered."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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


# Characters XML 1.0 does not allow: WeChat could not parse a reply holding one.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _cdata(value: str) -> str:
    """A CDATA section for any text: "]]>" is split over two sections (wechatpy's replies leave
    it in, and a name like "a]]>b" would break the XML)."""
    return "<![CDATA[" + _NOT_XML.sub("", value).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render(reply: Reply | None, *, account: str, openid: str) -> str:
    """The passive-reply XML for WeChat (the fields of wechatpy's TextReply, ImageReply and
    ArticlesReply); "success" when there is nothing to say now."""
    if reply is None:
        return "success"
    match reply:
        case Text(content):
            kind, body = "text", f"<Content>{_cdata(content)}</Content>"
        case Image(media_id):
            kind, body = "image", f"<Image><MediaId>{_cdata(media_id)}</MediaId></Image>"
        case News(articles):
            a = articles[0]  # a news reply to a user message shows only its first article nowadays
            kind, body = "news", (f"<ArticleCount>1</ArticleCount><Articles><item><Title>{_cdata(a.title)}</Title>"
                                  f"<Description>{_cdata(a.description)}</Description><PicUrl>{_cdata(a.image)}"
                                  f"</PicUrl><Url>{_cdata(a.url)}</Url></item></Articles>")
        case _:
            raise TypeError(f"not a reply: {reply!r}")
    return (f"<xml><ToUserName>{_cdata(openid)}</ToUserName><FromUserName>{_cdata(account)}</FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>{body}</xml>")
