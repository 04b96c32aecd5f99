"""Pack templates on a budget (CONTRACT §7): a template that needs more than 100,000 loop steps
or 100 ms on a sample distributor is refused at upload, naming its file; one that exceeds the
budget in chat gets an apology; and in chat a template is filled in after the update's unit of
work committed and in a thread, so /healthz and other chats go on meanwhile."""

from __future__ import annotations

import asyncio
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import content
import handlers.posters
import handlers.scripts
from kit.app_keys import SESSIONMAKER
from content.templating import PackTemplateError, check, render_template, template_variables
from storage.models import ProcessedMessage
from tests.conftest import ON_SQLITE, Harness
from tests.test_packs_support import MANIFEST, demo, small_pack, upload, zip_of

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py

STEPS = "needs more than 100,000 loop steps"
BUDGET = f"{STEPS}|takes more than 100 ms"  # which comes first depends on the machine's speed
# Costly templates, each as a script file of its own, and the reason each is refused.
COSTLY = {
    "million": ("{% for a in 'x' * 1000 %}{% for b in 'x' * 1000 %}{% endfor %}{% endfor %}", BUDGET),
    "nested": ("{% for a in product.selling_points * 50 %}{% for b in product.selling_points * 50 %}"
               "{% for c in product.selling_points * 50 %}{% endfor %}{% endfor %}{% endfor %}", BUDGET),
    "multiply": ("{{ distributor.name * 10 ** 9 }}", "repetition too large"),
    "macro": ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}", BUDGET),
    "sleep": ("{{ sleep(5) }}", "unknown variable 'sleep'"),
    "clock": ("{{ lipsum(10 ** 6) }}{{ range(10 ** 9) | list }}", "unknown variable"),
    "capture": ("{% set a = 'x' * 9000 %}{% set b %}{% for i in 'x' * 5000 %}{{ a }}{% endfor %}{% endset %}"
                "{{ b | length }}", "prints more than 100,000 characters"),
}
POSTER_TEXT = "{% for a in distributor.name * 500 %}{% for b in distributor.name * 500 %}{% endfor %}{% endfor %}"


def _costly_pack() -> bytes:
    manifest = MANIFEST.replace("{{ distributor.name }} 邀你一起", POSTER_TEXT)
    files: dict[str, Any] = {}
    for name, (source, _) in COSTLY.items():
        manifest += (f'\n[[scripts]]\nkey = "{name}"\nsku = "SKU-1"\ntitle = "{name}"\n'
                     f'template = "scripts/{name}.txt.j2"\n')
        files[f"scripts/{name}.txt.j2"] = source
    return zip_of(small_pack(manifest, **files))


async def test_costly_templates_are_refused_at_upload_naming_their_files(harness: Harness) -> None:
    status, body = await upload(harness, _costly_pack())
    assert status == 422 and body["error"] == "invalid_pack", body
    problems = {(d["file"], d["field"]): d["message"] for d in body["details"]}
    for i, (name, (_, reason)) in enumerate(COSTLY.items(), start=1):
        message = problems.pop((f"scripts/{name}.txt.j2", f"scripts[{i}].template"))
        assert message.startswith("模板错误：") and any(r in message for r in reason.split("|")), message
    poster = problems.pop(("manifest.toml", "posters[0].texts[0].template"))
    assert any(r in poster for r in BUDGET.split("|")), poster
    assert problems == {}  # the pack's other templates are fine, and nothing else is wrong
    assert await harness.api("GET", "/content-packs") == (200, {"packs": [], "total": 0})

    status, body = await upload(harness, demo())  # a normal pack, loops and all, still imports
    demo_manifest = tomllib.loads((Path(content.__file__).parent / "demo" / "manifest.toml").read_text("utf-8"))
    assert status == 201 and (body["scripts"], body["posters"]) == (
        len(demo_manifest["scripts"]), len(demo_manifest["posters"])), body


async def test_a_template_over_budget_in_chat_gets_an_apology(harness: Harness) -> None:
    # 9,000 steps a letter of the name: 18,000 for the sample 张三, 135,000 for a 15-letter name.
    per_letter = "{% for c in distributor.name %}{% for i in 'x' * 9000 %}{% endfor %}{% endfor %}"
    status, body = await upload(harness, zip_of(small_pack(**{"scripts/sku1.txt.j2": per_letter + "{{ distributor.name }}好"})))
    assert status == 201, body
    short, long = harness.user(), harness.user()
    await harness.register(short, "13800138000", "王小明")
    await harness.register(long, "13900139000", "欧阳" + "娜" * 13)
    assert await harness.say(short, "话术") == "【朋友圈文案】\n王小明好"
    assert await harness.say(long, "话术") == handlers.scripts.BROKEN


class Held:
    """The render of a pack template held in the middle until released (at most `limit` s)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, limit: float = 10.0):
        self.started = asyncio.Event()
        self.release = threading.Event()
        self.rendering = False
        loop = asyncio.get_running_loop()
        real: Callable[..., str] = module.render_template

        def held(source: str, variables: Any) -> str:
            self.rendering = True
            loop.call_soon_threadsafe(self.started.set)
            self.release.wait(limit)
            self.rendering = False
            return real(source, variables)
        monkeypatch.setattr(module, "render_template", held)


async def _processed(harness: Harness, openid: str) -> int:
    async with harness.app[SESSIONMAKER]() as session:
        return await session.scalar(select(func.count()).select_from(ProcessedMessage)
                                    .where(ProcessedMessage.openid == openid)) or 0


async def _meanwhile(harness: Harness, held: Held, asker: Any, asked: int) -> None:
    """While the asker's template is held in its render: /healthz answers, another follower
    registers (a unit of work of its own), and the asker's update has committed already."""
    await asyncio.wait_for(held.started.wait(), 30)
    assert harness.http is not None
    async with harness.http.get(harness.url + "/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    other = harness.user()
    await harness.register(other, "13700137000", "李四")
    assert await _processed(harness, asker.openid) == asked + 1
    assert held.rendering  # all of the above happened while the render was still under way
    held.release.set()


# What each feature answers once its template is filled in: a script's text, a poster's picture.
ANSWERED: dict[str, tuple[Any, str, Callable[[Harness, dict[str, Any]], bool]]] = {
    "script": (handlers.scripts, "话术 阿胶",
               lambda h, m: m.get("content", "").startswith("【阿胶糕") and "¥168.00" in m["content"]),
    "poster": (handlers.posters, "海报", lambda h, m: m.get("type") == "image" and m["media_id"] in h.platform.media),
}


@pytest.mark.parametrize("feature", ANSWERED)
async def test_chat_fills_in_templates_after_the_unit_of_work_and_off_the_loop(
        harness: Harness, monkeypatch: pytest.MonkeyPatch, feature: str) -> None:
    module, command, answered = ANSWERED[feature]
    assert (await upload(harness, demo()))[0] == 201
    alice = harness.user()
    await harness.register(alice, "13800138000", "王小明")
    asked = await _processed(harness, alice.openid)
    held = Held(monkeypatch, module)
    asking = asyncio.create_task(harness.say(alice, command))
    await _meanwhile(harness, held, alice, asked)
    await asking  # the answer is the passive reply, or a message after it when that came too late
    await harness.platform.wait_for(alice.openid, lambda m: answered(harness, m))


# ---- the sandbox's own limits, without a pack -----------------------------------------------------
VARIABLES = template_variables("https://x.test", "张三", "K7QF2M",
                               {"sku": "SKU-1", "name": "红枣", "price_fen": 12900, "selling_points": ["甜", "脆"]})
BLOWUPS = {
    "replace": "{{ (distributor.name * 4000) | replace('', share_url) }}",
    "join-many": "{% set a = share_url * 300 %}{{ [a, a, a, a, a, a, a, a, a, a, a, a, a] | join }}",
    "join-separator": "{{ (distributor.name * 2000) | list | join(share_url * 30) }}",
    "concat-doubling": "{% set a = share_url * 300 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c | length }}",
    "plus-doubling": "{% set a = share_url * 300 %}{% set b = a + a %}{% set c = b + b %}{{ c | length }}",
    "power-tower": "{% set a = 9 ** 64 %}{% set b = a ** 64 %}{% set c = b ** 64 %}{{ c % 7 }}",
    "squaring": "{% set a = 9 ** 60 %}{% set b = a * a %}{% set c = b * b %}{% set d = c * c %}{% set e = d * d %}"
                "{% set f = e * e %}{% set g = f * f %}{{ g % 7 }}",
    "ljust": "{{ distributor.name.ljust(10 ** 9) }}",
    "zfill": "{{ distributor.name.zfill(10 ** 9) }}",
    "to-bytes": "{{ (1).to_bytes(10 ** 9, 'big') }}",
    "translate": "{{ (distributor.name * 4000).translate({24352: share_url * 300}) }}",
    "str-join": "{{ share_url.join(distributor.name * 5000) }}",
    "append": "{% set xs = [] %}{% for i in 'x' * 10 %}{{ xs.append(share_url) }}{% endfor %}{{ xs | length }}",
    "batch": "{{ product.selling_points | batch(10 ** 9, share_url) | list }}",
    "slice": "{{ product.selling_points | slice(10 ** 9) | list | length }}",
    "sum-lists": "{{ [product.selling_points, product.selling_points] | sum(start=[]) }}",
    # A recursive loop's inner turns would go uncounted.
    "recursive-loop": "{% for x in [product.selling_points] recursive %}{% if x is string %}{{ x }}"
                      "{% else %}{{ loop(x) }}{% endif %}{% endfor %}",
    "print-big-list": "{% set a = share_url * 300 %}{{ [a, a, a, a, a, a, a, a, a, a, a, a, a] }}",
}


@pytest.mark.parametrize("source", BLOWUPS.values(), ids=BLOWUPS.keys())
def test_nothing_a_template_computes_grows_large(source: str) -> None:
    with pytest.raises(PackTemplateError):
        render_template(source, VARIABLES)


UNREADABLE = {
    "long-number": "{{ " + "1" * 5000 + " }}",
    "deep-brackets": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "deep-subscripts": "{{ share_url" + "[0]" * 5000 + " }}",
}


@pytest.mark.parametrize("source", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_templates_too_odd_to_read_are_refused_as_template_errors(source: str) -> None:
    with pytest.raises(PackTemplateError):
        check(source)


def test_loop_steps_are_counted_whatever_is_printed() -> None:
    # 40,000 turns fit; 101,000 do not, though neither prints anything.
    fits = "{% for a in 'x' * 40 %}{% for b in 'x' * 999 %}{% endfor %}{% endfor %}ok"
    assert render_template(fits, VARIABLES) == "ok"
    with pytest.raises(PackTemplateError, match=BUDGET):
        render_template(fits.replace("* 40 ", "* 101 "), VARIABLES)
