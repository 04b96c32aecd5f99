"""Training material: 培训 / training (menu TRAINING) lists the live trainings for the
distributor's rank with links made for the reader: /t/{pack_id}/{key}/{token}, where the token
names the distributor, the rank the link was made for and an expiry, signed (domain.signing, as
the claim links are). The page (the Markdown rendered and sanitised) and its pictures open only
from a genuine, unexpired link of an active distributor, for a training of a live pack that the
link's rank may read; anything else gets a short refusal page and none of the content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy.orm import Session

from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from kit.menu import MenuKey
from kit.app_keys import CLOCK, PACKS, READER
from kit.live_settings import live_config
from content.pages import markdown_html, page
from content.store import PackContent, PackLibrary, live_pack_ids, open_to, pack_picture
from domain.config import Config
from domain.messages import Article, News, Text
from domain.signing import link_key, sign, verify
from storage.models import Distributor, DistributorStatus

feature = Feature("trainings")
MAX_LISTED = 10
LINK_PURPOSE = "training"
LINK_LIFE = timedelta(days=30)  # long enough to read later; a fresh 培训 gives new links
INVALID = "这个培训链接无效或已过期。请回到公众号回复“培训”获取新的链接。"
CLOSED = "这份培训资料已更新或下线。请回到公众号回复“培训”查看最新资料。"
NOT_FOR_YOU = "这个链接现在不能查看这份培训资料。如有疑问请在公众号回复“客服”。"


# ---- the signed link -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reader:
    """Whom a genuine link was made for."""

    distributor_id: int
    rank: str


def _message(pack_id: int, key: str, distributor_id: int, rank: str, expires: int) -> str:
    return f"{pack_id}/{key}/{distributor_id}/{rank}/{expires}"


def link_token(config: Config, pack_id: int, key: str, distributor_id: int, rank: str, now: datetime) -> str:
    """"{distributor}.{rank's place}.{expiry}.{signature}": the rank by its place in the
    configuration (keys may hold any character), its key in the signed message."""
    rank = config.rank(rank).key
    place = next(i for i, r in enumerate(config.ranks) if r.key == rank)
    expires = int((now + LINK_LIFE).timestamp())
    signature = sign(link_key(config, LINK_PURPOSE), _message(pack_id, key, distributor_id, rank, expires))
    return f"{distributor_id}.{place}.{expires}.{signature}"


def read_link_token(config: Config, pack_id: int, key: str, token: str, now: datetime) -> Reader | None:
    """The reader of a genuine, unexpired link to this training, else None."""
    parts = token.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 18 for p in parts[:3]):
        return None
    distributor_id, place, expires = map(int, parts[:3])
    if place >= len(config.ranks) or expires < now.timestamp():
        return None
    rank = config.ranks[place].key
    if not verify(link_key(config, LINK_PURPOSE), _message(pack_id, key, distributor_id, rank, expires), parts[3]):
        return None
    return Reader(distributor_id, rank)


def training_url(config: Config, pack_id: int, key: str, distributor_id: int, rank: str, now: datetime) -> str:
    token = link_token(config, pack_id, key, distributor_id, rank, now)
    return f"{config.server.public_url}{_page_path(pack_id, key, token)}"


def _page_path(pack_id: int, key: str, token: str) -> str:
    return f"/t/{pack_id}/{quote(key, safe='')}/{token}"


# ---- the chat command ------------------------------------------------------------------------------
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

    def url(pack: PackContent, t: dict[str, Any]) -> str:
        return training_url(ctx.config, pack.id, t["key"], me.id, me.rank, ctx.now)

    if len(found) == 1:
        pack, t = found[0]
        return News((Article(t["title"], _summary(t), url(pack, t)),))
    rank = ctx.config.rank(me.rank).name
    lines = [f"【{rank}】的培训资料，点链接阅读（30 天内有效）："]
    for i, (pack, t) in enumerate(found[:MAX_LISTED], 1):
        lines.append(f"{i}. {t['title']}\n{url(pack, t)}")
    return Text("\n".join(lines))


# ---- the page and its pictures ---------------------------------------------------------------------
@dataclass(frozen=True)
class Opened:
    pack: PackContent
    training: dict[str, Any]
    prefix: str  # the page's path: its pictures are under it

    def body(self) -> tuple[str, list[str]]:
        """The page's HTML and the pack paths of the pictures it shows."""
        file = self.training["file"]
        folder = file.rsplit("/", 1)[0] if "/" in file else ""
        return markdown_html(self.training["body"], base=folder,
                             resolve=lambda path: f"{self.prefix}/{quote(path)}")


def _readable(session: Session, library: PackLibrary, pack_id: int, key: str,
              reader: Reader) -> tuple[PackContent, dict[str, Any]] | str:
    """The training a genuine link opens, or why it does not (the refusal's text)."""
    person = session.get(Distributor, reader.distributor_id)
    if person is None or person.status != DistributorStatus.ACTIVE:
        return NOT_FOR_YOU
    pack = library.pack(session, pack_id) if pack_id in live_pack_ids(session) else None
    t = pack.training(key) if pack is not None else None
    if pack is None or t is None:
        return CLOSED
    return (pack, t) if open_to(t, reader.rank) else NOT_FOR_YOU


def _refusal(text: str, status: int) -> web.Response:
    return web.Response(text=page("无法查看", f"<p>{text}</p>"), status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


async def _open(request: web.Request) -> Opened | web.Response:
    """The training the request's link opens, or the refusal page."""
    config = live_config(request.config_dict)
    pack_id, key, token = int(request.match_info["pack_id"]), request.match_info["key"], request.match_info["token"]
    reader = read_link_token(config, pack_id, key, token, request.config_dict[CLOCK].now())
    if reader is None:
        return _refusal(INVALID, 404)
    library = request.config_dict[PACKS]
    found = await request.config_dict[READER].run(lambda s: _readable(s, library, pack_id, key, reader))
    if isinstance(found, str):
        return _refusal(found, 403 if found == NOT_FOR_YOU else 404)
    return Opened(*found, prefix=_page_path(pack_id, key, token))


@feature.pages.get(r"/t/{pack_id:\d{1,18}}/{key}/{token}")
async def training_page(request: web.Request) -> web.Response:
    opened = await _open(request)
    if isinstance(opened, web.Response):
        return opened
    body, _ = opened.body()
    pack, t = opened.pack, opened.training
    return web.Response(text=page(t["title"], body, meta=f"{pack.name} · 第 {pack.version} 版"),
                        content_type="text/html", headers={"Cache-Control": "private, max-age=300"})


@feature.pages.get(r"/t/{pack_id:\d{1,18}}/{key}/{token}/{path:.+}")
async def training_picture(request: web.Request) -> web.Response:
    """A picture the training shows, under the same link: as closed as the page."""
    opened = await _open(request)
    if isinstance(opened, web.Response):
        return opened
    path = request.match_info["path"]
    if path not in opened.body()[1]:
        raise web.HTTPNotFound()
    found = await request.config_dict[READER].run(lambda s: pack_picture(s, opened.pack.id, path))
    if found is None:
        raise web.HTTPNotFound()
    data, kind = found
    return web.Response(body=data, content_type=kind, headers={"Cache-Control": "private, max-age=86400"})


@feature.pages.get(r"/t/{rest:.*}")
async def unsigned(request: web.Request) -> web.Response:
    """Any other path under /t/ (an old unsigned link, a guess): the same refusal, no content."""
    return _refusal(INVALID, 404)
