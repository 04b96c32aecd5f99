"""Risk (CONTRACT §4.12): the flags the rules raise (GET /api/risk/flags, POST
/api/risk/flags/{id}/resolve), suspending and reinstating a distributor (POST
/api/distributors/{code}/suspend|reinstate), the console's 风险 page and the suspend and reinstate
forms of a distributor's page, and the `risk` job that looks at sign-up bursts seven days on.

The rules run where their data arrives (domain.risk: order events, registration); the decisions
are domain.suspension's, the same for API and console, recorded with who acted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from kit.api import ApiModel, IdParam, PageQuery, actor_of, ok, text
from kit.console import done, page, page_number, returns_to
from kit.feature import Feature
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from domain import risk
from domain import suspension
from domain.distributors import DistributorAnswer, distributor_json, known_distributor
from storage.models_risk import FlagStatus
from storage.queries import distributor_by_code

feature = Feature("risk", scope="finance")  # flags hold withdrawals; suspension stops earning
api = feature.api

MAX_REASON = 200
PER_PAGE = 50


# ---- /api/risk/flags -------------------------------------------------------------------------------
class FlagOut(BaseModel):
    id: int
    distributor_code: str
    rule: Literal["self_dealing", "burst", "refund_ratio", "signup_burst"]
    detail: str = Field(description="what the rule saw, in Chinese, for an admin to judge")
    created_at: datetime
    status: FlagStatus
    resolved_at: datetime | None
    resolved_by: str | None
    reason: str | None


class FlagList(BaseModel):
    flags: list[FlagOut]
    total: int


class FlagQuery(PageQuery):
    status: FlagStatus | None = Field(None, description="only flags of this status (omitted: all); newest first")


class FlagId(IdParam):
    noun: ClassVar[str] = "flag"


class Resolution(ApiModel):
    noun: ClassVar[str] = "resolution"
    action: Literal["dismiss", "suspend"] = Field(description="dismiss the flag, or suspend the distributor")
    reason: text(MAX_REASON) = Field(description="kept with the flag (and told to a suspended distributor)")


@api.get("/risk/flags", summary="Risk flags, newest first, optionally of one status", query=FlagQuery,
         response=FlagList)
async def list_flags(request: web.Request, query: FlagQuery) -> web.Response:
    def read(session: Session) -> dict[str, Any]:
        rows, total = risk.list_flags(session, query.status, query.limit, query.offset)
        return {"flags": [risk.flag_json(r) for r in rows], "total": total}
    return ok(await request.config_dict[READER].run(read))


@api.post("/risk/flags/{id}/resolve",
          summary="Resolve an open flag: dismiss it, or suspend its distributor; 409 when it was resolved",
          params=FlagId, body=Resolution, response=FlagOut, errors=(404, 409))
async def resolve_flag(request: web.Request, params: FlagId, body: Resolution) -> web.Response:
    actor = actor_of(request)

    def apply(session: Session) -> dict[str, Any]:
        suspension.resolve(session, params.id, body.action, body.reason, actor, request.config_dict[CLOCK].now())
        return dict(risk.flag_json(risk.find_flag(session, params.id)))
    return ok(await request.config_dict[WRITER].run(apply))


# ---- /api/distributors/{code}/suspend | reinstate ------------------------------------------------------
class SuspendBody(ApiModel):
    noun: ClassVar[str] = "suspension"
    reason: text(MAX_REASON) = Field(description="told to the distributor, and in chat while suspended")


class ReinstateBody(ApiModel):
    noun: ClassVar[str] = "reinstatement"
    reason: text(MAX_REASON) | None = Field(None, description="kept with the reinstatement")


async def _decide(request: web.Request, action: str, reason: str) -> web.Response:
    code, actor = request.match_info["code"], actor_of(request)

    def apply(session: Session) -> dict[str, Any]:
        d = known_distributor(session, code)
        decide = suspension.suspend if action == suspension.SUSPEND else suspension.reinstate
        decide(session, d.id, reason, actor, request.config_dict[CLOCK].now())
        session.refresh(d)
        return distributor_json(session, d)
    return ok(await request.config_dict[WRITER].run(apply))


@api.post("/distributors/{code}/suspend",
          summary="Suspend an active distributor: no commission, no withdrawals, chat says why; 409 unless active",
          body=SuspendBody, response=DistributorAnswer, errors=(404, 409))
async def suspend_distributor(request: web.Request, body: SuspendBody) -> web.Response:
    return await _decide(request, suspension.SUSPEND, body.reason)


@api.post("/distributors/{code}/reinstate",
          summary="Reinstate a suspended distributor (what was not earned meanwhile stays unearned); "
                  "409 unless suspended",
          body=ReinstateBody, response=DistributorAnswer, errors=(404, 409))
async def reinstate_distributor(request: web.Request, body: ReinstateBody) -> web.Response:
    return await _decide(request, suspension.REINSTATE, body.reason or "恢复")


# ---- the risk job ----------------------------------------------------------------------------------
@feature.job("risk", "interval", minutes=30)
async def follow_up_signups(app: web.Application) -> int:
    """Sign-up bursts seven days on: none of those sign-ups sold → a flag (domain.risk.follow_up)."""
    config, looked = live_config(app), 0
    while True:
        done_now = await app[WRITER].run(lambda s: risk.follow_up(s, config, app[CLOCK].now()))
        looked += done_now
        if done_now < risk.FOLLOW_UP_BATCH:
            return looked


# ---- the console's 风险 ------------------------------------------------------------------------------
def _reason(form: Any) -> str:
    return " ".join(str(form.get("reason", "")).split())[:MAX_REASON]


@feature.console.get("/risk")
async def flags_page(request: web.Request) -> web.Response:
    number = page_number(request)
    rows, total = await request.config_dict[READER].run(lambda s: risk.list_flags(s, FlagStatus.OPEN, PER_PAGE, (number - 1) * PER_PAGE))
    return page(request, "risk.html", title="风险", current="/risk", flags=rows, total=total, number=number,
                pages=max((total + PER_PAGE - 1) // PER_PAGE, 1), rule_names=risk.RULE_NAMES)


@feature.console.post(r"/risk/{id:\d{1,18}}")
async def resolve_page(request: web.Request) -> web.StreamResponse:
    fid, form = int(request.match_info["id"]), await request.post()
    action, reason, actor = form.get("action"), _reason(form), actor_of(request)
    if action not in (suspension.DISMISS, suspension.SUSPEND):
        return done(request, "/risk", "请选择忽略或暂停。", error=True)
    if not reason:
        return done(request, "/risk", f"处理风险提示 #{fid} 需要填写原因。", error=True)
    await request.config_dict[WRITER].run(
        lambda s: suspension.resolve(s, fid, str(action), reason, actor, request.config_dict[CLOCK].now()))
    did = "已暂停该分销员" if action == suspension.SUSPEND else "已忽略"
    return done(request, "/risk", f"风险提示 #{fid} {did}。")


async def _decide_form(request: web.Request, action: str) -> web.StreamResponse:
    code, form = request.match_info["code"], await request.post()
    back, reason, actor = returns_to(request, f"/distributors/{quote(code, safe='')}"), _reason(form), actor_of(request)
    if action == suspension.SUSPEND and not reason:
        return done(request, back, "暂停需要填写原因（会告知分销员）。", error=True)

    def apply(session: Session) -> bool:
        d = distributor_by_code(session, code)
        if d is None:
            return False
        decide = suspension.suspend if action == suspension.SUSPEND else suspension.reinstate
        decide(session, d.id, reason or "恢复", actor, request.config_dict[CLOCK].now())
        return True
    if not await request.config_dict[WRITER].run(apply):
        return done(request, "/distributors", f"没有推广码为 {code[:16]} 的分销员。", error=True)
    return done(request, back, "已暂停，已通知分销员。" if action == suspension.SUSPEND else "已恢复，已通知分销员。")


@feature.console.post("/distributors/{code}/suspend")
async def suspend_form(request: web.Request) -> web.StreamResponse:
    return await _decide_form(request, suspension.SUSPEND)


@feature.console.post("/distributors/{code}/reinstate")
async def reinstate_form(request: web.Request) -> web.StreamResponse:
    return await _decide_form(request, suspension.REINSTATE)
