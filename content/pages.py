"""Public HTML pages made from pack content: Markdown to HTML with raw HTML escaped, sanitised
by nh3 (links and pictures keep only http(s), mailto, # and relative URLs, judged as a browser
reads them), in a plain mobile layout (WeChat's in-app browser)."""

from __future__ import annotations

import html
import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import markdown
import nh3
from markdown.treeprocessors import Treeprocessor

# What survives in a page: the tags Markdown makes, a few harmless attributes, and URLs of these
# schemes or none (relative, "#..."). nh3 decodes entities and drops the control characters and
# whitespace a browser ignores before it judges a URL, so "java\rscript:" is "javascript:" to it too.
URL_SCHEMES = frozenset({"http", "https", "mailto"})
_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES, "a": {"href", "title"}, "img": {"src", "alt", "title", "loading"}}

# Maps a picture path relative to the pack (e.g. "images/sku1.jpg") to its public URL, or None.
ImageResolver = Callable[[str], str | None]


def _pack_path(src: str) -> bool:
    """Whether a picture's src names a file of the pack: no scheme and no host, as a browser
    would read it (entities decoded; urlsplit drops what the browser drops)."""
    url = urlsplit(html.unescape(src))
    return bool(src) and not url.scheme and not url.netloc


class _Pictures(Treeprocessor):
    """Pictures of the pack become their public URLs (and are listed); others stay for nh3."""

    def __init__(self, md: markdown.Markdown, base: str, resolve: ImageResolver, seen: list[str]):
        super().__init__(md)
        self.base, self.resolve, self.seen = base, resolve, seen

    def run(self, root: Element) -> None:
        for el in root.iter("img"):
            src = el.get("src", "")
            if not _pack_path(src):
                continue
            path = posixpath.normpath(posixpath.join(self.base, src))
            self.seen.append(path)
            url = self.resolve(path)
            if url is None:
                el.attrib.pop("src", None)
            else:
                el.set("src", url)
            el.set("loading", "lazy")


def markdown_html(text: str, *, base: str = "", resolve: ImageResolver = lambda p: None) -> tuple[str, list[str]]:
    """(HTML, pack paths of the pictures it shows). Raw HTML in the Markdown shows as text; the
    HTML is nh3's: nothing in it runs script."""
    seen: list[str] = []
    md = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists"], output_format="html",
                           extension_configs={"tables": {"use_align_attribute": True}})
    # Without these two, "<script>" and friends are ordinary text, which the serialiser escapes.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(_Pictures(md, base, resolve, seen), "distbot_pictures", 0)
    return nh3.clean(md.convert(text), attributes=_ATTRIBUTES, url_schemes=set(URL_SCHEMES),
                     link_rel="noopener noreferrer"), seen


PAGE_CSS = """
*{box-sizing:border-box}body{margin:0;background:#f5f5f5;color:#222;font:17px/1.7 -apple-system,
"PingFang SC","Noto Sans SC","Microsoft YaHei",sans-serif}main{max-width:720px;margin:0 auto;
background:#fff;padding:20px 18px 40px;min-height:100vh}h1{font-size:24px;line-height:1.4;
margin:.2em 0 .8em}h2{font-size:20px}h3{font-size:18px}img{max-width:100%;height:auto;border-radius:6px}
pre{overflow-x:auto;background:#f3f3f3;padding:10px;border-radius:6px}code{font-size:15px}
table{border-collapse:collapse;width:100%;display:block;overflow-x:auto}td,th{border:1px solid #ddd;
padding:6px 8px}blockquote{margin:0;padding:0 12px;border-left:4px solid #e0b050;color:#555}
.meta{color:#888;font-size:14px;margin-bottom:16px}.card{border:1px solid #eee;border-radius:10px;
padding:12px;margin:12px 0;display:flex;gap:12px}.card img{width:96px;height:96px;object-fit:cover}
.price{color:#d0342c;font-weight:600}a{color:#1b64c8}.hero{width:100%}.big{font-size:24px;margin:.3em 0}
table.details{display:table;margin:12px 0}.details caption{text-align:left;font-weight:600;padding:4px 0}
.details th{text-align:left;white-space:nowrap;background:#fafafa;font-weight:normal;color:#666}
.buy{display:block;text-align:center;background:#d0342c;color:#fff;padding:12px;border-radius:24px;
font-size:18px;text-decoration:none;margin:20px 0}
"""


# The icon of every page, public and console alike, served at /favicon.ico (kit.console.favicon).
FAVICON = Path(__file__).parent / "favicon.png"
ICON_LINK = '<link rel="icon" href="/favicon.ico" type="image/png">'


def page(title: str, body_html: str, *, meta: str = "") -> str:
    """A whole mobile page; `title` and `meta` are text, `body_html` is already safe HTML."""
    meta_html = f'<div class="meta">{html.escape(meta)}</div>' if meta else ""
    return ("<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{html.escape(title)}</title>{ICON_LINK}<style>{PAGE_CSS}</style></head>"
            f"<body><main><h1>{html.escape(title)}</h1>{meta_html}{body_html}</main></body></html>")


def cards(items: Iterable[tuple[str, str, str, str | None, str]]) -> str:
    """Product cards: (name, price text, description, picture URL or None, the product's page),
    all text but the URLs; the name links to the page."""
    out = []
    for name, price, desc, image, href in items:
        img = f'<img src="{html.escape(image)}" alt="">' if image else ""
        title = f'<a href="{html.escape(href)}">{html.escape(name)}</a>'
        out.append(f'<div class="card">{img}<div><b>{title}</b><div class="price">{html.escape(price)}'
                   f'</div><div>{html.escape(desc)}</div></div></div>')
    return "".join(out)
