"""Campaigns (broadcasts): POST /api/campaigns and the rest of CONTRACT §4.5, the `campaigns` job
that uploads a campaign's picture when it falls due and queues its recipients, WeChat's
MASSSENDJOBFINISH event that reports a mass send, and the console's 活动 (创建, 预览, 取消). What a
campaign sends is built by domain.campaign_messages; its own pages are handlers/campaign_pages.py.

Sending is the outbox's work: a campaign becomes one outbox row per recipient (or per chunk of
10,000 openids for a mass send), queued in batches (domain.campaigns). Any process may queue (the
campaign's row lock orders them) and every process's outbox worker sends.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from aiohttp import web
from aiohttp.web_request import FileField
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kit.api import ApiModel, IdParam, Instant, PageQuery, RankAudience, checked_audience, ok
from kit.api import text as text_field
from kit.chat import Ctx, Incoming
from kit.auditing import note
from kit.console import done, page, page_number
from kit.feature import Feature
from kit.scheduler import JOBS
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from content.console_pages import when
from content.pages import markdown_html
from domain import campaign_messages as messages
from domain import campaigns
from domain.config import Config
from domain.formats import CHINA, china_time
from domain.refusals import Refusal
from storage.models_campaigns import Campaign, CampaignStatus
from wechat.client import WeChatError
from wechat.wechat_keys import WECHAT

log = logging.getLogger(__name__)
feature = Feature("campaigns", scope="ops")
api = feature.api


# ---- queueing: the job (an admin's POST runs it at once when the campaign is due) ---------------
@feature.job(campaigns.SEND_JOB, "interval", seconds=2)
async def campaigns_job(app: web.Application) -> int:
    """Start due campaigns, queue their recipients (one batch per unit), mark finished ones done;
    the batches queued. A read-only look first: every two seconds, nearly always nothing to do."""
    batches = 0
    for cid in await app[READER].run(lambda s: campaigns.due(s, app[CLOCK].now())):
        if not await _upload_picture(app, cid):
            continue  # tried again at the next run
        while await app[WRITER].run(lambda s, cid=cid: campaigns.enqueue_batch(s, cid, app[CLOCK].now()),
                                    slow=True):
            batches += 1
    return batches


async def _upload_picture(app: web.Application, cid: int) -> bool:
    """Put a due campaign's picture (and 群发's article) on WeChat and complete its message; False
    when WeChat refused or could not be reached (uploading twice costs nothing but a media_id)."""
    todo = await app[READER].run(lambda s: messages.awaiting_upload(s, cid))
    if todo is None:
        return True
    try:
        media_id = await app[WECHAT].upload_image(todo.content, "image." + todo.content_type.split("/")[1],
                                                  todo.content_type)
        news = None
        if todo.draft.format == "news" and todo.channel == "mass":
            news = await app[WECHAT].upload_news([messages.news_article(
                todo.draft, media_id, markdown_html(todo.draft.body)[0])])
    except WeChatError as e:
        log.warning("campaign picture not uploaded", extra={"campaign": cid, "errcode": e.errcode})
        return False
    link = live_config(app).server.public_url + messages.article_path(live_config(app), cid)
    await app[WRITER].run(lambda s: messages.uploaded(s, cid, media_id, news, link=link, cover_url=link + "/cover",
                                                       now=app[CLOCK].now()))
    return True


# ---- WeChat's report of a mass send ---------------------------------------------------------------
@feature.event("masssendjobfinish")
def on_mass_finished(msg: Incoming, ctx: Ctx) -> None:
    """Kept by its MsgID even when no send of ours names it yet: after a crash between WeChat's
    answer and the outbox's mark, the repeat's 45065 records the send later (domain.campaigns)."""
    try:
        # WeChat spells it MsgID; the webhook may hand it over as the update's msg_id (CONTRACT §7).
        msg_id = msg.msg_id or int(msg.field("MsgID") or msg.field("MsgId"))
        counts = {"total": int(msg.field("TotalCount", "0")), "kept": int(msg.field("FilterCount", "0")),
                  "sent": int(msg.field("SentCount", "0")), "errors": int(msg.field("ErrorCount", "0"))}
        if not 0 < msg_id < 2**63 or not all(0 <= n < 2**31 for n in counts.values()):
            raise ValueError(msg_id)
    except ValueError:
        log.warning("MASSSENDJOBFINISH with a bad MsgID or counts", extra={"fields": dict(msg.fields)})
        return None
    if not campaigns.keep_mass_report(ctx.session, msg_id, counts, msg.field("Status"), dict(msg.fields),
                                      ctx.now):
        log.info("MASSSENDJOBFINISH kept for a send not recorded (yet)", extra={"msg_id": msg_id})
    return None


# ---- /api/campaigns ------------------------------------------------------------------------------
class CampaignIn(ApiModel):
    noun: ClassVar[str] = "campaign"
    title: text_field(64)
    kind: Literal["contest", "training", "notice"]
    text: text_field(campaigns.MAX_TEXT) = Field(description=f"at most {campaigns.MAX_TEXT} characters")
    audience: Literal["all"] | RankAudience = "all"
    send_at: Instant | None = Field(None, description="RFC 3339 with a zone; omitted: now")
    channel: Literal["service", "mass"] = Field(
        "service", description="service: customer-service message, template outside 48 h; mass: 群发")
    format: Literal["text", "image", "news"] = Field(
        "text", description="text: `text` is the message; image: `image_base64` is sent (`text` a note for the "
                            "template message); news: an article, `title`, `text` its digest (at most 120), "
                            "`image_base64` its cover, `article_body` its Markdown")
    image_base64: str | None = Field(None, max_length=3_000_000, description="a JPEG or PNG, at most 2 MB")
    article_body: str | None = Field(None, max_length=messages.MAX_BODY, description="news: the article, Markdown")


class CampaignOut(BaseModel):
    id: int
    title: str
    kind: str
    channel: str
    format: str
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
    return {"id": c.id, "title": c.title, "kind": c.kind, "channel": c.channel, "format": c.format, "text": c.text,
            "audience": c.audience, "status": c.status, "send_at": china_time(c.send_at), "total": c.total,
            "sent": p.sent, "failed": p.failed, "skipped": p.skipped, "pending": p.pending,
            "created_at": china_time(c.created_at),
            "started_at": china_time(c.started_at) if c.started_at else None,
            "finished_at": china_time(c.finished_at) if c.finished_at else None}


@api.post("/campaigns", summary="Schedule a broadcast to all active distributors or some ranks",
          body=CampaignIn, response=CampaignOut, status=201)
async def create_campaign(request: web.Request, body: CampaignIn) -> web.Response:
    return ok(await launch(request, body, "api"), status=201)


async def launch(request: web.Request, body: CampaignIn, cause: str) -> dict[str, Any]:
    """Schedule a campaign (the API's and the console's 创建), and when it is due start the
    campaigns job at once; the campaign as JSON. Refusal (invalid_campaign, 422) for an unknown rank."""
    audience = checked_audience(live_config(request.config_dict), body.audience, "campaign")
    now = request.config_dict[CLOCK].now()
    send_at = body.send_at.astimezone(UTC) if body.send_at else now
    draft = messages.Draft(body.title, body.format, body.text, body.article_body or "")
    image = _image(body.image_base64)

    def create(session: Session) -> dict[str, Any]:
        c = campaigns.schedule(session, title=body.title, kind=body.kind, text=body.text, audience=audience,
                               send_at=send_at, now=now, channel=body.channel, draft=draft, image=image)
        return _json(session, c)
    data = await request.config_dict[WRITER].run(create)
    log.info("campaign created", extra={"campaign": data["id"], "by": cause})
    if send_at <= now:
        request.config_dict[JOBS].start(campaigns_job, cause, wait=True)
    return data


def _image(encoded: str | None) -> bytes | None:
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:
        raise Refusal("invalid_campaign", "image_base64 is not base64.", sentence="图片内容不对。",
                      details=[{"field": "image_base64", "problem": "not base64"}]) from None


@api.get("/campaigns", summary="Campaigns, newest first", query=PageQuery, response=CampaignList)
async def list_campaigns(request: web.Request, query: PageQuery) -> web.Response:
    def read(session: Session) -> dict[str, Any]:
        rows = session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(query.limit)
                               .offset(query.offset)).all()
        total = session.scalar(select(func.count()).select_from(Campaign)) or 0
        return {"campaigns": [_json(session, c) for c in rows], "total": total}
    return ok(await request.config_dict[READER].run(read))


@api.get("/campaigns/{id}", summary="One campaign with its progress", params=CampaignId, response=CampaignOut,
         errors=(404,))
async def get_campaign(request: web.Request, params: CampaignId) -> web.Response:
    def read(session: Session) -> dict[str, Any]:
        c = session.get(Campaign, params.id)
        if c is None:
            raise Refusal("not_found", f"No campaign {params.id}.")
        return _json(session, c)
    return ok(await request.config_dict[READER].run(read))


@api.post("/campaigns/{id}/cancel", summary="Cancel a scheduled campaign; 409 once it has started",
          params=CampaignId, response=CampaignOut, errors=(404, 409))
async def cancel_campaign(request: web.Request, params: CampaignId) -> web.Response:
    now = request.config_dict[CLOCK].now()
    return ok(await request.config_dict[WRITER].run(lambda session: cancel(session, params.id, now)))


def cancel(session: Session, campaign_id: int, now: datetime) -> dict[str, Any]:
    """Cancel a scheduled campaign (the API's and the console's 取消): the campaign as JSON;
    Refusal not_found when there is none, already_started once it has started."""
    c = campaigns.cancel(session, campaign_id, now)
    if c is None:
        raise Refusal("not_found", f"No campaign {campaign_id}.", sentence="没有这个活动。")
    if c.status != CampaignStatus.CANCELLED:
        started = messages.STATUS_NAMES.get(c.status, "开始")
        raise Refusal("already_started", f"Campaign {campaign_id} is {c.status}; only a scheduled campaign can be "
                      "cancelled.", sentence=f"活动 {campaign_id} 已经{started}，不能取消。", details={"status": c.status})
    return _json(session, c)


# ---- the console's 活动 page ----------------------------------------------------------------------
PER_PAGE = 20
FIELD_NAMES = {"title": "标题", "text": "内容", "kind": "类型", "audience": "受众", "send_at": "发送时间",
               "channel": "渠道", "format": "格式", "article_body": "正文"}
FORM_FIELDS = ("title", "text", "kind", "audience", "send_at", "channel", "format", "article_body", "image_data")


def _console_list(session: Session, config: Config, number: int) -> dict[str, Any]:
    rows = session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(PER_PAGE)
                           .offset((number - 1) * PER_PAGE)).all()
    total = session.scalar(select(func.count()).select_from(Campaign)) or 0
    sizes = campaigns.audience_sizes(session)
    audiences = [("all", "全部分销员", sum(sizes.values()))]
    audiences += [(r.key, r.name, sizes.get(r.key, 0)) for r in config.ranks]
    return {"campaigns": [(c, campaigns.progress(session, c)) for c in rows], "total": total, "number": number,
            "pages": max((total + PER_PAGE - 1) // PER_PAGE, 1), "audiences": audiences,
            "rank_names": {r.key: r.name for r in config.ranks}}


async def _campaigns_page(request: web.Request, *, form: Any = None, errors: list[str] = (),
                          status: int = 200, preview: Any = None) -> web.Response:
    number = page_number(request)
    config = live_config(request.config_dict)
    listing = await request.config_dict[READER].run(lambda s: _console_list(s, config, number))
    return page(request, "campaigns.html", title="活动", current="/campaigns", status=status, form=form or {},
                errors=errors, max_text=campaigns.MAX_TEXT, max_digest=messages.MAX_DIGEST,
                status_names=messages.STATUS_NAMES, kind_names=messages.KIND_NAMES, preview=preview,
                format_names=messages.FORMAT_NAMES, channel_names=messages.CHANNEL_NAMES, **listing)


@feature.console.get("/campaigns")
async def campaigns_page(request: web.Request) -> web.Response:
    return await _campaigns_page(request)


def _send_at(value: str, now: datetime) -> datetime | None:
    """发送时间 from a datetime-local field, China time; None when empty (now). ValueError when it is
    not a time or already past."""
    if not value.strip():
        return None
    local = datetime.fromisoformat(value.strip())
    if local.tzinfo is not None:
        raise ValueError(value)
    local = local.replace(tzinfo=CHINA)
    if local < now - timedelta(minutes=1):
        raise ValueError("past")
    return local


def _form_values(form: Any) -> dict[str, str]:
    """The form as typed; a picture chosen now replaces the one carried from a preview (base64)."""
    values = {k: str(form.get(k, "")) for k in FORM_FIELDS}
    picked = form.get("image")
    if isinstance(picked, FileField) and (data := picked.file.read(messages.MAX_IMAGE_BYTES + 1)):
        values["image_data"] = base64.b64encode(data).decode()
    return values


@feature.console.post("/campaigns")
async def create_form(request: web.Request) -> web.Response:
    """创建 (a new campaign, as POST /api/campaigns) or 预览 (the page again with the message as it
    will be sent, built by the code that sends it; the picture carried in the form)."""
    form = await request.post()
    values = _form_values(form)
    errors = []
    try:
        send_at = _send_at(values["send_at"], request.config_dict[CLOCK].now())
    except ValueError:
        send_at = None
        errors.append("发送时间不对：请选一个还没到的时间（中国时间），或留空表示立即发送。")
    audience = values["audience"] or "all"
    try:
        body = CampaignIn.model_validate({
            "title": values["title"], "kind": values["kind"] or "notice", "text": values["text"].replace("\r\n", "\n"),
            "send_at": send_at, "audience": audience if audience == "all" else {"ranks": [audience]},
            "channel": values["channel"] or "service", "format": values["format"] or "text",
            "image_base64": values["image_data"] or None, "article_body": values["article_body"].replace("\r\n", "\n")})
    except ValidationError as e:
        body = None
        errors += [_problem(err) for err in e.errors()]
    if errors or body is None:
        return await _campaigns_page(request, form=values, errors=errors, status=422)
    try:
        if form.get("action") == "preview":
            shown = await _campaigns_page(request, form=values, preview=_preview(body))
            note(request, f"预览活动「{body.title}」（没有创建）")
            return shown
        data = await launch(request, body, "console")
    except Refusal as e:  # an unknown rank, a picture WeChat would not take: the page again, as typed
        return await _campaigns_page(request, form=values, errors=[e.sentence], status=422)
    when_text = "已开始发送" if send_at is None else f"将于 {when(send_at)} 发送"
    return done(request, "/campaigns", f"活动 {data['id']}「{data['title']}」已创建，{data['total']} 位分销员，{when_text}。")


def _preview(body: CampaignIn) -> dict[str, Any]:
    """The message as the distributor will see it, and the article it opens (news)."""
    draft = messages.Draft(body.title, body.format, body.text, body.article_body or "")
    kind = messages.check(draft, _image(body.image_base64))
    src = f"data:{kind};base64,{body.image_base64}" if kind else ""
    return {"reply": messages.message(draft, image=src), "channel": body.channel, "format": body.format,
            "article": markdown_html(draft.body)[0] if body.format == "news" else None, "title": body.title}


def _problem(error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    if field == "title":
        return "标题不能为空，最多 64 个字。"
    if field == "text":
        return f"内容不能为空，最多 {campaigns.MAX_TEXT} 个字。"
    return f"{FIELD_NAMES.get(field, field)}不对：{error['msg']}"


@feature.console.post(r"/campaigns/{id:\d{1,18}}/cancel")
async def cancel_form(request: web.Request) -> web.Response:
    cid = int(request.match_info["id"])
    now = request.config_dict[CLOCK].now()
    await request.config_dict[WRITER].run(lambda session: cancel(session, cid, now))
    return done(request, "/campaigns", f"活动 {cid} 已取消。")
