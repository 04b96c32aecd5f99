"""Content packs in the database: import a validated pack, switch the live version (also by a
festival window: switch_windows, the `content` job's unit), read the live content. A stored pack
never changes, so its parsed content is kept per process (PackLibrary, held by the app); only the
small "which id is live" lookup goes to the database on each use, so a switch shows at once in
every process. Synchronous on a Session: writes run as units on storage.writer, async readers use
run_sync."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cachetools import LRUCache
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from content.packs import ValidPack, validate_pack
from domain import campaigns
from domain.config_sections import LEGAL_MAX_LEVELS
from domain.formats import china_time
from domain.refusals import Refusal
from storage.models_content import ContentFile, ContentPack, LivePack
from storage.writer import Writer

CONTENT_CACHE_SIZE = 32
# The sandbox's starter pack steps aside as soon as an admin brings a pack of their own (it stays
# stored and can be re-activated), so its SKUs never mix with real ones.
DEMO_PACK_NAME = "demo"


class PackConflict(Refusal):
    """The same name and version is already stored (a refusal: pack_exists, 409)."""

    def __init__(self, name: str, version: str):
        super().__init__("pack_exists", f"Pack {name!r} version {version!r} is already stored; upload a new version.",
                         sentence=f"内容包 {name} 版本 {version} 已经存在，没有更改；请在 manifest.toml 里提高版本号后再上传。")
        self.name, self.version = name, version


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Versions compare piece by piece, numbers as numbers: 2 < 10, 1.9 < 1.10."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[A-Za-z]+", version))


@dataclass(frozen=True)
class PackContent:
    """One stored pack's products, scripts, posters and trainings (immutable)."""

    id: int
    digest: str  # sha256 of the uploaded zip
    name: str
    version: str
    products: dict[str, dict[str, Any]]  # by lower-case SKU
    scripts: tuple[dict[str, Any], ...]
    posters: tuple[dict[str, Any], ...]
    trainings: tuple[dict[str, Any], ...]

    @classmethod
    def from_row(cls, row: ContentPack) -> PackContent:
        c = row.content
        return cls(row.id, row.sha256, row.name, row.version, {p["sku"].lower(): p for p in c.get("products", [])},
                   tuple(c.get("scripts", [])), tuple(c.get("posters", [])), tuple(c.get("trainings", [])))

    def product(self, sku: str | None) -> dict[str, Any] | None:
        return self.products.get(sku.lower()) if sku else None

    def training(self, key: str) -> dict[str, Any] | None:
        return next((t for t in self.trainings if t["key"] == key), None)


def open_to(item: dict[str, Any], rank: str) -> bool:
    """Whether a rank gets a poster, script or training: its optional `ranks` lists who does."""
    ranks = item.get("ranks")
    return ranks is None or rank in ranks


# What a rank's own content is called where the distributor reads what the rank unlocks.
RIGHT_NAMES = {"trainings": "专属培训", "posters": "专属海报", "scripts": "专属话术"}
MAX_TITLES = 5


class PackLibrary:
    """Parsed packs by (id, zip digest): ids alone could collide between databases (tests use many)."""

    def __init__(self, size: int = CONTENT_CACHE_SIZE):
        self._parsed: LRUCache[tuple[int, str], PackContent] = LRUCache(maxsize=size)

    def _content(self, session: Session, pack_id: int, digest: str) -> PackContent | None:
        cached = self._parsed.get((pack_id, digest))
        if cached is not None:
            return cached
        row = session.get(ContentPack, pack_id)
        if row is None:
            return None
        content = self._parsed[(pack_id, row.sha256)] = PackContent.from_row(row)
        return content

    def pack(self, session: Session, pack_id: int) -> PackContent | None:
        """Any stored pack by id, live or not."""
        digest = session.scalar(select(ContentPack.sha256).where(ContentPack.id == pack_id))
        return self._content(session, pack_id, digest) if digest is not None else None

    def live(self, session: Session, activated_in: tuple[datetime, datetime] | None = None) -> list[PackContent]:
        """The live version of every pack name, the most recently activated first; with
        `activated_in` (start, end), only those that went live inside that window."""
        stmt = (select(LivePack.pack_id, ContentPack.sha256).join(ContentPack, ContentPack.id == LivePack.pack_id)
                .order_by(LivePack.activated_at.desc(), LivePack.name))
        if activated_in is not None:
            stmt = stmt.where(LivePack.activated_at >= activated_in[0], LivePack.activated_at < activated_in[1])
        rows = session.execute(stmt).all()
        packs = [self._content(session, pack_id, digest) for pack_id, digest in rows]
        return [p for p in packs if p is not None]

    def for_rank(self, session: Session, kind: str, rank: str) -> list[tuple[PackContent, dict[str, Any]]]:
        """The live posters, scripts or trainings (`kind`) that a rank gets, with their packs."""
        return [(pack, item) for pack in self.live(session) for item in getattr(pack, kind) if open_to(item, rank)]

    def product_picture(self, session: Session, pack_id: int, path: str) -> tuple[bytes, str] | None:
        """A product's picture (what the share pages show, public by design) and its content
        type; None for any other file of the pack, training pictures included."""
        pack = self.pack(session, pack_id)
        if pack is None or path not in {p.get("image") for p in pack.products.values()}:
            return None
        return pack_picture(session, pack_id, path)

    def unlocks(self, session: Session, rank: str) -> list[str]:
        """What the live content keeps for some ranks and gives this one, one line per kind
        ("专属培训：新品进阶课、……"): what a promotion unlocks besides the rates."""
        lines = []
        for kind, name in RIGHT_NAMES.items():
            titles = [item.get("title") or item["key"] for _, item in self.for_rank(session, kind, rank)
                      if item.get("ranks") is not None]
            if titles:
                more = f" 等 {len(titles)} 项" if len(titles) > MAX_TITLES else ""
                lines.append(f"{name}：{'、'.join(titles[:MAX_TITLES])}{more}")
        return lines


def live_pack_ids(session: Session) -> set[int]:
    return set(session.scalars(select(LivePack.pack_id)).all())


def store_pack(session: Session, pack: ValidPack, now: datetime) -> tuple[ContentPack, bool]:
    """Insert a validated pack; (the row, whether it went live). Without a window it goes live when
    it is newer than the live version of its name; with one, when the window contains `now` (else it
    waits for the `content` job, or has already ended). PackConflict when this name and version is
    already stored."""
    if session.scalar(select(ContentPack.id).where(ContentPack.name == pack.name,
                                                         ContentPack.version == pack.version)) is not None:
        raise PackConflict(pack.name, pack.version)
    row = ContentPack(name=pack.name, version=pack.version, sha256=pack.sha256, size_bytes=pack.size_bytes,
                      content=pack.content, uploaded_at=now, live_from=pack.live_from, live_until=pack.live_until,
                      announce=pack.announce, sku_rates=pack.sku_rates())
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise PackConflict(pack.name, pack.version) from None
    session.add_all(ContentFile(pack_id=row.id, path=path, data=data) for path, data in pack.files.items())
    if _windowed(row):
        row.window_state = _state_at(row, now)
        if row.window_state != LIVE:
            return row, False
    else:
        live = _live_row(session, row.name)
        current = session.scalar(select(ContentPack.version).where(ContentPack.id == live.pack_id)) if live else None
        if current is not None and version_key(pack.version) <= version_key(current):
            return row, False
    _go_live(session, row, now)
    return row, True


def activate(session: Session, pack_id: int, now: datetime) -> ContentPack | None:
    """Make a stored version the live one of its name (e.g. roll back); None when there is no such pack."""
    row = session.get(ContentPack, pack_id)
    if row is None:
        return None
    _set_live(session, row.name, row.id, now)
    return row


# ---- windows: festival versions live from live_from until live_until ------------------------------
WAITING, LIVE, ENDED = "waiting", "live", "ended"  # ContentPack.window_state of a version with a window


def _windowed(row: ContentPack) -> bool:
    return row.live_from is not None or row.live_until is not None


def _state_at(row: ContentPack, now: datetime) -> str:
    if row.live_until is not None and row.live_until <= now:
        return ENDED
    if row.live_from is not None and row.live_from > now:
        return WAITING
    return LIVE


def _live_row(session: Session, name: str) -> LivePack | None:
    return session.scalar(select(LivePack).where(LivePack.name == name).with_for_update())


def _set_live(session: Session, name: str, pack_id: int, now: datetime) -> int | None:
    """Point the name's live row at pack_id; the version that was live before (None: none)."""
    live = _live_row(session, name)
    if live is None:
        session.add(LivePack(name=name, pack_id=pack_id, activated_at=now))
        return None
    before, live.pack_id, live.activated_at = live.pack_id, pack_id, now
    return before


def _go_live(session: Session, row: ContentPack, now: datetime) -> None:
    """Make an imported or due version live, in the caller's unit: a windowed version remembers the
    version it replaced, and the announcement becomes a campaign (once per version: its source)."""
    if row.name != DEMO_PACK_NAME:
        session.execute(delete(LivePack).where(LivePack.name == DEMO_PACK_NAME))
    before = _set_live(session, row.name, row.id, now)
    if _windowed(row):
        row.window_state = LIVE
        if before != row.id:  # an admin may have activated it early: keep what it replaced then
            row.replaced_pack_id = before
    if row.announce:
        campaigns.schedule(session, title=f"资料上新：{row.name}"[:64], kind="training", text=row.announce,
                           audience="all", send_at=now, now=now, source=f"pack:{row.id}")


def _comes_back(session: Session, row: ContentPack, now: datetime) -> int | None:
    """The version to make live when row's window ends: the one it replaced, unless that is a window
    not open now (then the one that one replaced, and so on); else the newest version without a
    window; else none."""
    seen = {row.id}
    back = session.get(ContentPack, row.replaced_pack_id) if row.replaced_pack_id is not None else None
    while back is not None and back.id not in seen:
        if not _windowed(back) or _state_at(back, now) == LIVE:
            return back.id
        seen.add(back.id)
        back = session.get(ContentPack, back.replaced_pack_id) if back.replaced_pack_id is not None else None
    plain = session.execute(select(ContentPack.id, ContentPack.version).where(
        ContentPack.name == row.name, ContentPack.live_from.is_(None), ContentPack.live_until.is_(None))).all()
    return max(plain, key=lambda p: version_key(p.version)).id if plain else None


def switch_windows(session: Session, now: datetime) -> list[ContentPack]:
    """The `content` job's unit: end the windows that have passed (the replaced version comes back
    when the windowed one is still live), then open those that have come (announcing them). Safe to
    run twice or after a crash: each step moves window_state on, in the same unit as the switch.
    The versions whose window_state changed."""
    changed = []
    ending = session.scalars(select(ContentPack).where(ContentPack.window_state == LIVE, ContentPack.live_until <= now)
                             .order_by(ContentPack.live_until, ContentPack.id).with_for_update()).all()
    for row in ending:
        live = _live_row(session, row.name)
        if live is not None and live.pack_id == row.id:
            back = _comes_back(session, row, now)
            if back is None:
                session.delete(live)
            else:
                live.pack_id, live.activated_at = back, now
        row.window_state = ENDED
        changed.append(row)
    starting = session.scalars(select(ContentPack).where(ContentPack.window_state == WAITING,
                                                         ContentPack.live_from <= now)
                               .order_by(ContentPack.live_from, ContentPack.id).with_for_update()).all()
    for row in starting:
        if _state_at(row, now) == ENDED:  # the whole window passed while no job ran: never live
            row.window_state = ENDED
        else:
            _go_live(session, row, now)
        changed.append(row)
    return changed


def pack_file(session: Session, pack_id: int, path: str) -> bytes | None:
    return session.scalar(select(ContentFile.data).where(ContentFile.pack_id == pack_id,
                                                               ContentFile.path == path))


_PICTURE_TYPES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif"),
                  (b"RIFF", "image/webp"))


def pack_picture(session: Session, pack_id: int, path: str) -> tuple[bytes, str] | None:
    """A picture of a pack and its content type, for a public page; None for any other file
    (fonts and the like stay private)."""
    data = pack_file(session, pack_id, path)
    kind = next((t for magic, t in _PICTURE_TYPES if data is not None and data.startswith(magic)), None)
    return (data, kind) if data is not None and kind is not None else None


def versions_by_name(session: Session) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every stored version as pack_json plus its row (for the times), grouped by pack name (names
    in order), the highest version first within a name: what the console's 内容 page lists."""
    live = live_pack_ids(session)
    groups: dict[str, list[ContentPack]] = {}
    for row in session.scalars(select(ContentPack).order_by(ContentPack.name, ContentPack.id.desc())):
        groups.setdefault(row.name, []).append(row)
    newest_first = {name: sorted(rows, key=lambda r: version_key(r.version), reverse=True)
                    for name, rows in groups.items()}
    return [(name, [{**pack_json(r, r.id in live), "row": r} for r in rows]) for name, rows in newest_first.items()]


def pack_json(row: ContentPack, live: bool) -> dict[str, Any]:
    c = row.content
    return {"id": row.id, "name": row.name, "version": row.version, "live": live,
            "products": len(c.get("products", [])), "scripts": len(c.get("scripts", [])),
            "posters": len(c.get("posters", [])), "trainings": len(c.get("trainings", [])),
            "sha256": row.sha256, "size_bytes": row.size_bytes, "uploaded_at": china_time(row.uploaded_at),
            "live_from": china_time(row.live_from) if row.live_from else None,
            "live_until": china_time(row.live_until) if row.live_until else None,
            "window_state": row.window_state}


async def import_pack(writer: Writer, path: str | Path, now: datetime,
                      rank_keys: list[str] | None = None, max_levels: int = LEGAL_MAX_LEVELS) -> tuple[ContentPack, bool]:
    """Validate (in a thread) and store a pack zip uploaded `now`: PackInvalid, PackConflict, or (row, went live)."""
    valid = await asyncio.to_thread(validate_pack, path, rank_keys, max_levels)
    return await writer.run(lambda session: store_pack(session, valid, now), slow=True)
