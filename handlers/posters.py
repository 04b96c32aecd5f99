"""Share posters: 海报 / poster (menu POSTER), 海报 <key>, 海报 列表.

The distributor's QR code is a temporary parametric code (scene = their code, 30 days), stored and
re-made a week before it expires, so permanent codes (100,000 per account) are never spent. The
finished poster is uploaded as temporary media and its media_id reused while valid. Everything
after choosing the poster runs after the update commits, as Later work with its own short
sessions: the texts' templates (in a thread, on their budget: CONTRACT §7), then a repeat is
answered from the database; else the QR code, the drawing and the upload.

The console's 海报预览 (/admin/posters) renders any live poster for a distributor the admin picks,
with the same texts and drawing, but with a QR code of the distributor's share link made here:
no WeChat call, no upload, nothing stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kit.chat import Ctx, Incoming, Later, a_number, active_only, offer, offered, picked
from kit.console import HEADERS, page
from kit.feature import Feature
from kit.menu import MenuKey
from kit.app_keys import CLOCK, PACKS, READER, WRITER
from kit.live_settings import live_config
from wechat.wechat_keys import WECHAT
from wechat.client import WeChatAPI, WeChatError
from content.posters import FileRef, PosterJob, PosterRenderer, TextBox, cache_key
from content.store import PackContent, open_to, pack_file
from content.templating import (
    PackTemplateError,
    render_template,
    share_url,
    template_variables,
)
from domain.clock import Clock
from domain.messages import Image, Reply, Text
from storage.db import dialect_insert
from storage.reader import Reader
from storage.models import Distributor
from storage.models_content import DistributorQrCode, PosterMedia
from storage.writer import Writer

log = logging.getLogger(__name__)


class PosterPick(StrEnum):
    PICKING = "posters.pick"


feature = Feature("posters", scope="ops", states=PosterPick)  # scope: the console's poster preview

QR_LIFETIME = timedelta(days=30)  # the longest a temporary QR code may live
QR_MIN_LEFT = timedelta(days=7)  # a poster handed out keeps working for at least a week
MEDIA_LIFETIME = timedelta(days=3)  # temporary media
MEDIA_MARGIN = timedelta(hours=2)  # a late (outbox) reply must still find its media
LIST_WORDS = frozenset({"列表", "全部", "list", "all"})
NO_POSTERS = "暂时还没有可用的推广海报，请稍后再试。"
FAILED = "海报生成失败了，请稍后再回复“海报”试试。"


@dataclass
class Posters:
    """What making posters needs after the update's transaction: the renderer with its caches
    (process-local; any process can rebuild them), WeChat, the writer, and the work in flight
    (a double tap shares one piece of work)."""

    renderer: PosterRenderer
    wechat: WeChatAPI
    writer: Writer
    reader: Reader  # pack files, stored media
    clock: Clock
    pending: dict[tuple[int, str, str], asyncio.Future[Reply]] = field(default_factory=dict)


POSTERS = web.AppKey("posters", Posters)


@feature.resource(POSTERS)
async def posters(app: web.Application) -> AsyncIterator[Posters]:
    yield Posters(PosterRenderer(), app[WECHAT], app[WRITER], app[READER], app[CLOCK])


def _list_text(posters: list[tuple[PackContent, dict[str, Any]]]) -> str:
    lines = ["可用的海报："]
    lines += [f"{i}. {p['title']}（回复“海报 {p['key']}”）" for i, (_, p) in enumerate(posters, 1)]
    return "\n".join(lines)


def _offer_list(ctx: Ctx, posters: list[tuple[PackContent, dict[str, Any]]]) -> Text:
    """The numbered list, each poster's number kept for the next message (kit.chat.offer)."""
    offer(ctx, PosterPick.PICKING, ([pack.id, p["key"]] for pack, p in posters))
    return Text(_list_text(posters) + "\n回复序号领取那张海报，回复“海报”领取默认海报。")


def _choose(posters: list[tuple[PackContent, dict[str, Any]]], arg: str) -> tuple[PackContent, dict[str, Any]] | None:
    low = arg.lower()
    if arg.isdigit() and 1 <= int(arg) <= len(posters):
        return posters[int(arg) - 1]
    return (next((x for x in posters if x[1]["key"].lower() == low), None)
            or next((x for x in posters if low in x[1]["title"].lower()), None))


@dataclass(frozen=True)
class PosterRequest:
    distributor_id: int
    name: str
    code: str
    public_url: str
    pack: PackContent
    poster: dict[str, Any]
    qr_url: str | None  # None: make (or re-make) the QR code first

    @property
    def background(self) -> FileRef:
        return (self.pack.id, self.pack.digest, self.poster["background"])


def _texts(public_url: str, pack: PackContent, poster: dict[str, Any], name: str, code: str) -> tuple[TextBox, ...]:
    """The poster's text boxes for a distributor (their templates rendered: call it in a thread)."""
    variables = template_variables(public_url, name, code, pack.product(poster.get("sku")))
    font = poster.get("font")
    return tuple(TextBox(render_template(t["template"], variables), t["x"], t["y"], t["size"], t["color"], t["max_width"],
                         t["align"], t["weight"],
                         (pack.id, pack.digest, t.get("font") or font) if (t.get("font") or font) else None)
                 for t in poster["texts"])


def _key(req: PosterRequest, qr_url: str, texts: tuple[TextBox, ...]) -> str:
    return cache_key(req.pack.digest, req.poster["key"], req.name, req.code, qr_url, [t.text for t in texts])


@feature.command("海报", "poster", menu=MenuKey.POSTER)
@active_only
def on_poster(msg: Incoming, ctx: Ctx, me: Distributor) -> Text | Later:
    posters = ctx.app[PACKS].for_rank(ctx.session, "posters", me.rank)
    if not posters:
        return Text(NO_POSTERS)
    arg = ctx.args.strip()
    if arg.lower() in LIST_WORDS:
        return _offer_list(ctx, posters)
    if arg:
        chosen = _choose(posters, arg)
        if chosen is None:
            return Text(f"没有找到海报“{arg[:20]}”。\n" + _list_text(posters))
    else:
        chosen = next((x for x in posters if x[1]["key"] == "default"), posters[0])
    return _poster_for(ctx, me, *chosen)


@feature.state(PosterPick.PICKING, keeps=a_number)
@active_only
def on_pick(msg: Incoming, ctx: Ctx, me: Distributor) -> Text | Later:
    """A number after 海报 列表: that poster (if it is still live and open to their rank)."""
    choice = picked(msg, ctx)
    if choice is None:
        return Text(f"请回复 1–{offered(ctx)} 的序号领取海报，或回复“取消”。")
    posters = ctx.app[PACKS].for_rank(ctx.session, "posters", me.rank)
    chosen = next((x for x in posters if [x[0].id, x[1]["key"]] == choice), None)
    if chosen is None:
        return Text("这张海报已下线，请重新回复“海报 列表”。")
    return _poster_for(ctx, me, *chosen)


def _poster_for(ctx: Ctx, me: Distributor, pack: PackContent, poster: dict[str, Any]) -> Later:
    qr = ctx.session.get(DistributorQrCode, me.id)
    qr_url = qr.url if qr is not None and qr.expires_at - ctx.now >= QR_MIN_LEFT else None
    req = PosterRequest(me.id, me.name, me.code, ctx.config.server.public_url, pack, poster, qr_url)
    service = ctx.app[POSTERS]
    return Later(lambda: make_poster(req, service))


async def make_poster(req: PosterRequest, service: Posters) -> Reply:
    """Texts, QR code (when missing or near expiry), render, upload; the Image reply."""
    key = (req.distributor_id, req.pack.digest, req.poster["key"])
    pending = service.pending.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    service.pending[key] = future
    try:
        reply = await _make_poster(req, service)
    except WeChatError as e:
        log.warning("poster failed: %s", e, extra={"code": req.code})
        reply = Text(FAILED)
    except BaseException as e:
        future.set_exception(e)
        future.exception()
        raise
    finally:
        if service.pending.get(key) is future:
            del service.pending[key]
    future.set_result(reply)
    return reply


async def _make_poster(req: PosterRequest, service: Posters) -> Reply:
    try:
        texts = await asyncio.to_thread(_texts, req.public_url, req.pack, req.poster, req.name, req.code)
    except PackTemplateError:
        log.exception("poster template failed", extra={"pack": req.pack.id, "poster": req.poster["key"]})
        return Text(FAILED)
    now = service.clock.now()
    qr_url = req.qr_url
    if qr_url is None:
        answer = await service.wechat.create_qrcode(req.code, int(QR_LIFETIME.total_seconds()))
        qr_url = answer["url"]
        lifetime = timedelta(seconds=int(answer.get("expire_seconds") or QR_LIFETIME.total_seconds()))
        await service.writer.run(lambda session: _upsert(
            session, DistributorQrCode, ["distributor_id"], distributor_id=req.distributor_id,
            ticket=answer["ticket"], url=qr_url, expires_at=now + lifetime, created_at=now))
    key = _key(req, qr_url, texts)
    media = await service.reader.run(lambda session: session.get(PosterMedia, key))
    if media is not None and media.expires_at - MEDIA_MARGIN > now:
        return Image(media.media_id)  # a repeat: no drawing, no upload
    q = req.poster["qr"]
    job_ = PosterJob(req.background, qr_url, q["x"], q["y"], q["size"], texts)
    jpeg = await service.renderer.render(key, job_, _loader(service))
    media_id = await service.wechat.upload_image(jpeg, f"poster-{req.code}.jpg")
    await service.writer.run(lambda session: _upsert(session, PosterMedia, ["key"], key=key, media_id=media_id,
                                                     expires_at=now + MEDIA_LIFETIME, created_at=now))
    return Image(media_id)


def _loader(service: Posters) -> Callable[[FileRef], Awaitable[bytes]]:
    async def load(ref: FileRef) -> bytes:
        data = await service.reader.run(lambda session: pack_file(session, ref[0], ref[2]))
        if data is None:
            raise LookupError(f"pack {ref[0]} has no file {ref[1]!r}")
        return data
    return load


def _upsert(session: Session, model: Any, keys: list[str], **values: Any) -> None:
    stmt = dialect_insert(session, model).values(**values)
    session.execute(stmt.on_conflict_do_update(
        index_elements=keys, set_={k: getattr(stmt.excluded, k) for k in values if k not in keys}))


@feature.job("prune-poster-media", "interval", hours=6)
async def prune_poster_media(app: web.Application) -> None:
    """Forget uploaded posters whose media has expired (WeChat deletes them after 3 days)."""
    cutoff = app[CLOCK].now()
    await app[WRITER].run(lambda session: session.execute(delete(PosterMedia).where(PosterMedia.expires_at < cutoff)))


# ---- the console's 海报预览 ------------------------------------------------------------------------
@dataclass(frozen=True)
class Preview:
    """What the preview page and picture need: the live posters (with their packs), the chosen
    one, the distributor (name, code, rank) and what is wrong with the choice, if anything."""

    posters: list[tuple[PackContent, dict[str, Any]]]
    chosen: tuple[PackContent, dict[str, Any]] | None
    who: tuple[str, str, str] | None
    error: str = ""


async def _preview(request: web.Request, pack_id: str, key: str, code: str) -> Preview:
    library = request.config_dict[PACKS]
    code = code.strip().upper()

    def read(session: Session) -> Preview:
        posters = [(pack, p) for pack in library.live(session) for p in pack.posters]
        chosen = next((x for x in posters if str(x[0].id) == pack_id and x[1]["key"] == key), None)
        row = session.execute(select(Distributor.name, Distributor.code, Distributor.rank)
                              .where(Distributor.code == code)).first() if code else None
        who = tuple(row) if row is not None else None
        error = ("" if not (pack_id or key or code) else
                 "没有这张海报（或它所在的内容包已不再生效）。" if chosen is None else
                 "请填写分销员的推广码。" if not code else
                 f"没有推广码为 {code} 的分销员。" if who is None else "")
        return Preview(posters, chosen, who, error)  # type: ignore[arg-type]
    return await request.config_dict[READER].run(read)


def _preview_job(public_url: str, pack: PackContent, poster: dict[str, Any], name: str, code: str) -> PosterJob:
    """The real poster's job, with a QR code of the share link in place of WeChat's (its texts
    rendered: call it in a thread)."""
    q = poster["qr"]
    return PosterJob((pack.id, pack.digest, poster["background"]), share_url(public_url, code,
                     pack.product(poster.get("sku"))), q["x"], q["y"], q["size"],
                     _texts(public_url, pack, poster, name, code))


@feature.console.get("/posters")
async def preview_page(request: web.Request) -> web.Response:
    """The form (海报, 推广码, 预览) and, once both are known, the picture for that distributor."""
    config = live_config(request.config_dict)
    pack_id, _, key = request.query.get("poster", "").partition(":")
    p = await _preview(request, pack_id, key, request.query.get("code", ""))
    error, status, src, note = p.error, 404 if p.error else 200, "", ""
    if not error and p.chosen is not None and p.who is not None:
        pack, poster = p.chosen
        try:
            await asyncio.to_thread(_texts, config.server.public_url, pack, poster, p.who[0], p.who[1])
        except PackTemplateError as e:
            error, status = f"海报的文字模板出错：{e}", 422
        else:
            src = "/admin/posters/preview.png?" + urlencode({"pack": pack.id, "poster": key, "code": p.who[1]})
            if not open_to(poster, p.who[2]):
                names = {r.key: r.name for r in config.ranks}
                note = ("这位分销员的等级拿不到这张海报（只给 "
                        + "、".join(names.get(r, r) for r in poster.get("ranks") or []) + "）。")
    return page(request, "posters.html", title="海报预览", current="/content", posters=p.posters,
                chosen=f"{pack_id}:{key}", code=request.query.get("code", "").strip().upper(), who=p.who,
                error=error, src=src, note=note, status=status)


@feature.console.get("/posters/preview.png")
async def preview_picture(request: web.Request) -> web.Response:
    q = request.query
    p = await _preview(request, q.get("pack", ""), q.get("poster", ""), q.get("code", ""))
    if p.error or p.chosen is None or p.who is None:
        raise web.HTTPNotFound(text=p.error or "没有这张海报。", headers=HEADERS)
    try:
        job = await asyncio.to_thread(_preview_job, live_config(request.config_dict).server.public_url, *p.chosen,
                                      p.who[0], p.who[1])
    except PackTemplateError as e:
        raise web.HTTPUnprocessableEntity(text=f"海报的文字模板出错：{e}", headers=HEADERS) from None
    service = request.config_dict[POSTERS]
    png = await service.renderer.preview(job, _loader(service))
    return web.Response(body=png, content_type="image/png", headers=HEADERS)
