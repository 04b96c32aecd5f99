"""Outgoing webhooks (CONTRACT §4.11): one row per event and endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId, OutboxStatus


class WebhookDelivery(Base):
    """An event for one endpoint, written in the transaction of the change it tells, sent by
    kit.webhook_sender until the endpoint answers 2xx (at least once: receivers dedupe by the event's
    id). A distributor's events reach an endpoint in the order they happened."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "url"),
                      Index("ix_webhook_due", "status", "next_attempt_at"),
                      # The claim's "nothing earlier of this distributor still unsent" probe.
                      Index("ix_webhook_order", "url", "distributor_id", "status", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(500))
    type: Mapped[str] = mapped_column(String(40))
    distributor_id: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]]  # {"id", "type", "created_at", "data"}, as sent
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)  # pending, sending, sent
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
