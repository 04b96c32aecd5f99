"""Training material: 培训 / training (menu TRAINING) lists the live trainings for the
distributor's rank with links to their pages, /t/{pack_id}/{key} (Markdown rendered to HTML)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.chat import Ctx, Incoming, active_only
from bot.feature import Feature
from bot.menu import MenuKey
from bot.typedefs import CONFIG, PACKS, SESSIONMAKER
from content.pages import markdown_html, page
from domain.messages import Article, News, Text
from storage.models import Distributor

feature = Feature("trainings")
MAX_LISTED = 10


def training_url(public_url: str, pack_id: int, key: str) -> str:
    return f"{public_url}/t/{pack_id}/{key}"


def _summary(t: dict[str, Any]) -> str:
    if t.get("summary"):
        return t["summary"]
    first = next((line.strip() for line in t["body"].splitlines()
                  if line.strip() and not line.lstrip().startswith(("#", "!", "|", "```", ">"))), "")
    return first[:60] + ("…" if len(first) > 60 else "")


@feature.command("培训", "training", menu=MenuKey.TRAINING)
@active_only
def on_training(msg: Incoming, ctx: Ctx, me: Distributor) -> Text | News:
    found = ctx.app[PACKS].for_rank(ctx.session, "trainings", me.rank)
    if not found:
        return Text("暂时还没有适合您等级的培训资料。新资料上线时会通知您，届时回复“培训”即可查看。")
    base = ctx.config.server.public_url
    if len(found) == 1:
        pack, t = found[0]
        return News((Article(t["title"], _summary(t), training_url(base, pack.id, t["key"])),))
    rank = ctx.config.rank(me.rank).name
    lines = [f"【{rank}】的培训资料，点链接阅读："]
    for i, (pack, t) in enumerate(found[:MAX_LISTED], 1):
        lines.append(f"{i}. {t['title']}\n{training_url(base, pack.id, t['key'])}")
    return Text("\n".join(lines))


@feature.pages.get(r"/t/{pack_id:\d{1,18}}/{key}")
async def training_page(request: web.Request) -> web.Response:
    library = request.config_dict[PACKS]
    async with request.config_dict[SESSIONMAKER]() as session:
        pack = await session.run_sync(library.pack, int(request.match_info["pack_id"]))
    t = pack.training(request.match_info["key"]) if pack is not None else None
    if pack is None or t is None:
        return web.Response(text=page("找不到这份资料", "<p>这份培训资料不存在或已下线。</p>"), status=404,
                            content_type="text/html")
    base = request.config_dict[CONFIG].server.public_url
    folder = t["file"].rsplit("/", 1)[0] if "/" in t["file"] else ""
    body, _ = markdown_html(t["body"], base=folder, resolve=lambda path: f"{base}/c/{pack.id}/{path}")
    return web.Response(text=page(t["title"], body, meta=f"{pack.name} · 第 {pack.version} 版"),
                        content_type="text/html", headers={"Cache-Control": "public, max-age=300"})
