"""Marketing scripts in chat: filled in for the distributor, picked from a numbered list, and the
share page their link opens; pack templates cannot reach Python's internals."""

from __future__ import annotations

import pytest

from content.templating import PackTemplateError, render_template as render, template_variables
from kit.chat import NOT_REGISTERED
from tests.conftest import ON_SQLITE, Harness
from tests.test_packs_support import demo, upload

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ distributor.__class__.__init__.__globals__ }}",
    "{{ product.name.__class__ }}",
    "{{ share_url.format.__globals__ }}",
    "{{ '{0.__class__}'.format(share_url) }}",
    "{{ '%s' % share_url }}",
    "{{ 'x' * 100000000 }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ self._TemplateReference__context }}",
    "{% for i in range(10**9) %}{% endfor %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_template_escapes_fail_harmlessly(source: str) -> None:
    variables = template_variables("https://x.test", "张三", "K7QF2M",
                                   {"sku": "SKU-1", "name": "红枣", "price_fen": 12900})
    with pytest.raises(PackTemplateError):
        render(source, variables)


def test_template_sees_the_documented_variables() -> None:
    product = {"sku": "SKU-1", "name": "红枣", "price_fen": 12900, "selling_points": ["甜"], "url": "https://shop.test/p/1"}
    out = render("{{ distributor.name }}|{{ distributor.code }}|{{ product.name }}|{{ product.price }}|"
                 "{{ product.selling_points[0] }}|{{ share_url }}", template_variables("https://x.test", "张三", "K7QF2M", product))
    assert out == "张三|K7QF2M|红枣|¥129.00|甜|https://shop.test/p/1?ref=K7QF2M"
    assert render("{{ share_url }}", template_variables("https://x.test", "张三", "K7QF2M", None)) == \
        "https://x.test/s/K7QF2M"


async def test_scripts_are_filled_in_and_picked_by_number(harness: Harness) -> None:
    user = harness.user()
    assert await harness.say(user, "话术") == NOT_REGISTERED
    code = await harness.register(user, "13800138000", "王小明")
    assert "还没有推广话术" in await harness.say(user, "话术")
    assert (await upload(harness, demo()))[0] == 201
    base = harness.config.server.public_url

    listing = await harness.say(user, "话术 SKU-1")
    assert "1. 红枣礼盒·朋友圈文案" in listing and "2. 红枣礼盒·社群话术" in listing
    script = await harness.say(user, "2")
    assert script.startswith("【红枣礼盒·社群话术】") and "王小明" in script
    assert "有机红枣礼盒" in script and "¥129.00" in script and f"{base}/s/{code}?sku=SKU-1" in script
    assert "{{" not in script

    # A keyword with one match answers at once; the list state is gone after a pick.
    single = await harness.say(user, "话术 阿胶")
    assert single.startswith("【阿胶糕·朋友圈文案】") and "¥168.00" in single
    assert "没有找到" in await harness.say(user, "话术 火星")
    everything = await harness.say(user, "scripts")
    assert "找到 5 条话术" in everything
    assert "请回复 1–5 的序号" in await harness.say(user, "九")
    assert "王小明" in await harness.say(user, "5")
    menu = await harness.click(user, "SCRIPTS")
    assert menu is not None and "找到 5 条话术" in menu["content"]

    assert harness.http is not None
    async with harness.http.get(f"{harness.url}/s/{code}?sku=SKU-2") as resp:
        page = await resp.text()
        assert resp.status == 200 and "王*" in page and "古法手工阿胶糕" in page and "¥168.00" in page
    assert page.index("古法手工阿胶糕") < page.index("有机红枣礼盒")
    async with harness.http.get(f"{harness.url}/s/ZZZZZZ") as resp:
        assert resp.status == 404
