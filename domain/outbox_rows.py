"""Queuing messages for the outbox: rows written in the caller's transaction under a unique key,
sent later by the outbox worker (wechat.outbox). Batched notices fold their counters into one row.
What a row is to WeChat's customer-service quota (an answer, a notice, a broadcast; whether it has a
template message) is read here (`due_of`); domain.quota chooses its channel."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain.messages import Reply, Text, to_json
from domain.quota import Due, Rank
from storage.db import dialect_insert
from storage.durable_queue import prune as prune_sent
from storage.models import OutboxStatus
from storage.tables import CAMPAIGNS
from storage.tables import OUTBOX as _OUTBOX


@dataclass(frozen=True)
class Merge:
    """A batched notice: counters folded into one pending row per key, rendered on every fold."""

    key: str
    openid: str
    counts: dict[str, int]
    render: Callable[[dict[str, int]], Reply]
    due: datetime  # when the row may be sent: the end of the batching window


_MERGE_READ = select(_OUTBOX.c.key, _OUTBOX.c.status, _OUTBOX.c.payload).where(
    _OUTBOX.c.key.in_(bindparam("keys", expanding=True)))
_MERGE_LOCK = _MERGE_READ.order_by(_OUTBOX.c.key).with_for_update()
_MERGE_INSERT = {dialect: insert(_OUTBOX).on_conflict_do_nothing().returning(_OUTBOX.c.key)
                 for dialect, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))}
_MERGE_UPDATE = update(_OUTBOX).where(_OUTBOX.c.key == bindparam("k")).values(payload=bindparam("p"))


# A message that is not worth a template message of its own when the quota is closed or spent (its
# companion's template already leads to it): it is kept for the user's next message instead.
NO_TEMPLATE: dict[str, Any] = {}


def due_of(row: Any) -> Due:
    """An outbox row (id, openid, payload, body_id) as the quota's choice sees it. A late answer to
    the user's own request has no template message (it is kept when the quota is short); a notice
    has its own or one derived from its text (template_data); a campaign's body has its own."""
    payload = row.payload or {}
    rank = Rank.ANSWER if payload.get("answer") else Rank.BROADCAST if row.body_id is not None else Rank.NOTICE
    return Due(row.id, row.openid, rank, rank != Rank.ANSWER and payload.get("template") != NO_TEMPLATE)


def template_data(reply: Reply, title: str = "") -> dict[str, Any]:
    """A template message body for a reply, used outside the 48-hour window."""
    text = reply.content if isinstance(reply, Text) else "您有一条新消息，请进入公众号查看。"
    first, _, rest = text.partition("\n")
    return {"first": {"value": title or first}, "keyword1": {"value": first if title else rest[:200] or first},
            "remark": {"value": rest[:200] if title else ""}}


def merge_notices(session: Session, items: Sequence[Merge], now: datetime) -> None:
    """Fold counters into the still-pending row under each key, or add the row, due at `due`:
    a burst of events (orders credited in a minute) then makes one message, not one each.

    A row that a worker already claimed or sent is left alone;
    its counters go to a fresh row. A key another transaction added meanwhile (on PostgreSQL the
    insert waits for its commit and adds nothing) is merged into that row, read again under lock:
    neither side's counters are lost, and neither batch fails."""
    if not items:
        return
    merged: dict[str, Merge] = {}
    for m in items:
        prev = merged.get(m.key)
        merged[m.key] = m if prev is None else Merge(
            m.key, m.openid, {k: prev.counts.get(k, 0) + m.counts.get(k, 0) for k in {*prev.counts, *m.counts}},
            m.render, prev.due)
    stmt = _MERGE_LOCK if session.get_bind().dialect.name == "postgresql" else _MERGE_READ
    existing = {k: (status, payload) for k, status, payload in session.connection().execute(stmt, {"keys": list(merged)}).all()}
    inserts: dict[str, tuple[Merge, dict[str, Any]]] = {}  # by the new row's key
    updates: list[dict[str, Any]] = []
    for key, m in merged.items():
        status, payload = existing.get(key, (None, None))
        if status == OutboxStatus.PENDING:
            old = (payload or {}).get("merge") or {}
            counts = {k: old.get(k, 0) + m.counts.get(k, 0) for k in {*old, *m.counts}}
            updates.append({"k": key, "p": {**to_json(m.render(counts)), "merge": counts}})
            continue
        if status is not None:
            key = f"{key}+{secrets.token_hex(4)}"
        inserts[key] = m, {"key": key, "openid": m.openid, "payload": {**to_json(m.render(m.counts)), "merge": m.counts},
                           "status": OutboxStatus.PENDING, "attempts": 0, "next_attempt_at": m.due, "created_at": now}
    if inserts:
        added = set(session.connection().execute(_MERGE_INSERT[session.get_bind().dialect.name],
                                                 [row for _, row in inserts.values()]).scalars())
        if raced := [m for key, (m, _) in inserts.items() if key not in added]:
            merge_notices(session, raced, now)
    if updates:
        session.connection().execute(_MERGE_UPDATE, updates)
    if any(m.due <= now for m, _ in inserts.values()):
        session.info["outbox"] = True  # else the worker's idle poll finds them when they fall due


@dataclass(frozen=True)
class Queued:
    """A message to queue: under a unique key, with an optional template-message fallback and the
    link that fallback opens (outside the 48-hour window only a template message gets through).
    `answer`: a late reply to the user's own request, first in line for their quota."""

    key: str
    openid: str
    reply: Reply
    template: dict[str, Any] | None = None
    url: str = ""
    answer: bool = False


def enqueue(session: Session, key: str, openid: str, reply: Reply, *, now: datetime,
            template: dict[str, Any] | None = None, at: datetime | None = None, answer: bool = False) -> None:
    """Add a message in the caller's transaction, queued `now` (due `at`, else now); a key already
    there is left alone."""
    enqueue_many(session, [Queued(key, openid, reply, template, answer=answer)], now=now, at=at)


def enqueue_many(session: Session, items: Sequence[Queued], *, now: datetime, at: datetime | None = None) -> None:
    """Add messages in the caller's transaction, in one statement, in order; keys already there
    are left alone (a job run twice queues each message once)."""
    if not items:
        return
    rows = []
    for q in items:
        payload = to_json(q.reply)
        if q.template is not None:
            payload["template"] = q.template
        if q.url:
            payload["url"] = q.url
        if q.answer:
            payload["answer"] = True
        rows.append({"key": q.key, "openid": q.openid, "payload": payload, "status": OutboxStatus.PENDING,
                     "attempts": 0, "next_attempt_at": at or now, "created_at": now})
    session.connection().execute(dialect_insert(session, _OUTBOX).on_conflict_do_nothing(index_elements=["key"]), rows)
    session.info["outbox"] = True


# Sent messages are kept a month (what was sent to whom, and the keys that made them once).
RETENTION = timedelta(days=30)


def prune(session: Session, sent_before: datetime) -> int:
    """Delete a chunk of the messages sent before `sent_before` (storage.durable_queue.prune), except
    a campaign's while it has no final counts (domain.campaigns.keep_final_counts). Failed rows stay."""
    o = _OUTBOX.c
    counting = select(CAMPAIGNS.c.body_id).where(CAMPAIGNS.c.final_counts.is_(None), CAMPAIGNS.c.body_id.is_not(None))
    return prune_sent(session, _OUTBOX, sent_before, or_(o.body_id.is_(None), o.body_id.not_in(counting)))
