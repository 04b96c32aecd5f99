"""Campaigns (broadcasts): POST /api/campaigns and the rest of CONTRACT §4.5, the `campaigns` job
that queues their recipients, and WeChat's MASSSENDJOBFINISH event that reports a mass send.

Sending is the outbox's work: a campaign becomes one outbox row per recipient (or per chunk of
10,000 openids for a mass send), queued in batches (domain.campaigns). Any process may queue (the
campaign's row lock orders them) and every process's outbox worker sends.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.api import ApiError, ApiModel, IdParam, PageQuery, RankAudience, checked_audience, ok
from bot.api import text as text_field
from bot.chat import Ctx, Incoming
from bot.feature import Feature
from bot.scheduler import JOBS
from bot.typedefs import CONFIG, SESSIONMAKER, WRITER
from domain import campaigns
from domain.formats import china_time
from storage.db import run_read
from storage.models_campaigns import Campaign, CampaignStatus

log = logging.getLogger(__name__)
feature = Feature("campaigns")
api = feature.api


# ---- queueing: the job (an admin's POST runs it at once when the campaign is due) ---------------
@feature.job("campaigns", "interval", seconds=2)
async def campaigns_job(app: web.Application) -> int:
    """Start due campaigns, queue their recipients (one batch per unit), mark finished ones done;
    the batches queued. A read-only look first: every two seconds, nearly always nothing to do."""
    batches = 0
    for cid in await run_read(app[SESSIONMAKER], lambda s: campaigns.due(s, datetime.now(UTC))):
        while await app[WRITER].run(lambda s, cid=cid: campaigns.enqueue_batch(s, cid, datetime.now(UTC)),
                                    slow=True):
            batches += 1
    return batches


# ---- WeChat's report of a mass send ---------------------------------------------------------------
@feature.event("masssendjobfinish")
def on_mass_finished(msg: Incoming, ctx: Ctx) -> None:
    try:
        msg_id = int(msg.field("MsgID"))
        counts = {"total": int(msg.field("TotalCount", "0")), "kept": int(msg.field("FilterCount", "0")),
                  "sent": int(msg.field("SentCount", "0")), "errors": int(msg.field("ErrorCount", "0"))}
    except ValueError:
        log.warning("MASSSENDJOBFINISH with bad counts", extra={"fields": dict(msg.fields)})
        return None
    if not campaigns.record_mass_result(ctx.session, msg_id, {**counts, "status": msg.field("Status")}):
        log.info("MASSSENDJOBFINISH for a send that is not ours", extra={"msg_id": msg_id})
    return None


# ---- /api/campaigns ------------------------------------------------------------------------------
class CampaignIn(ApiModel):
    noun: ClassVar[str] = "campaign"
    title: text_field(64)
    kind: Literal["contest", "training", "notice"]
    text: text_field(campaigns.MAX_TEXT) = Field(description=f"at most {campaigns.MAX_TEXT} characters")
    audience: Literal["all"] | RankAudience = "all"
    send_at: AwareDatetime | None = Field(None, description="RFC 3339 with a zone; omitted: now")
    channel: Literal["service", "mass"] = Field(
        "service", description="service: customer-service message, template outside 48 h; mass: 群发")


class CampaignOut(BaseModel):
    id: int
    title: str
    kind: str
    channel: str
    text: str
    audience: Any
    status: Literal["scheduled", "sending", "done", "cancelled"]
    send_at: datetime
    total: int
    sent: int
    failed: int
    skipped: int
    pending: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class CampaignList(BaseModel):
    campaigns: list[CampaignOut]
    total: int


class CampaignId(IdParam):
    noun: ClassVar[str] = "campaign"


def _json(session: Session, c: Campaign) -> dict[str, Any]:
    p = campaigns.progress(session, c)
    return {"id": c.id, "title": c.title, "kind": c.kind, "channel": c.channel, "text": c.text,
            "audience": c.audience, "status": c.status, "send_at": china_time(c.send_at), "total": c.total,
            "sent": p.sent, "failed": p.failed, "skipped": p.skipped, "pending": p.pending,
            "created_at": china_time(c.created_at),
            "started_at": china_time(c.started_at) if c.started_at else None,
            "finished_at": china_time(c.finished_at) if c.finished_at else None}


@api.post("/campaigns", summary="Schedule a broadcast to all active distributors or some ranks",
          body=CampaignIn, response=CampaignOut, status=201)
async def create_campaign(request: web.Request, body: CampaignIn) -> web.Response:
    audience = checked_audience(request.config_dict[CONFIG], body.audience, "campaign")
    now = datetime.now(UTC)
    send_at = body.send_at.astimezone(UTC) if body.send_at else now

    def create(session: Session) -> dict[str, Any]:
        c = campaigns.schedule(session, title=body.title, kind=body.kind, text=body.text, audience=audience,
                               send_at=send_at, now=now, channel=body.channel)
        return _json(session, c)
    data = await request.config_dict[WRITER].run(create)
    if send_at <= now:
        request.config_dict[JOBS].start("campaigns", "api", wait=True)
    return ok(data, status=201)


@api.get("/campaigns", summary="Campaigns, newest first", query=PageQuery, response=CampaignList)
async def list_campaigns(request: web.Request, query: PageQuery) -> web.Response:
    def read(session: Session) -> dict[str, Any]:
        rows = session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(query.limit)
                               .offset(query.offset)).all()
        total = session.scalar(select(func.count()).select_from(Campaign)) or 0
        return {"campaigns": [_json(session, c) for c in rows], "total": total}
    return ok(await run_read(request.config_dict[SESSIONMAKER], read))


@api.get("/campaigns/{id}", summary="One campaign with its progress", params=CampaignId, response=CampaignOut,
         errors=(404,))
async def get_campaign(request: web.Request, params: CampaignId) -> web.Response:
    def read(session: Session) -> dict[str, Any]:
        c = session.get(Campaign, params.id)
        if c is None:
            raise ApiError(404, "not_found", f"No campaign {params.id}.")
        return _json(session, c)
    return ok(await run_read(request.config_dict[SESSIONMAKER], read))


@api.post("/campaigns/{id}/cancel", summary="Cancel a scheduled campaign; 409 once it has started",
          params=CampaignId, response=CampaignOut, errors=(404, 409))
async def cancel_campaign(request: web.Request, params: CampaignId) -> web.Response:
    def cancel(session: Session) -> dict[str, Any]:
        c = campaigns.cancel(session, params.id, datetime.now(UTC))
        if c is None:
            raise ApiError(404, "not_found", f"No campaign {params.id}.")
        if c.status != CampaignStatus.CANCELLED:
            raise ApiError(409, "already_started", f"Campaign {params.id} is {c.status}; only a scheduled "
                           "campaign can be cancelled.", {"status": c.status})
        return _json(session, c)
    return ok(await request.config_dict[WRITER].run(cancel))
