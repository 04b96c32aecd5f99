"""Risk (CONTRACT §4.12): the flags the rules raise (domain.risk) and every suspension and
reinstatement of a distributor."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId


class FlagStatus(StrEnum):
    OPEN = "open"
    DISMISSED = "dismissed"
    SUSPENDED = "suspended"  # resolved by suspending the distributor


class RiskFlag(Base):
    """A rule's finding about one distributor, for an admin to judge."""

    __tablename__ = "risk_flags"
    __table_args__ = (Index("ix_risk_flags_status", "status", "id"),
                      Index("ix_risk_flags_follow_up", "rule", "follow_up_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    # What the rule saw, for later checks (a sign-up burst keeps the ids of those sign-ups).
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=FlagStatus.OPEN)
    # "<distributor id>:<rule>" while open, NULL once resolved: one open flag per distributor and
    # rule, kept by the unique constraint (NULLs never collide) on both databases.
    open_key: Mapped[str | None] = mapped_column(String(48), unique=True)
    created_at: Mapped[datetime]
    # When a later check is due (a sign-up burst: 7 days on); NULL when none is, or it was done.
    follow_up_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)


class Suspension(Base):
    """A suspension or reinstatement: who, why, when (the distributor's page lists them)."""

    __tablename__ = "suspensions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # "suspend" or "reinstate"
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))
    flag_id: Mapped[int | None] = mapped_column(ForeignKey("risk_flags.id"))
    created_at: Mapped[datetime]
