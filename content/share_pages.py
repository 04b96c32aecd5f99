"""The share page behind share_url (CONTRACT §5): one product to buy (picture, name, price, selling
points, details, a buy button carrying the distributor's code) followed by the other live products,
or all of them for a general script. WeChat's share card (title, picture, description, link) is set
through the JS-SDK by a static script, share.js, from JSON elements: the CSP allows no inline script.
Everything from a pack is text here and escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from content.jssdk import json_script
from content.pages import cards, page
from domain.formats import yuan

SHARE_JS = Path(__file__).parent / "share.js"
SHARE_JS_PATH = "/s/share.js"
SHARE_APIS = ("updateAppMessageShareData", "updateTimelineShareData")
MAX_DESC = 120

# A product as the page shows it: its pack fields and its picture's absolute URL (or None).
Shown = tuple[dict[str, Any], str | None]


def share_card(title: str, desc: str, link: str, image: str | None) -> dict[str, str]:
    """What the share APIs get: a forward to a chat or 朋友圈 shows this, not a bare link."""
    return {"title": title, "desc": desc[:MAX_DESC], "link": link, "imgUrl": image or ""}


def product_card(shown: Shown, recommender: str, link: str) -> dict[str, str]:
    product, image = shown
    return share_card(product["name"], "，".join(product.get("selling_points") or []) or f"{recommender} 向您推荐",
                      link, image)


def list_card(products: Sequence[Shown], recommender: str, link: str) -> dict[str, str]:
    return share_card(f"{recommender} 向您推荐", "、".join(p["name"] for p, _ in products),
                      link, next((image for _, image in products if image), None))


def _cards(products: Sequence[Shown], code: str) -> str:
    """The products' cards, each name linking to its own share page (the same 推广码)."""
    return cards((p["name"], yuan(p["price_fen"]), "，".join(p.get("selling_points") or []), image,
                  f"/s/{quote(code)}?sku={quote(p['sku'])}") for p, image in products)


def _code_line(code: str) -> str:
    c = html.escape(code)
    return f"<p>推广码：<b>{c}</b>（下单时请填写，或关注公众号后回复“注册 {c}”加入）</p>"


def _scripts(wx: dict[str, Any] | None, card: dict[str, str], jssdk: str) -> str:
    """The card and the signed config for share.js; without a config (WeChat did not give a
    ticket) the page still shows, only the share card stays WeChat's default."""
    if wx is None:
        return ""
    return (json_script("wx-config", wx) + json_script("wx-share", card)
            + f'<script src="{html.escape(jssdk)}"></script><script src="{SHARE_JS_PATH}"></script>')


def _details(details: dict[str, str]) -> str:
    if not details:
        return ""
    rows = "".join(f'<tr><th scope="row">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>'
                   for k, v in details.items())
    return f'<table class="details"><caption>商品详情</caption><tbody>{rows}</tbody></table>'


def product_page(shown: Shown, *, recommender: str, code: str, buy_href: str | None, others: Sequence[Shown],
                 wx: dict[str, Any] | None, card: dict[str, str], jssdk: str) -> str:
    """One product to buy, then the others."""
    product, image = shown
    name = product["name"]
    body = [f'<img class="hero" src="{html.escape(image)}" alt="{html.escape(name)}">' if image else "",
            f'<p class="price big">{html.escape(yuan(product["price_fen"]))}</p>']
    points = product.get("selling_points") or []
    if points:
        body.append("<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in points) + "</ul>")
    body.append(_details(product.get("details") or {}))
    if buy_href:
        body.append(f'<p><a class="buy" href="{html.escape(buy_href)}" rel="noopener">立即购买</a></p>')
    body.append(_code_line(code))
    if others:
        body.append("<h2>更多推荐</h2>" + _cards(others, code))
    body.append(_scripts(wx, card, jssdk))
    return page(name, "".join(body), meta=f"{recommender} 向您推荐")


def list_page(products: Sequence[Shown], *, recommender: str, code: str, wx: dict[str, Any] | None,
              card: dict[str, str], jssdk: str) -> str:
    """Every live product (a general script's link)."""
    body = _cards(products, code) + _code_line(code) + _scripts(wx, card, jssdk)
    return page(f"{recommender} 向您推荐", body)


def gone_page() -> str:
    return page("推荐链接已失效", "<p>这个推荐链接无效或已失效。</p>")
