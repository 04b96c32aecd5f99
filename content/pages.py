"""Public HTML pages made from pack content: Markdown to HTML with raw HTML escaped and links
limited to harmless schemes, in a plain mobile layout (WeChat's in-app browser)."""

from __future__ import annotations

import html
import posixpath
import re
from collections.abc import Callable, Iterable
from xml.etree.ElementTree import Element

import markdown
from markdown.treeprocessors import Treeprocessor

_SAFE_SCHEME = re.compile(r"^(https?:|mailto:|#|/(?!/))", re.IGNORECASE)
_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")

# Maps a picture path relative to the pack (e.g. "images/sku1.jpg") to its public URL, or None.
ImageResolver = Callable[[str], str | None]


class _LinkGuard(Treeprocessor):
    def __init__(self, md: markdown.Markdown, base: str, resolve: ImageResolver, seen: list[str]):
        super().__init__(md)
        self.base, self.resolve, self.seen = base, resolve, seen

    def run(self, root: Element) -> None:
        for el in root.iter():
            if el.tag == "a":
                href = el.get("href", "")
                if not _SAFE_SCHEME.match(href) and (_HAS_SCHEME.match(href) or not href):
                    el.attrib.pop("href", None)
                else:
                    el.set("rel", "noopener")
            elif el.tag == "img":
                src = el.get("src", "")
                if src.lower().startswith(("https://", "http://")):
                    continue
                if _HAS_SCHEME.match(src) or not src:
                    el.attrib.pop("src", None)
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
    """(HTML, pack paths of the pictures it shows). Raw HTML in the Markdown shows as text."""
    seen: list[str] = []
    md = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    # Without these two, "<script>" and friends are ordinary text, which the serialiser escapes.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(_LinkGuard(md, base, resolve, seen), "distbot_links", 0)
    return md.convert(text), seen


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
.price{color:#d0342c;font-weight:600}a{color:#1b64c8}
"""


def page(title: str, body_html: str, *, meta: str = "") -> str:
    """A whole mobile page; `title` and `meta` are text, `body_html` is already safe HTML."""
    meta_html = f'<div class="meta">{html.escape(meta)}</div>' if meta else ""
    return ("<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head>"
            f"<body><main><h1>{html.escape(title)}</h1>{meta_html}{body_html}</main></body></html>")


def cards(items: Iterable[tuple[str, str, str, str | None]]) -> str:
    """Product cards: (name, price text, description, picture URL or None), all text but the URL."""
    out = []
    for name, price, desc, image in items:
        img = f'<img src="{html.escape(image)}" alt="">' if image else ""
        out.append(f'<div class="card">{img}<div><b>{html.escape(name)}</b><div class="price">{html.escape(price)}'
                   f'</div><div>{html.escape(desc)}</div></div></div>')
    return "".join(out)
