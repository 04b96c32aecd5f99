"""Marketing scripts: 话术 / scripts (menu SCRIPTS), 话术 <SKU or keyword>; several matches give a
numbered list to pick from. Also the share page /s/{code} that a script's share_url opens when
the product has no shop link of its own."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from kit.chat import Ctx, Incoming, Later, active_only, offer, offered, picked
from kit.feature import Feature
from kit.menu import MenuKey
from kit.app_keys import PACKS, READER
from kit.live_settings import live_config
from content.pages import cards, page
from content.store import PackContent, live_pack_ids
from content.templating import PackTemplateError, render_template, template_variables
from domain.formats import mask_name, yuan
from domain.messages import Text
from storage.models import Distributor
from storage.queries import distributor_by_code

log = logging.getLogger(__name__)


class Scripts(StrEnum):
    PICKING = "scripts.pick"


feature = Feature("scripts", states=Scripts)
MAX_LISTED = 15  # a text reply stays well inside WeChat's 2,048 bytes
NO_SCRIPTS = "暂时还没有推广话术，请稍后再试。"
BROKEN = "这条话术的模板有误，已记录，请先试试其他话术。"

Found = tuple[PackContent, dict[str, Any]]


def _matches(scripts: list[Found], arg: str) -> list[Found]:
    """Scripts of the product with this SKU; else those whose title, key or product mention the word."""
    low = arg.lower()
    by_sku = [(pack, s) for pack, s in scripts if s["sku"] and s["sku"].lower() == low]
    if by_sku:
        return by_sku
    found = []
    for pack, s in scripts:
        product = pack.product(s["sku"]) or {}
        haystack = " ".join([s["title"], s["key"], product.get("name", ""), *product.get("selling_points", [])])
        if low in haystack.lower():
            found.append((pack, s))
    return found


def _fill(ctx: Ctx, me: Distributor, pack: PackContent, script: dict[str, Any]) -> Later:
    """The script filled in for the distributor: rendered after the update's unit of work
    commits, in a thread, so nobody's chat waits for someone's template (CONTRACT §7)."""
    variables = template_variables(ctx.config.server.public_url, me.name, me.code, pack.product(script["sku"]))
    title, source, where = script["title"], script["template"], {"pack": pack.id, "script": script["key"]}
    return Later(lambda: _rendered(title, source, variables, where))


async def _rendered(title: str, source: str, variables: dict[str, Any], where: dict[str, Any]) -> Text:
    try:
        body = await asyncio.to_thread(render_template, source, variables)
    except PackTemplateError:
        log.exception("script template failed", extra=where)
        return Text(BROKEN)
    return Text(f"【{title}】\n{body}")


def _label(pack: PackContent, script: dict[str, Any]) -> str:
    product = pack.product(script["sku"])
    return f"{script['title']}" + (f"（{product['sku']}）" if product and product["sku"] not in script["title"] else "")


@feature.command("话术", "scripts", menu=MenuKey.SCRIPTS)
@active_only
def on_scripts(msg: Incoming, ctx: Ctx, me: Distributor) -> Text | Later:
    scripts = ctx.app[PACKS].for_rank(ctx.session, "scripts", me.rank)
    if not scripts:
        return Text(NO_SCRIPTS)
    arg = ctx.args.strip()
    found = _matches(scripts, arg) if arg else scripts
    if not found:
        skus = sorted({p["sku"] for pack, _ in scripts for p in pack.products.values()})
        return Text(f"没有找到和“{arg[:20]}”相关的话术。\n回复“话术”查看全部，或“话术 商品编号”，"
                    f"例如：话术 {skus[0] if skus else 'SKU-1'}")
    if len(found) == 1:
        return _fill(ctx, me, *found[0])
    shown = found[:MAX_LISTED]
    offer(ctx, Scripts.PICKING, ([pack.id, s["key"]] for pack, s in shown))
    lines = [f"找到 {len(found)} 条话术，回复序号查看（已为您填好名字和专属链接）："]
    lines += [f"{i}. {_label(pack, s)}" for i, (pack, s) in enumerate(shown, 1)]
    if len(found) > MAX_LISTED:
        lines.append(f"……只列出前 {MAX_LISTED} 条，回复“话术 关键词”可缩小范围。")
    return Text("\n".join(lines))


@feature.state(Scripts.PICKING)
@active_only
def on_pick(msg: Incoming, ctx: Ctx, me: Distributor) -> Text | Later:
    choice = picked(msg, ctx)
    if choice is None:
        return Text(f"请回复 1–{offered(ctx)} 的序号选择话术，或回复“取消”。")
    pack_id, key = choice
    # The list may predate a switch (a festival window closing): only a live version's script is served.
    pack = ctx.app[PACKS].pack(ctx.session, pack_id) if pack_id in live_pack_ids(ctx.session) else None
    script = next((s for s in pack.scripts if s["key"] == key), None) if pack else None
    if pack is None or script is None:
        return Text("这条话术已下线，请重新回复“话术”。")
    return _fill(ctx, me, pack, script)


# ---- the share page ---------------------------------------------------------------------------
@feature.pages.get(r"/s/{code:[A-Za-z0-9]{1,16}}")
async def share_page(request: web.Request) -> web.Response:
    """Where share_url leads when a product has no shop link: the live products, with the code."""
    code = request.match_info["code"].upper()
    library = request.config_dict[PACKS]

    def read(session: Session) -> tuple[Distributor | None, list[Any]]:
        distributor = distributor_by_code(session, code, active=True)
        return distributor, library.live(session) if distributor is not None else []
    distributor, packs = await request.config_dict[READER].run(read)
    if distributor is None:
        return web.Response(text=page("推荐链接已失效", "<p>这个推荐链接无效或已失效。</p>"), status=404,
                            content_type="text/html")
    wanted = request.query.get("sku", "").lower()
    products = [(pack, p) for pack in packs for p in pack.products.values()]
    products.sort(key=lambda x: x[1]["sku"].lower() != wanted)
    base = live_config(request.config_dict).server.public_url
    body = cards((p["name"], yuan(p["price_fen"]), "，".join(p["selling_points"]),
                  f"{base}/c/{pack.id}/{p['image']}" if p["image"] else None) for pack, p in products)
    body += f"<p>推荐码：<b>{code}</b>（下单时请填写，或关注公众号后回复“注册 {code}”加入）</p>"
    return web.Response(text=page(f"{mask_name(distributor.name)} 向您推荐", body), content_type="text/html")
