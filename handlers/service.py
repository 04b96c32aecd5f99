"""Customer service (CONTRACT §4.7): 客服 / help in chat opens a ticket, admins answer and close
tickets through /api/tickets and the console's 客服 (a ticket's page shows its whole thread), and
the `sla` job reminds staff (admin.notify_openids) of tickets past their promised answer time. The
rules live in domain.tickets.

Whoever follows may ask: a distributor (also one who has exited) or a follower who never
registered (the ticket then has no distributor). `客服 <question>` opens a ticket at once; a bare
`客服` (or the menu's HELP) shows the help text and waits for the question (取消 leaves).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session

from kit.api import ApiModel, IdParam, PageQuery, actor_of, ok
from kit.api import text as text_field
from kit.chat import Ctx, Incoming
from kit.console import done, page, page_number, returns_to
from kit.feature import Feature
from kit.menu import MenuKey
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from domain.refusals import Refusal
from domain import tickets
from domain.formats import china_time
from domain.help import HELP
from domain.messages import Text
from storage.models_engage import TicketStatus


class Asking(StrEnum):
    QUESTION = "service.question"


feature = Feature("service", states=Asking, scope="ops")
api = feature.api


# ---- chat -----------------------------------------------------------------------------------------
WORDS = ("客服", "help")


@feature.command(*WORDS, menu=MenuKey.HELP)
def on_help(msg: Incoming, ctx: Ctx) -> Text:
    if ctx.args:
        return _ask(ctx, ctx.args)
    service = ctx.config.service
    urgent, normal = (tickets.span(tickets.answer_time(u, service)) for u in (True, False))
    rank = ctx.distributor.rank if ctx.distributor else None
    promise = (f"客服会在 {urgent}内回复" if tickets.has_priority(rank, service)
               else f"客服会在 {normal}内回复（写明“紧急”的 {urgent}内）")
    ctx.set_state(Asking.QUESTION)
    return Text(f"{HELP}\n\n请直接发送您的问题，{promise}。回复“取消”退出。")


@feature.state(Asking.QUESTION, commands_leave=True)
def on_question(msg: Incoming, ctx: Ctx) -> Text:
    return _ask(ctx, msg.content)


def _ask(ctx: Ctx, question: str) -> Text:
    """Open a ticket and promise the answer time. A question too long is refused and the
    conversation waits for a better one; too many open tickets ends it."""
    try:
        ticket = tickets.open_ticket(ctx.session, openid=ctx.openid, distributor=ctx.distributor, text=question,
                                     now=ctx.now, service=ctx.config.service)
    except Refusal as e:  # answered here, not by the router: the conversation goes on or ends
        if e.code == "invalid_question":
            ctx.set_state(Asking.QUESTION)
            return Text(f"{e.sentence}回复“取消”退出。")
        ctx.clear_state()
        return Text(e.sentence)
    ctx.clear_state()
    within = tickets.span(ticket.due_at - ticket.created_at)
    urgency = "（紧急）" if ticket.urgent else ""
    return Text(f"已收到您的问题（工单 #{ticket.id}），我们会在 {within}内回复{urgency}，"
                f"最迟 {tickets.clock(ticket.due_at, ctx.now)}（北京时间）。\n客服的回复会通过本公众号发给您。")


# ---- the sla job ----------------------------------------------------------------------------------
@feature.job("sla", "interval", minutes=1)
async def check_sla(app: web.Application) -> int:
    """Remind staff, once per ticket, of the open tickets past their promised answer time."""
    staff = live_config(app).admin.notify_openids
    if not staff:
        return 0
    return await app[WRITER].run(lambda s: tickets.remind_overdue(s, app[CLOCK].now(), staff))


# ---- /api/tickets -----------------------------------------------------------------------------------
class TicketOut(BaseModel):
    id: int
    distributor_code: str | None = Field(description="null: a follower who never registered")
    text: str
    urgent: bool
    status: TicketStatus
    created_at: datetime
    due_at: datetime
    overdue: bool = Field(description="open and past due_at")
    answered_at: datetime | None
    closed_at: datetime | None


class TicketList(BaseModel):
    tickets: list[TicketOut]
    total: int


class ReplyOut(BaseModel):
    text: str
    actor: str
    created_at: datetime


class TicketDetail(TicketOut):
    replies: list[ReplyOut]


class TicketQuery(PageQuery):
    status: TicketStatus | None = Field(None, description="only tickets of this status (omitted: all)")


class TicketId(IdParam):
    noun: ClassVar[str] = "ticket"


class Answer(ApiModel):
    noun: ClassVar[str] = "reply"
    text: text_field(tickets.MAX_REPLY) = Field(description="sent to the asker in chat")


def _json(row: tickets.TicketRow, now: datetime) -> dict[str, Any]:
    t = row.ticket
    return {"id": t.id, "distributor_code": row.distributor_code, "text": t.text, "urgent": t.urgent,
            "status": t.status, "created_at": china_time(t.created_at), "due_at": china_time(t.due_at),
            "overdue": tickets.is_overdue(t, now),
            "answered_at": china_time(t.answered_at) if t.answered_at else None,
            "closed_at": china_time(t.closed_at) if t.closed_at else None}


def _detail(session: Session, ticket_id: int, now: datetime) -> dict[str, Any]:
    row = tickets.find(session, ticket_id)
    if row is None:
        raise Refusal("not_found", f"No ticket {ticket_id}.")
    return {**_json(row, now), "replies": [{"text": r.text, "actor": r.actor, "created_at": china_time(r.created_at)}
                                           for r in tickets.replies(session, ticket_id)]}


@api.get("/tickets", summary="Tickets a page at a time: open ones urgent first, then by due time; "
         "other statuses and all (status omitted) newest first", query=TicketQuery, response=TicketList)
async def list_tickets(request: web.Request, query: TicketQuery) -> web.Response:
    now = request.config_dict[CLOCK].now()

    def read(session: Session) -> dict[str, Any]:
        rows, total = tickets.list_tickets(session, query.status, query.limit, query.offset)
        return {"tickets": [_json(r, now) for r in rows], "total": total}
    return ok(await request.config_dict[READER].run(read))


@api.get("/tickets/{id}", summary="One ticket with its replies", params=TicketId, response=TicketDetail,
         errors=(404,))
async def get_ticket(request: web.Request, params: TicketId) -> web.Response:
    return ok(await request.config_dict[READER].run(lambda s: _detail(s, params.id, request.config_dict[CLOCK].now())))


@api.post("/tickets/{id}/reply", summary="Answer a ticket: the text goes to the asker in chat (a template message "
          "outside the 48-hour window) and the ticket is answered; 409 when it is closed",
          params=TicketId, body=Answer, response=TicketDetail, errors=(404, 409))
async def reply_ticket(request: web.Request, params: TicketId, body: Answer) -> web.Response:
    actor, now = actor_of(request), request.config_dict[CLOCK].now()

    def answer(session: Session) -> dict[str, Any]:
        tickets.answer(session, params.id, body.text, actor, now)
        return _detail(session, params.id, now)
    return ok(await request.config_dict[WRITER].run(answer))


@api.post("/tickets/{id}/close", summary="Close a ticket; closing a closed ticket answers 200 and changes nothing",
          params=TicketId, response=TicketDetail, errors=(404,))
async def close_ticket(request: web.Request, params: TicketId) -> web.Response:
    now = request.config_dict[CLOCK].now()

    def close(session: Session) -> dict[str, Any]:
        tickets.close(session, params.id, now)
        return _detail(session, params.id, now)
    return ok(await request.config_dict[WRITER].run(close))


# ---- the console's 客服 ---------------------------------------------------------------------------
TABS = {TicketStatus.OPEN: "待回复", TicketStatus.ANSWERED: "已回复", TicketStatus.CLOSED: "已关闭"}
PER_PAGE = 50


def _tab(value: Any) -> TicketStatus:
    return TicketStatus(value) if value in TicketStatus._value2member_map_ else TicketStatus.OPEN


@feature.console.get("/tickets")
async def tickets_page(request: web.Request) -> web.Response:
    """A page of tickets of one status, in the API's order: open ones urgent first, then by due
    time, each with the minutes left (or past due) counted here; the others newest first."""
    status, now = _tab(request.query.get("status")), request.config_dict[CLOCK].now()
    number = page_number(request)

    def read(session: Session) -> tuple[list[dict[str, Any]], int]:
        rows, total = tickets.list_tickets(session, status, PER_PAGE, (number - 1) * PER_PAGE)
        return [{"t": r.ticket, "code": r.distributor_code, "name": r.distributor_name,
                 "countdown": tickets.countdown(r.ticket, now) if status == TicketStatus.OPEN else None}
                for r in rows], total
    items, total = await request.config_dict[READER].run(read)
    return page(request, "tickets.html", title="客服", current="/tickets", tabs=TABS, tab=status.value,
                items=items, total=total, number=number, pages=max((total + PER_PAGE - 1) // PER_PAGE, 1),
                max_reply=tickets.MAX_REPLY)


@feature.console.get(r"/tickets/{id:\d{1,18}}")
async def ticket_page(request: web.Request) -> web.Response:
    """One ticket with its whole thread (the asker's questions and the staff's replies, in order,
    with times and who answered) and the reply form."""
    tid, now = int(request.match_info["id"]), request.config_dict[CLOCK].now()

    def read(session: Session) -> dict[str, Any] | None:
        row = tickets.find(session, tid)
        if row is None:
            return None
        return {"t": row.ticket, "code": row.distributor_code, "name": row.distributor_name,
                "thread": tickets.thread(session, row.ticket),
                "countdown": tickets.countdown(row.ticket, now) if row.ticket.status == TicketStatus.OPEN else None}
    found = await request.config_dict[READER].run(read)
    return page(request, "ticket.html", title=f"工单 #{tid}", current="/tickets", status=200 if found else 404,
                i=found, tid=tid, tabs=TABS, max_reply=tickets.MAX_REPLY)


@feature.console.post(r"/tickets/{id:\d{1,18}}")
async def act_on_ticket_page(request: web.Request) -> web.Response:
    """发送 (the API's answer: the reply reaches the asker, the session is its actor) or 关闭; back to
    the list's tab, or to the ticket's own page when it was sent from there."""
    tid, form = int(request.match_info["id"]), await request.post()
    back = returns_to(request, f"/tickets/{tid}" if form.get("back") == "ticket"
                      else f"/tickets?status={_tab(form.get('status')).value}")
    actor, now = actor_of(request), request.config_dict[CLOCK].now()
    if form.get("action") == "close":
        closed = await request.config_dict[WRITER].run(lambda s: tickets.close(s, tid, now))
        return done(request, back, f"工单 #{tid} 已关闭。" if closed else f"没有工单 #{tid}。", error=not closed)
    if form.get("action") != "reply":
        return done(request, back, "请选择发送或关闭。", error=True)
    try:
        text = Answer.model_validate({"text": str(form.get("reply", ""))}).text
    except ValidationError:
        empty = not str(form.get("reply", "")).strip()
        return done(request, back, f"工单 #{tid}：请先填写回复内容。" if empty
                    else f"工单 #{tid}：回复最多 {tickets.MAX_REPLY} 字。", error=True)
    answered = await request.config_dict[WRITER].run(lambda s: tickets.answer(s, tid, text, actor, now))
    if answered is None:
        return done(request, back, f"没有工单 #{tid}。", error=True)
    return done(request, back, f"已回复工单 #{tid}，回复会通过公众号发给提问人。")
