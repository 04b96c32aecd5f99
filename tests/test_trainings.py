"""Training material: 培训 lists what the distributor's rank may read, with links to pages that
render the pack's Markdown safely."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from content.pages import markdown_html
from kit.chat import NOT_REGISTERED
from tests.conftest import ON_SQLITE, Harness
from tests.test_packs_support import demo, small_pack, upload, zip_of

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py


def test_markdown_escapes_raw_html_and_unsafe_links() -> None:
    html, pictures = markdown_html('<script>alert(1)</script>\n\n<img src=x onerror=alert(1)> '
                                   '[a](javascript:alert(1)) [b](https://ok.test) ![p](../images/a.png)',
                                   base="trainings", resolve=lambda p: "/c/1/" + p)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img src=x" not in html
    assert "javascript:" not in html and 'href="https://ok.test"' in html
    assert 'src="/c/1/images/a.png"' in html and pictures == ["images/a.png"]


# What a browser makes of an href after its clean-up: each of these is javascript: (or data:) to it.
HOSTILE = ("[a](\x01javascript:alert(1))", "[a](java\rscript:alert(1))", "[a](&#106;avascript:alert(1))",
           "[a](javascript&colon;alert(1))", "[a]( javascript:alert(1))", "[a](\tJaVaScRiPt:alert(1))",
           "[a](java&#x09;script:alert(1))", "[a](<javascript:alert(1)>)", "[a][r]\n\n[r]: javascript:alert(1)",
           "[a](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)", "[a](vbscript:msgbox(1))",
           "![x](javascript:alert(1))", "![x](\x01javascript:alert(1))",
           "![x](data:image/svg+xml,<svg onload=alert(1)>)",
           '<a href="javascript:alert(1)">x</a>', "<img src=x onerror=alert(1)>", "<script>alert(1)</script>",
           '<svg onload="alert(1)">')


class Elements(HTMLParser):
    """The elements of some HTML with their attributes, entities decoded (as a browser reads them)."""

    def __init__(self, text: str):
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))


@pytest.mark.parametrize("text", HOSTILE)
def test_no_executable_url_or_handler_survives(text: str) -> None:
    out, _ = markdown_html(text, base="trainings", resolve=lambda p: "/c/1/" + p)
    elements = Elements(out).found
    assert {tag for tag, _ in elements} <= {"p", "a", "img"}, out
    for _, attrs in elements:
        assert not any(name.startswith("on") for name in attrs), out
        for name in ("href", "src"):
            if name in attrs:  # what is left is relative, or a scheme the contract keeps
                assert urlsplit(attrs[name]).scheme in ("", "http", "https", "mailto"), out


def test_safe_links_and_pictures_stay() -> None:
    out, seen = markdown_html("[w](https://ok.test/a?b=1) [h](http://ok.test) [m](mailto:a@ok.test) [t](#top) "
                              "[r](../other.md) [s](/s/ABC) ![p](pics/a.png) ![q](https://cdn.test/q.png)",
                              base="trainings", resolve=lambda p: "/pics/" + p)
    for href in ("https://ok.test/a?b=1", "http://ok.test", "mailto:a@ok.test", "#top", "../other.md", "/s/ABC"):
        assert f'href="{href}"' in out.replace("&amp;", "&"), (href, out)
    assert 'src="/pics/trainings/pics/a.png"' in out and 'src="https://cdn.test/q.png"' in out
    assert seen == ["trainings/pics/a.png"] and 'rel="noopener noreferrer"' in out


async def test_training_links_to_pages_for_the_rank(harness: Harness) -> None:
    user = harness.user()
    assert await harness.say(user, "培训") == NOT_REGISTERED
    await harness.register(user, "13800138000", "赵敏")
    assert "还没有适合您等级的培训资料" in await harness.say(user, "培训")
    assert (await upload(harness, demo()))[0] == 201

    reply = await harness.say(user, "培训")
    assert "新人第一课" in reply and "推广规范" in reply and "黄金合伙人进阶" not in reply  # gold only
    urls = re.findall(r"https?://\S+", reply)
    assert len(urls) == 2 and all(u.startswith(harness.config.server.public_url + "/t/") for u in urls)
    assert harness.http is not None
    path = urls[0].removeprefix(harness.config.server.public_url)
    async with harness.http.get(harness.url + path) as resp:
        page = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
    assert "<h1>新人第一课：三步开始推广</h1>" in page and "第一步：领取专属海报" in page and "<table>" in page
    picture = re.search(r'src="([^"]+)"', page)  # the picture is under the page's own (signed) path
    assert picture is not None and picture.group(1) == path + "/images/sku1.jpg"
    async with harness.http.get(harness.url + picture.group(1)) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"
    async with harness.http.get(harness.url + "/t/999/none") as resp:
        assert resp.status == 404


async def test_single_training_is_a_news_article_and_raw_html_is_escaped(harness: Harness) -> None:
    user = harness.user()
    await harness.register(user, "13900139000", "周芷若")
    assert (await upload(harness, zip_of(small_pack())))[0] == 201
    reply = await harness.click(user, "TRAINING")
    assert reply is not None and reply["type"] == "news", reply
    [article] = reply["articles"]
    assert article["title"] == "新人第一课" and "第一步" in article["description"]
    assert harness.http is not None
    async with harness.http.get(harness.url + article["url"].removeprefix(harness.config.server.public_url)) as resp:
        page = await resp.text()
    assert resp.status == 200 and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
