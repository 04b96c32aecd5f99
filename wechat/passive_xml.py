"""Passive replies as the XML WeChat expects (the fields of wechatpy's TextReply, ImageReply and
ArticlesReply), with every text safe in CDATA."""

from __future__ import annotations

import re

from domain.messages import Image, News, Reply, Text


# Characters XML 1.0 does not allow: WeChat could not parse a reply holding one.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _cdata(value: str) -> str:
    """A CDATA section for any text: "]]>" is split over two sections (wechatpy's replies leave
    it in, and a name like "a]]>b" would break the XML)."""
    return "<![CDATA[" + _NOT_XML.sub("", value).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def passive_reply_xml(reply: Reply | None, *, account: str, openid: str, at: float) -> str:
    """The passive-reply XML for WeChat (the fields of wechatpy's TextReply, ImageReply and
    ArticlesReply), created `at` (seconds since 1970); "success" when there is nothing to say now."""
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
            f"<CreateTime>{int(at)}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>{body}</xml>")
