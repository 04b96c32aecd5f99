"""Campaigns: a message to an audience, sent through the outbox (one row per recipient), and
WeChat's reports of mass sends."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId


class CampaignStatus(StrEnum):
    SCHEDULED = "scheduled"
    SENDING = "sending"
    DONE = "done"
    CANCELLED = "cancelled"


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # contest, training, notice
    channel: Mapped[str] = mapped_column(String(16))  # service or mass
    # What is sent: "text" (`text`), "image" (its campaign_images row) or "news" (an article: the
    # title, `text` as its body, `article` {"digest"}, the cover in campaign_images).
    format: Mapped[str] = mapped_column(String(8), default="text", server_default="text")
    text: Mapped[str] = mapped_column(Text)
    article: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    audience: Mapped[Any] = mapped_column(JSON)  # "all" or {"ranks": [...]}
    status: Mapped[str] = mapped_column(String(16), index=True)
    send_at: Mapped[datetime]
    # Recipients: counted when scheduled, fixed when sending starts.
    total: Mapped[int] = mapped_column(default=0)
    body_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_bodies.id"))
    # Enqueueing goes by distributor id in batches: the last id done, and the highest id of the
    # audience fixed when sending started.
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    audience_max_id: Mapped[int | None] = mapped_column(BigInteger)
    enqueued: Mapped[bool] = mapped_column(default=False)
    # What made it, when not an admin: e.g. "pack:12" (a pack version's announcement), once each.
    source: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # {"sent", "failed", "skipped", "pending"} as they stood when the campaign's outbox rows were
    # pruned (domain.outbox_rows.prune, a month after it finished); until then counted from the rows.
    final_counts: Mapped[dict[str, Any] | None]


class CampaignImage(Base):
    """An image campaign's picture or an article's cover, kept until the campaign starts sending:
    WeChat's media_id of a temporary upload lives 3 days, so it is uploaded then (media_id set) and
    the campaign's message completed with it (domain.campaign_messages)."""

    __tablename__ = "campaign_images"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(32))
    media_id: Mapped[str | None] = mapped_column(String(160))
    uploaded_at: Mapped[datetime | None]


class MassReport(Base):
    """WeChat's MASSSENDJOBFINISH event, one per msg_id, kept as it came whether or not a send is
    recorded under that msg_id yet: a crash between WeChat's answer and the outbox's mark records
    the send later (the repeat's 45065 names it), and the campaign's counts join the two then."""

    __tablename__ = "mass_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    msg_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    status: Mapped[str] = mapped_column(String(64))  # "send success", "send fail", "err(10001)", ...
    total: Mapped[int]  # TotalCount: the openids of the call
    kept: Mapped[int]  # FilterCount: those within their 4 a month
    sent: Mapped[int]  # SentCount
    errors: Mapped[int]  # ErrorCount
    fields: Mapped[dict[str, Any]]  # the event's fields as sent
    received_at: Mapped[datetime] = mapped_column(index=True)
