"""What a campaign sent to whom: its recipients a page at a time, each with their state (sent,
failed with WeChat's error, pending), read from the campaign's outbox rows (kept a month after it
finished; then only its counts remain). A 群发 chunk is one row for up to 10,000 openids: WeChat
reports only its counts (MASSSENDJOBFINISH), so its recipients share the chunk's state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.campaigns import MASS_OPENID
from domain.formats import china_time
from storage.models import OutboxStatus
from storage.models_campaigns import Campaign
from storage.tables import DISTRIBUTORS, MASS_REPORTS, OUTBOX

STATES = {OutboxStatus.SENT: "sent", OutboxStatus.FAILED: "failed"}  # anything else is pending
STATE_NAMES = {"sent": "已发送", "failed": "失败", "pending": "待发送"}
CHANNEL_NAMES = {"custom": "客服消息", "template": "模板消息", "mass": "群发"}


@dataclass(frozen=True)
class Recipient:
    openid: str
    code: str | None
    name: str | None
    state: str  # sent, failed, pending
    error: str | None  # WeChat's errcode and message when failed; why it waits when kept
    at: datetime | None  # when it was sent
    channel: str | None  # custom, template or mass


def recipients(session: Session, c: Campaign, limit: int, offset: int) -> tuple[list[Recipient], int]:
    """A page of a campaign's recipients in the order they were queued, and how many rows there
    are: 群发 chunks first (each recipient of a chunk in its order), then single messages."""
    o = OUTBOX.c
    chunks = session.execute(select(o.payload, o.status, o.last_error, o.errcode, o.sent_at, MASS_REPORTS.c.status)
                             .select_from(OUTBOX.outerjoin(MASS_REPORTS, MASS_REPORTS.c.msg_id == o.msg_id))
                             .where(o.body_id == c.body_id, o.openid == MASS_OPENID).order_by(o.id)).all()
    found: list[tuple[str, str, str | None, datetime | None, str | None]] = []
    in_chunks = 0
    for payload, status, error, errcode, sent_at, report in chunks:
        openids = payload.get("mass", ())
        start, end = max(offset - in_chunks, 0), min(offset + limit - in_chunks, len(openids))
        state = STATES.get(status, "pending")
        note = _error(error, errcode) if state == "failed" else (f"微信报告：{report}" if report else None)
        found += [(openid, state, note, sent_at, "mass") for openid in openids[start:end]]
        in_chunks += len(openids)
    single = o.body_id == c.body_id, o.openid != MASS_OPENID
    total = in_chunks + (session.scalar(select(func.count()).select_from(OUTBOX).where(*single)) or 0)
    if len(found) < limit:
        rows = session.execute(select(o.openid, o.status, o.last_error, o.errcode, o.sent_at, o.channel)
                               .where(*single).order_by(o.id).limit(limit - len(found))
                               .offset(max(offset - in_chunks, 0))).all()
        found += [(openid, STATES.get(status, "pending"),
                   _error(error, errcode) if status in (OutboxStatus.FAILED, OutboxStatus.KEPT) else None, at, channel)
                  for openid, status, error, errcode, at, channel in rows]
    names = {openid: (code, name) for openid, code, name in session.execute(
        select(DISTRIBUTORS.c.openid, DISTRIBUTORS.c.code, DISTRIBUTORS.c.name)
        .where(DISTRIBUTORS.c.openid.in_({f[0] for f in found})))} if found else {}
    return [Recipient(openid, *names.get(openid, (None, None)), state, error, at, channel)
            for openid, state, error, at, channel in found], total


def _error(error: str | None, errcode: int | None) -> str | None:
    if error is None and errcode is None:
        return None
    return error if errcode is None or str(errcode) in (error or "") else f"{errcode}: {error or ''}"


def as_json(r: Recipient) -> dict[str, Any]:
    return {"code": r.code, "name": r.name, "state": r.state, "error": r.error,
            "sent_at": china_time(r.at) if r.at else None, "channel": r.channel}
