"""Engagement: rank history and admin adjustments, contests with their running scores, and
customer-service tickets (CONTRACT §4.1, §4.6, §4.7). Money is integer fen."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId

Fen = BigInteger


class RankChange(Base):
    """Every change of a distributor's rank: promotions (actor "system") and an admin's moves."""

    __tablename__ = "rank_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    old_rank: Mapped[str] = mapped_column(String(32))
    new_rank: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))  # "system" or who did it (the admin token's name)
    created_at: Mapped[datetime]


class Adjustment(Base):
    """An admin's correction of a balance: its ledger entry has ref `adjustment:<id>`."""

    __tablename__ = "adjustments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(Fen)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ContestStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SETTLED = "settled"


class Contest(Base):
    __tablename__ = "contests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(16))  # sales, sku_sales, new_members
    skus: Mapped[list[str]] = mapped_column(JSON, default=list)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    prizes_fen: Mapped[list[int]] = mapped_column(JSON, default=list)
    audience: Mapped[Any] = mapped_column(JSON)  # "all" or {"ranks": [...]}
    status: Mapped[str] = mapped_column(String(16), index=True)
    # What made it, when not an admin: "star:2026-12" (the built-in 月度推广之星), once each.
    source: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Set at settlement: [{"place", "distributor_id", "code", "name", "value", "prize_fen"}].
    winners: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    campaign_id: Mapped[int | None] = mapped_column(BigInteger)  # the results' campaign
    created_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]


class ContestScore(Base):
    """A running total per contest and distributor, kept with each order event, so that live
    standings (排行) are an indexed read. Settlement recounts from the orders themselves."""

    __tablename__ = "contest_scores"
    __table_args__ = (Index("ix_contest_scores_place", "contest_id", "value", "reached_at"),)

    contest_id: Mapped[int] = mapped_column(ForeignKey("contests.id"), primary_key=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), primary_key=True)
    value: Mapped[int] = mapped_column(Fen, default=0)
    reached_at: Mapped[datetime]  # when the value last went up (ties go to the earlier)


class TicketStatus(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    CLOSED = "closed"


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_status_due", "status", "due_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Whoever follows may ask; distributor_id is set when they are (or were) a distributor.
    openid: Mapped[str] = mapped_column(String(64), index=True)
    distributor_id: Mapped[int | None] = mapped_column(ForeignKey("distributors.id"))
    text: Mapped[str] = mapped_column(Text)
    urgent: Mapped[bool]
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    due_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]  # when staff were reminded that it is overdue (once)


class TicketReply(Base):
    __tablename__ = "ticket_replies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
