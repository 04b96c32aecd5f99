"""Content packs, the live version of each pack name, and the poster caches (QR codes, media)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId


class ContentPack(Base):
    """One uploaded version of a pack. Its content never changes after upload (caches key on its id
    and digest); only the window columns below move on."""

    __tablename__ = "content_packs"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    # The validated manifest with template sources and Markdown inlined (see content.packs).
    content: Mapped[dict[str, Any]]
    uploaded_at: Mapped[datetime]
    # A festival version is live only from live_from until live_until (the `content` job switches
    # it in and the replaced version back); announce goes to every active distributor as it goes live.
    live_from: Mapped[datetime | None]
    live_until: Mapped[datetime | None]
    announce: Mapped[str | None] = mapped_column(Text)
    window_state: Mapped[str | None] = mapped_column(String(16))  # None, "waiting", "live", "ended"
    replaced_pack_id: Mapped[int | None] = mapped_column(BigId)
    # The products' own commission rates, {lower-case SKU: ["0.20", "0.05"]} (None: no product has
    # any), kept apart from `content` so that a batch of order events reads only these (domain.plan_reads).
    sku_rates: Mapped[dict[str, Any] | None]


class ContentFile(Base):
    """A picture or font of a pack, kept in the database so that every process can render it."""

    __tablename__ = "content_files"

    pack_id: Mapped[int] = mapped_column(ForeignKey("content_packs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class LivePack(Base):
    """Which version of each pack name is live; switching is one row update."""

    __tablename__ = "content_live"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("content_packs.id"))
    activated_at: Mapped[datetime]


class DistributorQrCode(Base):
    """The distributor's temporary parametric QR code (scene = their code), re-made before it expires."""

    __tablename__ = "distributor_qrcodes"

    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), primary_key=True)
    ticket: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]


class QrScan(Base):
    """One scan of a distributor's QR code: a SCAN event with their code as the scene, or a follow
    through it (`followed`). One row per event: an event's handler runs once per dedupe key, its
    retries are answered from the stored reply. 我的推广 counts a code's rows of a week."""

    __tablename__ = "qr_scans"
    __table_args__ = (Index("ix_qr_scans_scene", "scene", "scanned_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scene: Mapped[str] = mapped_column(String(64))  # as WeChat sent it: a distributor's code
    openid: Mapped[str] = mapped_column(String(64))
    followed: Mapped[bool]
    scanned_at: Mapped[datetime]


class PosterMedia(Base):
    """A rendered poster uploaded as temporary media, under a key of everything that shaped it."""

    __tablename__ = "poster_media"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_id: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime]
