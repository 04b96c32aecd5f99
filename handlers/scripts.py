"""Marketing scripts: 话术 / scripts (menu SCRIPTS), 话术 <SKU or keyword>; several matches give a
numbered list to pick from. Also the share page /s/{code} that a script's share_url opens (unless
the product has a shop page of its own and no buy_url): the product to buy and WeChat's share card."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy.orm import Session

from kit.chat import Ctx, Incoming, Later, active_only, offer, offered, picked
from kit.feature import Feature
from kit.headers import content_policy
from kit.menu import MenuKey
from kit.app_keys import CLOCK, PACKS, READER
from kit.live_settings import live_config
from wechat.client import WeChatError
from wechat.wechat_keys import WECHAT
from content.jssdk import JSSDK_ORIGIN, jssdk_source, wx_config
from content.product_fields import shop_link
from content.share_pages import (SHARE_APIS, SHARE_JS, SHARE_JS_PATH, gone_page, list_card, list_page, product_card,
                                 product_page)
from content.store import PackContent, live_pack_ids
from content.templating import PackTemplateError, render_template, share_page_url, template_variables
from domain.config import Config
from domain.formats import mask_name
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
@feature.pages.get(SHARE_JS_PATH)
async def share_script(request: web.Request) -> web.FileResponse:
    """The share page's static script (the CSP allows only our own)."""
    return web.FileResponse(SHARE_JS, headers={"Cache-Control": "no-cache"})


@feature.pages.get(r"/s/{code:[A-Za-z0-9]{1,16}}")
async def share_page(request: web.Request) -> web.Response:
    """Where share_url leads: the product of ?sku= to buy, then the other live products (all of
    them without a sku), with the distributor's code, and WeChat's share card."""
    code = request.match_info["code"].upper()
    library = request.config_dict[PACKS]

    def read(session: Session) -> tuple[Distributor | None, list[PackContent]]:
        distributor = distributor_by_code(session, code, active=True)
        return distributor, library.live(session) if distributor is not None else []
    distributor, packs = await request.config_dict[READER].run(read)
    if distributor is None:
        return web.Response(text=gone_page(), status=404, content_type="text/html")
    config = live_config(request.config_dict)
    base = config.server.public_url.rstrip("/")
    shown = [(p, f"{base}/c/{pack.id}/{quote(p['image'])}" if p.get("image") else None)
             for pack in packs for p in pack.products.values()]
    wanted = request.query.get("sku", "").lower()
    chosen = next((s for s in shown if s[0]["sku"].lower() == wanted), None) if wanted else None
    who, wx, jssdk = mask_name(distributor.name), await _signed_config(request, config), jssdk_source(config.sandbox)
    if chosen is None:
        text = list_page(shown, recommender=who, code=code, wx=wx, jssdk=jssdk,
                         card=list_card(shown, who, share_page_url(base, code)))
    else:
        text = product_page(chosen, recommender=who, code=code, buy_href=shop_link(chosen[0], code),
                            others=[s for s in shown if s is not chosen], wx=wx, jssdk=jssdk,
                            card=product_card(chosen, who, share_page_url(base, code, chosen[0]["sku"])))
    # Live: the JS-SDK comes from WeChat's origin; the sandbox's stand-in is ours.
    headers = {} if config.sandbox else {"Content-Security-Policy": content_policy(scripts=(JSSDK_ORIGIN,))}
    return web.Response(text=text, content_type="text/html", headers=headers)


async def _signed_config(request: web.Request, config: Config) -> dict[str, Any] | None:
    """wx.config for this page's URL as the browser has it (WeChat adds its own query parameters
    to a forwarded link); None when WeChat gives no ticket (the page shows without a share card)."""
    here = config.server.public_url.rstrip("/") + request.raw_path
    try:
        ticket = await request.config_dict[WECHAT].jsapi_ticket()
    except WeChatError as e:
        log.warning("jsapi_ticket for the share page: %s", e)
        return None
    return wx_config(config.wechat.app_id, ticket, int(request.config_dict[CLOCK].epoch()), here, SHARE_APIS)
