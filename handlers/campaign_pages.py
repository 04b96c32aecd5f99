"""A campaign's own pages: in the console, what it sends (the message as the distributor sees it,
built by domain.campaign_messages like the message itself) and to whom (recipients with their
state, a page at a time, also as GET /api/campaigns/{id}/recipients); in public, an article's
page, which the news card of a customer-service campaign opens (a signed link)."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any, ClassVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.orm import Session

from kit.api import IdParam, PageQuery, ok
from kit.app_keys import READER
from kit.console import page, page_number
from kit.feature import Feature
from kit.live_settings import live_config
from content.pages import markdown_html
from content.pages import page as public_page
from domain import campaign_messages as messages
from domain import campaign_recipients as recipients
from domain.campaigns import progress
from domain.refusals import Refusal
from storage.models_campaigns import Campaign, CampaignImage

feature = Feature("campaign_pages", scope="ops")
PER_PAGE = 50


# ---- /api/campaigns/{id}/recipients ---------------------------------------------------------------
class RecipientOut(BaseModel):
    code: str | None
    name: str | None
    state: str
    error: str | None
    sent_at: datetime | None
    channel: str | None


class RecipientList(BaseModel):
    recipients: list[RecipientOut]
    total: int


class CampaignId(IdParam):
    noun: ClassVar[str] = "campaign"


def _campaign(session: Session, campaign_id: int) -> Campaign:
    c = session.get(Campaign, campaign_id)
    if c is None:
        raise Refusal("not_found", f"No campaign {campaign_id}.", sentence="没有这个活动。")
    return c


@feature.api.get("/campaigns/{id}/recipients", summary="What a campaign sent to whom: its recipients in the order "
                 "queued, each sent, failed (with WeChat's error) or pending; kept a month after it finished",
                 params=CampaignId, query=PageQuery, response=RecipientList, errors=(404,))
async def list_recipients(request: web.Request, params: CampaignId, query: PageQuery) -> web.Response:
    def read(session: Session) -> dict[str, Any]:
        found, total = recipients.recipients(session, _campaign(session, params.id), query.limit, query.offset)
        return {"recipients": [recipients.as_json(r) for r in found], "total": total}
    return ok(await request.config_dict[READER].run(read))


# ---- the console: one campaign ----------------------------------------------------------------------
@feature.console.get(r"/campaigns/{id:\d{1,18}}")
async def campaign_page(request: web.Request) -> web.Response:
    cid, number = int(request.match_info["id"]), page_number(request)

    def read(session: Session) -> dict[str, Any] | None:
        c = session.get(Campaign, cid)
        if c is None:
            return None
        found, total = recipients.recipients(session, c, PER_PAGE, (number - 1) * PER_PAGE)
        return {"c": c, "p": progress(session, c), "recipients": found, "total": total,
                "has_image": session.get(CampaignImage, cid) is not None}
    values = await request.config_dict[READER].run(read)
    if values is None:
        return page(request, "campaign.html", title="活动", current="/campaigns", status=404, c=None)
    c, draft = values["c"], messages.draft_of(values["c"])
    picture = f"/admin/campaigns/{cid}/image" if values["has_image"] else ""
    return page(request, "campaign.html", title=c.title, current="/campaigns", number=number,
                pages=max((values["total"] + PER_PAGE - 1) // PER_PAGE, 1), reply=messages.message(draft, image=picture),
                article=markdown_html(draft.body)[0] if c.format == "news" else None,
                status_names=messages.STATUS_NAMES, format_names=messages.FORMAT_NAMES,
                channel_names=messages.CHANNEL_NAMES, state_names=recipients.STATE_NAMES,
                via_names=recipients.CHANNEL_NAMES, **values)


async def _picture(request: web.Request, cid: int) -> web.Response:
    found = await request.config_dict[READER].run(lambda s: s.get(CampaignImage, cid))
    if found is None:
        raise web.HTTPNotFound()
    return web.Response(body=found.content, content_type=found.content_type,
                        headers={"Cache-Control": "private, max-age=86400"})


@feature.console.get(r"/campaigns/{id:\d{1,18}}/image")
async def campaign_image(request: web.Request) -> web.Response:
    return await _picture(request, int(request.match_info["id"]))


# ---- in public: an article's page and its cover (the signed link of its news card) ----------------------
def _signed(request: web.Request) -> int:
    cid = int(request.match_info["id"])
    if not messages.article_link_valid(live_config(request.config_dict), cid, request.match_info["sig"]):
        raise web.HTTPNotFound()
    return cid


@feature.pages.get(r"/a/{id:\d{1,18}}/{sig:[0-9a-f]{32}}")
async def article_page(request: web.Request) -> web.Response:
    cid = _signed(request)
    c = await request.config_dict[READER].run(lambda s: s.get(Campaign, cid))
    if c is None or c.format != "news":
        raise web.HTTPNotFound()
    draft = messages.draft_of(c)
    cover = f'<p><img src="{html.escape(request.path)}/cover" alt=""></p>'
    return web.Response(text=public_page(draft.title, cover + markdown_html(draft.body)[0]),
                        content_type="text/html", headers={"Cache-Control": "private, max-age=300"})


@feature.pages.get(r"/a/{id:\d{1,18}}/{sig:[0-9a-f]{32}}/cover")
async def article_cover(request: web.Request) -> web.Response:
    return await _picture(request, _signed(request))
