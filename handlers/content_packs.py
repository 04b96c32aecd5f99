"""Content packs for admins: /api/content-packs (upload, list, one, activate), the `content` job
that opens and closes festival windows, the products' pictures the share pages show (/c/{pack_id}/{path}),
and the demo pack that sandbox mode starts with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import aiohttp
from aiohttp import web
from aiohttp.http import HttpProcessingError
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from kit.api import ApiModel, IdParam, ok
from kit.console import HEADERS, done, page
from kit.feature import Feature
from kit.app_keys import CLOCK, PACKS, READER, WRITER
from kit.live_settings import live_config
from content.console_pages import TEMPLATES, when
from content.packs import MAX_UPLOAD_BYTES, PackInvalid
from content.store import (
    PackConflict,
    activate,
    import_pack,
    live_pack_ids,
    pack_json,
    switch_windows,
    versions_by_name,
)
from domain.clock import Clock
from domain.config import Config
from domain.formats import china_time
from domain.refusals import Refusal
from storage.models_content import ContentPack, LivePack
from storage.writer import Writer

log = logging.getLogger(__name__)
feature = Feature("content packs", scope="ops")  # no chat commands: packs are an admin matter
api = feature.api
CHUNK = 256 * 1024


class Pack(BaseModel):
    id: int
    name: str
    version: str
    live: bool
    products: int
    scripts: int
    posters: int
    trainings: int
    sha256: str
    size_bytes: int
    uploaded_at: datetime
    live_from: datetime | None = Field(description="a festival version is live only from live_from until live_until")
    live_until: datetime | None
    window_state: Literal["waiting", "live", "ended"] | None = Field(
        description="null without a window; waiting: before live_from; live: switched in; ended: after live_until")


class Packs(BaseModel):
    packs: list[Pack]
    total: int


class PackItems(BaseModel):
    products: list[str]
    scripts: list[str]
    posters: list[str]
    trainings: list[str]


class PackDetail(Pack):
    items: PackItems


class PackUpload(ApiModel):
    """Documents the multipart body; upload_pack streams it (up to 50 MiB) instead of parsing it."""

    pack: bytes = Field(description="the pack, a zip")


def pack_rules(config: Config) -> tuple[list[str], int]:
    """What a pack is checked against beside its own files: the rank keys, the commission levels."""
    return [r.key for r in config.ranks], config.distribution.max_levels


def invalid(problems: list[Any]) -> Refusal:
    return Refusal("invalid_pack", f"The content pack is invalid: {len(problems)} problem(s), listed in details.",
                    details=[p.as_json() for p in problems])


async def _receive_zip(request: web.Request, dest: Path) -> None:
    """Stream the multipart field `pack` to `dest`, refusing more than 50 MiB as it arrives."""
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES + 64 * 1024:
        raise Refusal("too_large", "Content packs may be at most 50 MiB.")
    if not request.content_type.startswith("multipart/"):
        raise Refusal("not_multipart", "Upload the zip as multipart/form-data in the field 'pack'.")
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader) or part.name != "pack":
                continue
            size = 0
            with dest.open("wb") as f:
                while chunk := await part.read_chunk(CHUNK):
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise Refusal("too_large", "Content packs may be at most 50 MiB.")
                    f.write(chunk)
            if size == 0:
                raise Refusal("empty_pack", "The field 'pack' is empty.")
            return
    except (ValueError, AssertionError, aiohttp.ClientPayloadError, HttpProcessingError) as e:  # e.g. bad part headers
        raise Refusal("malformed_multipart", f"The multipart body cannot be read: {e}") from None
    raise Refusal("no_pack", "The multipart body has no field named 'pack'.")


@api.post("/content-packs", summary="Upload a content pack (multipart field 'pack': a zip, at most 50 MiB)",
          body=PackUpload, content_type="multipart/form-data", response=Pack, status=201,
          errors=(400, 409, 413, 422))
async def upload_pack(request: web.Request) -> web.Response:
    fd, name = tempfile.mkstemp(prefix="distbot-pack-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        await _receive_zip(request, path)
        try:
            row, live = await _import(request, path)
        except PackInvalid as e:  # its own report: every problem in details
            raise invalid(e.problems) from None
    finally:
        await asyncio.to_thread(path.unlink, True)
    return ok(pack_json(row, live), status=201)


async def _import(request: web.Request, path: Path) -> tuple[ContentPack, bool]:
    """Validate and store an uploaded zip (the API's and the console's upload): PackInvalid,
    PackConflict, or (the row, whether it went live)."""
    row, live = await import_pack(request.config_dict[WRITER], path, request.config_dict[CLOCK].now(),
                                   *pack_rules(live_config(request.config_dict)))
    log.info("content pack uploaded", extra={"pack": row.name, "version": row.version, "id": row.id})
    return row, live


@api.get("/content-packs", summary="Every stored pack version, newest first; `live` marks the live ones",
         response=Packs)
async def list_packs(request: web.Request) -> web.Response:
    live, rows = await request.config_dict[READER].run(lambda session: (
        live_pack_ids(session), session.scalars(select(ContentPack).order_by(ContentPack.id.desc())).all()))
    return ok({"packs": [pack_json(r, r.id in live) for r in rows], "total": len(rows)})


class PackId(IdParam):
    noun: ClassVar[str] = "content pack"




@api.get("/content-packs/{id}", summary="One pack version with the keys of its products, scripts, posters "
                                        "and trainings", params=PackId, response=PackDetail, errors=(404,))
async def get_pack(request: web.Request, params: PackId) -> web.Response:

    def read(session: Session) -> tuple[ContentPack | None, bool]:
        row = session.get(ContentPack, params.id)
        return row, row is not None and row.id in live_pack_ids(session)
    row, live = await request.config_dict[READER].run(read)
    if row is None:
        raise Refusal("not_found", f"No content pack has the id {params.id}.")
    c = row.content
    return ok({**pack_json(row, live), "items": {
        "products": [p["sku"] for p in c["products"]], "scripts": [s["key"] for s in c["scripts"]],
        "posters": [p["key"] for p in c["posters"]], "trainings": [t["key"] for t in c["trainings"]]}})


@api.post("/content-packs/{id}/activate", summary="Make this version the live one of its pack name "
                                                  "(e.g. roll back to an older version)",
          params=PackId, response=Pack, errors=(404,))
async def activate_pack(request: web.Request, params: PackId) -> web.Response:
    row = await _activate(request, params.id)
    if row is None:
        raise Refusal("not_found", f"No content pack has the id {params.id!r}.")
    return ok(pack_json(row, True))


async def _activate(request: web.Request, pack_id: int) -> ContentPack | None:
    """Make a stored version live (the API's and the console's 设为生效); None when there is none."""
    now = request.config_dict[CLOCK].now()
    row = await request.config_dict[WRITER].run(lambda session: activate(session, pack_id, now))
    if row is not None:
        log.info("content pack activated", extra={"pack": row.name, "version": row.version, "id": row.id})
    return row


# ---- the console's 内容 page ---------------------------------------------------------------------
# The upload is a plain multipart form; upload.js (served below: the CSP allows only our own
# scripts) sends the same form with XMLHttpRequest to show its progress, then shows the answer.
UPLOAD_JS = TEMPLATES / "upload.js"


async def _content_page(request: web.Request, *, problems: list[Any] = (), filename: str = "",
                        status: int = 200) -> web.Response:
    versions = await request.config_dict[READER].run(versions_by_name)
    return page(request, "content.html", title="内容", current="/content", status=status, versions=versions,
                problems=problems, filename=filename, max_mib=MAX_UPLOAD_BYTES // 1048576)


@feature.console.get("/content")
async def content_page(request: web.Request) -> web.Response:
    return await _content_page(request)


@feature.console.get("/content/upload.js")
async def upload_script(request: web.Request) -> web.Response:
    return web.Response(text=await asyncio.to_thread(UPLOAD_JS.read_text, "utf-8"),
                        content_type="text/javascript", headers=HEADERS)


def _save(upload: web.FileField, dest: Path) -> None:
    with dest.open("wb") as f:
        shutil.copyfileobj(upload.file, f, CHUNK)


@feature.console.post("/content")
async def upload_form(request: web.Request) -> web.Response:
    upload = (await request.post()).get("pack")  # the guard has read the form (files spooled to disk)
    if not isinstance(upload, web.FileField) or not upload.filename:
        return done(request, "/content", "请选择要上传的内容包（zip 文件）。", error=True)
    fd, name = tempfile.mkstemp(prefix="distbot-pack-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        await asyncio.to_thread(_save, upload, path)
        row, live = await _import(request, path)
    except PackInvalid as e:
        return await _content_page(request, problems=e.problems, filename=upload.filename, status=422)
    finally:
        await asyncio.to_thread(path.unlink, True)
    c = pack_json(row, live)
    state = "已生效" if live else ("将在 " + when(row.live_from) + " 生效" if row.window_state == "waiting"
                                  else "未生效（当前生效的版本更高，可在下面设为生效）")
    return done(request, "/content", f"已上传 {row.name} 版本 {row.version}：{c['products']} 个商品、"
                                     f"{c['scripts']} 条话术、{c['posters']} 张海报、{c['trainings']} 节培训，{state}。")


@feature.console.post(r"/content/{id:\d{1,18}}/activate")
async def activate_form(request: web.Request) -> web.Response:
    row = await _activate(request, int(request.match_info["id"]))
    if row is None:
        return done(request, "/content", "没有这个版本的内容包。", error=True)
    return done(request, "/content", f"{row.name} 版本 {row.version} 已设为生效。")


# ---- festival windows -----------------------------------------------------------------------------
@feature.job("content", "interval", minutes=1)
async def content_job(app: web.Application) -> int:
    """Switch festival versions in as live_from arrives (announcing them) and the replaced
    versions back after live_until; the versions changed."""
    changed = await app[WRITER].run(lambda session: switch_windows(session, app[CLOCK].now()), slow=True)
    for row in changed:
        log.info("content pack window", extra={"pack": row.name, "version": row.version, "id": row.id,
                                                "window_state": row.window_state})
    return len(changed)


# ---- pictures for the public pages ---------------------------------------------------------------
@feature.pages.get(r"/c/{pack_id:\d{1,18}}/{path:.+}")
async def product_picture(request: web.Request) -> web.Response:
    """Products' pictures only: a training's are served under its signed link (handlers/trainings.py)."""
    library = request.config_dict[PACKS]
    pack_id, path = int(request.match_info["pack_id"]), request.match_info["path"]
    found = await request.config_dict[READER].run(lambda s: library.product_picture(s, pack_id, path))
    if found is None:
        raise web.HTTPNotFound()
    data, kind = found
    # A stored pack never changes, so its pictures can be cached for good.
    return web.Response(body=data, content_type=kind, headers={"Cache-Control": "public, max-age=31536000, immutable"})


# ---- the demo pack -------------------------------------------------------------------------------
async def load_demo_pack(config: Config, writer: Writer, pack: Path | None = None) -> str:
    """Import the demo pack, or `pack` (the trade's pack that `distbot init` wrote beside the config),
    when no pack is live (sandbox start); a sentence saying what happened."""
    from content.demo import demo_zip

    what = f"the content pack {pack}" if pack is not None else "the demo content pack"
    if await writer.run(lambda session: session.scalar(select(LivePack.name).limit(1))) is not None:
        return f"a content pack is already live; {what} was not loaded"
    data = await asyncio.to_thread(pack.read_bytes if pack is not None else demo_zip)
    fd, name = tempfile.mkstemp(prefix="distbot-demo-", suffix=".zip")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        row, _ = await import_pack(writer, name, Clock().now(), *pack_rules(config))  # a command, outside the app
    except PackConflict:
        return f"{what} is stored but not live (an admin chose another version); left as is"
    except PackInvalid as e:
        return f"{what} does not fit this configuration: " + "; ".join(map(str, e.problems[:3]))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    return f"loaded {what} (id {row.id}): try 海报, 话术 and 培训 in /sandbox/"


# ---- the command line ----------------------------------------------------------------------------
async def _with_database(config: Config, work: Any) -> str:
    from storage.db import create_engine
    from storage.migrate import upgrade

    engine = create_engine(config.database.url)
    writer = Writer(engine)
    try:
        await upgrade(engine)
        return await work(writer)
    finally:
        await writer.close()
        await engine.dispose()


async def import_command(config: Config, path: Path) -> str:
    """`distbot content import PACK.zip`: PackInvalid or PackConflict, else a sentence for stdout."""
    async def work(writer: Writer) -> str:
        row, live = await import_pack(writer, path, Clock().now(), *pack_rules(config))  # a command, outside the app
        c = pack_json(row, live)
        return (f"imported content pack {row.name} version {row.version} (id {row.id}): {c['products']} products, "
                f"{c['scripts']} scripts, {c['posters']} posters, {c['trainings']} trainings; " + _status(row, live))
    return await _with_database(config, work)


def _status(row: ContentPack, live: bool) -> str:
    if row.window_state == "waiting" and row.live_from is not None:
        return f"it goes live at {china_time(row.live_from)} (the content job of `distbot serve` switches it)"
    if row.window_state == "ended":
        return "its window has already ended, so it is stored but not live"
    until = f" until {china_time(row.live_until)}" if live and row.live_until is not None else ""
    return f"it is live now{until}" if live else "a newer version stays live"


async def demo_command(config: Config, pack: Path | None = None) -> str:
    """At `distbot serve` in sandbox mode: the demo pack (or `pack`), unless some pack is live. Never
    fails the start."""
    try:
        return await _with_database(config, lambda writer: load_demo_pack(config, writer, pack))
    except Exception as e:  # the bot works without the demo; say why it is missing
        log.exception("demo pack not loaded")
        return f"the demo content pack could not be loaded: {e}"
