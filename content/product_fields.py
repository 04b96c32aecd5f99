"""A pack product's share-page fields (CONTRACT §6): `details`, a small table of text shown on the
share page and seen by templates as product.details, and `buy_url`, the shop link of the share
page's buy button, a template in which `{code}` becomes the distributor's 推广码 (URL-encoded)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

from content.pack_checker import Checker
from content.templating import with_ref
from domain.catalogue import PACK, say

MAX_DETAILS = 20
MAX_DETAIL_KEY = 20
MAX_DETAIL_VALUE = 200
MAX_BUY_URL = 2000
CODE = "{code}"
# What a browser drops or reads differently in a URL: whitespace, control characters, quotes, angle brackets.
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\"'<>\\`]")


def check_details(c: Checker, value: dict[str, Any], where: str, sku: str) -> dict[str, str] | None:
    """The product's details (names and values, both text, in the manifest's order), or None after
    reporting what is wrong."""
    ok = True
    if len(value) > MAX_DETAILS:
        c.problem(f"{where}.details", say(PACK, "details_many", sku=sku, n=len(value), most=MAX_DETAILS))
        ok = False
    for name, text in value.items():
        if not name.strip() or len(name) > MAX_DETAIL_KEY:
            c.problem(f"{where}.details", say(PACK, "detail_name", sku=sku, name=name, most=MAX_DETAIL_KEY))
            ok = False
        elif not isinstance(text, str) or not text.strip():
            c.problem(f"{where}.details.{name}", say(PACK, "detail_text", sku=sku, name=name))
            ok = False
        elif len(text) > MAX_DETAIL_VALUE:
            c.problem(f"{where}.details.{name}", say(PACK, "detail_long", sku=sku, name=name, n=len(text),
                                                     most=MAX_DETAIL_VALUE))
            ok = False
    return {name: text.strip() for name, text in value.items()} if ok else None


def check_buy_url(c: Checker, value: str, where: str, sku: str) -> str | None:
    """The product's buy_url as given, or None after reporting why a browser could not be sent there
    safely: only http(s) links to a host, no whitespace or quotes, `{code}` the only placeholder."""
    url = value.strip()
    field = f"{where}.buy_url"
    sample = buy_link(url, "K7QF2M")
    parts = urlsplit(sample)
    if parts.scheme.lower() not in ("https", "http") or not url.lower().startswith(("https://", "http://")):
        c.problem(field, say(PACK, "buy_scheme", sku=sku, url=url[:40]))
    elif len(url) > MAX_BUY_URL or _UNSAFE_URL_CHARS.search(url):
        c.problem(field, say(PACK, "buy_shape", sku=sku, most=MAX_BUY_URL))
    elif "{" in url.replace(CODE, "") or "}" in url.replace(CODE, ""):
        c.problem(field, say(PACK, "buy_placeholder", sku=sku))
    elif not parts.hostname:
        c.problem(field, say(PACK, "buy_host", sku=sku))
    else:
        return url
    return None


def buy_link(buy_url: str, code: str) -> str:
    """The buy button's link for a distributor: `{code}` replaced by their code, URL-encoded."""
    return buy_url.replace(CODE, quote(code, safe=""))


def shop_link(product: dict[str, Any], code: str) -> str | None:
    """Where the share page's buy button goes: the buy_url filled in, else the product's own page
    with ?ref=CODE, else nowhere (no button)."""
    if product.get("buy_url"):
        return buy_link(product["buy_url"], code)
    return with_ref(product["url"], code) if product.get("url") else None
