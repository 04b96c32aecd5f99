"""Outgoing webhooks' events (CONTRACT §4.11): `emit` writes one delivery per subscribed endpoint
in the caller's transaction, so an event exists exactly when the change it tells was committed;
kit.webhook_sender sends them. Nothing is written when no endpoint wants the event type."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain.config import Config
from domain.config_sections import WebhookEvent
from domain.formats import china_time
from storage.durable_queue import prune as prune_sent
from storage.models import OutboxStatus
from storage.tables import WEBHOOK_DELIVERIES

# session.info key: a unit that emitted wakes the sender when it commits.
WOKEN = "webhooks"
# Sent deliveries are kept this long (for the curious: what was sent, when), then pruned.
RETENTION = timedelta(days=7)


def emit(session: Session, config: Config, type_: WebhookEvent, events: Sequence[tuple[int | None, dict[str, Any]]],
         now: datetime) -> None:
    """Events of one type, each (the distributor it concerns, its data), in the order given."""
    endpoints = [w.url for w in config.webhooks if type_ in w.events]
    if not endpoints or not events:
        return
    rows, name = [], str(type_)  # the plain string in the rows and the bodies
    for distributor_id, data in events:
        event_id = uuid.uuid4().hex
        body = {"id": event_id, "type": name, "created_at": china_time(now), "data": data}
        rows += [{"event_id": event_id, "url": url, "type": name, "distributor_id": distributor_id, "body": body,
                  "status": OutboxStatus.PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now}
                 for url in endpoints]
    session.connection().execute(WEBHOOK_DELIVERIES.insert(), rows)
    session.info[WOKEN] = True


def withdrawal_paid(session: Session, config: Config, *, withdrawal_id: int, distributor_id: int,
                    distributor_code: str, amount_fen: int, now: datetime) -> None:
    """withdrawal.paid: approved with payouts off, or the WeChat Pay transfer arrived."""
    emit(session, config, WebhookEvent.WITHDRAWAL_PAID, [(distributor_id, {
        "withdrawal_id": withdrawal_id, "distributor_code": distributor_code, "amount_fen": amount_fen,
        "paid_at": china_time(now)})], now)


def prune(session: Session, sent_before: datetime) -> int:
    """Delete a chunk of the deliveries sent before `sent_before` (storage.durable_queue.prune)."""
    return prune_sent(session, WEBHOOK_DELIVERIES, sent_before)
