"""Customer-service tickets (CONTRACT §4.7): opening one (urgency, the promised answer time, the
limits against abuse), answering and closing it, reminding staff of overdue ones, and the counts
that /metrics shows. Functions of a synchronous session, the session first; `now` is the caller's
clock (tests move it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from domain.config_sections import ServiceConfig
from domain.formats import CHINA
from domain.messages import Text
from domain.outbox_rows import Queued, enqueue, enqueue_many, template_data
from domain.refusals import Refusal
from storage.db import is_postgres
from storage.models import Distributor
from storage.models_engage import Ticket, TicketReply, TicketStatus

MAX_TEXT = 500  # characters of a question
MAX_REPLY = 600  # characters of an answer (one customer-service message)
MAX_OPEN = 5  # open (unanswered) tickets per asker
URGENT_WORD = "紧急"
REMIND_BATCH = 500  # overdue tickets reminded per run; the job runs every minute
EXCERPT = 60  # characters of the question shown to staff


# ---- words for people -------------------------------------------------------------------------
def span(delta: timedelta) -> str:
    """A duration as people say it, to the minute: 30 分钟, 4 小时, 1 小时 5 分钟, 2 天 3 小时."""
    minutes = max(int(delta.total_seconds() // 60), 1)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "天"), (hours, "小时"), (minutes, "分钟")) if n]
    return " ".join(parts[:2])


def clock(at: datetime, now: datetime) -> str:
    """A moment in China time: 14:35 today, else with its date (11月26日 02:10)."""
    local, today = at.astimezone(CHINA), now.astimezone(CHINA).date()
    return f"{local:%H:%M}" if local.date() == today else f"{local.month}月{local.day}日 {local:%H:%M}"


def countdown(ticket: Ticket, now: datetime) -> tuple[str, bool]:
    """What is left of a ticket's answer time, in whole minutes (rounded up): ("还剩 N 分钟", False),
    or ("已超时 N 分钟", True) once it is past due."""
    seconds = (ticket.due_at - now).total_seconds()
    minutes = max(math.ceil(abs(seconds) / 60), 1)
    return (f"已超时 {minutes} 分钟", True) if seconds < 0 else (f"还剩 {minutes} 分钟", False)


def excerpt(text: str, length: int = EXCERPT) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= length else one_line[:length] + "…"


# ---- opening ----------------------------------------------------------------------------------
def has_priority(rank: str | None, service: ServiceConfig) -> bool:
    return rank is not None and rank in service.priority_ranks


def answer_time(urgent: bool, service: ServiceConfig) -> timedelta:
    return timedelta(minutes=service.urgent_minutes if urgent else service.normal_minutes)


def open_ticket(session: Session, *, openid: str, distributor: Distributor | None, text: str, now: datetime,
                service: ServiceConfig) -> Ticket:
    """A new open ticket (its id assigned), urgent when the text says 紧急 or the asker's rank has
    priority. Refusal invalid_question when the text is empty or too long (the asker may send it
    again, better), too_many_tickets when the asker has MAX_OPEN open already."""
    text = text.strip()
    if not text:
        raise Refusal("invalid_question", sentence="请直接发送您的问题。")
    if len(text) > MAX_TEXT:
        raise Refusal("invalid_question", sentence=f"问题最多 {MAX_TEXT} 字，您发送了 {len(text)} 字，请精简后重新发送。")
    waiting = session.scalar(select(func.count()).select_from(Ticket).where(
        Ticket.openid == openid, Ticket.status == TicketStatus.OPEN)) or 0
    if waiting >= MAX_OPEN:
        raise Refusal("too_many_tickets", sentence=f"您已有 {waiting} 个问题在等待回复（最多 {MAX_OPEN} 个），"
                      "请等客服回复后再提新问题。如有补充，可在客服回复后继续提问。")
    urgent = URGENT_WORD in text or has_priority(distributor.rank if distributor else None, service)
    ticket = Ticket(openid=openid, distributor_id=distributor.id if distributor else None, text=text,
                    urgent=urgent, status=TicketStatus.OPEN, created_at=now, due_at=now + answer_time(urgent, service))
    session.add(ticket)
    session.flush()
    return ticket


# ---- the admin's side -------------------------------------------------------------------------
@dataclass(frozen=True)
class TicketRow:
    """A ticket as the admin lists it: with the asker's distributor code and name (None: never
    registered)."""

    ticket: Ticket
    distributor_code: str | None
    distributor_name: str | None = None


def _with_code() -> Any:
    return select(Ticket, Distributor.code, Distributor.name).outerjoin(Distributor, Distributor.id == Ticket.distributor_id)


def list_tickets(session: Session, status: TicketStatus | None, limit: int, offset: int) -> tuple[list[TicketRow], int]:
    """A page of tickets and how many there are in all. Open tickets: urgent first, then the
    earliest due (the order to answer them in); otherwise newest first."""
    stmt, count = _with_code(), select(func.count()).select_from(Ticket)
    if status is not None:
        stmt, count = stmt.where(Ticket.status == status), count.where(Ticket.status == status)
    order = ((Ticket.urgent.desc(), Ticket.due_at, Ticket.id) if status == TicketStatus.OPEN
             else (Ticket.created_at.desc(), Ticket.id.desc()))
    rows = session.execute(stmt.order_by(*order).limit(limit).offset(offset)).all()
    return [TicketRow(*row) for row in rows], session.scalar(count) or 0


def find(session: Session, ticket_id: int) -> TicketRow | None:
    row = session.execute(_with_code().where(Ticket.id == ticket_id)).first()
    return TicketRow(*row) if row else None


def replies(session: Session, ticket_id: int) -> list[TicketReply]:
    return list(session.scalars(select(TicketReply).where(TicketReply.ticket_id == ticket_id)
                                .order_by(TicketReply.id)))


@dataclass(frozen=True)
class Said:
    """One message of a ticket's thread: the asker's question (`actor` None) or a staff reply."""

    at: datetime
    ticket_id: int
    text: str
    actor: str | None


THREAD_TICKETS = 50  # the asker's tickets a thread shows at most (the nearest to the one opened)


def thread(session: Session, ticket: Ticket) -> list[Said]:
    """What the asker and customer service said to each other, in order: every question the asker
    sent (each opens a ticket: a follow-up after an answer is a new one) and every staff reply to
    them, with times and who answered. Two statements whatever the thread's length."""
    near = func.abs(Ticket.id - ticket.id)
    ids = list(session.scalars(select(Ticket.id).where(Ticket.openid == ticket.openid)
                               .order_by(near, Ticket.id).limit(THREAD_TICKETS)))
    said = [Said(t.created_at, t.id, t.text, None)
            for t in session.scalars(select(Ticket).where(Ticket.id.in_(ids)).order_by(Ticket.id))]
    said += [Said(r.created_at, r.ticket_id, r.text, r.actor)
             for r in session.scalars(select(TicketReply).where(TicketReply.ticket_id.in_(ids))
                                         .order_by(TicketReply.id))]
    return sorted(said, key=lambda s: (s.at, s.ticket_id, s.actor is not None))


def _locked(session: Session, ticket_id: int) -> Ticket | None:
    """The ticket, its row locked on PostgreSQL: a reply and a close of one ticket take turns."""
    stmt = select(Ticket).where(Ticket.id == ticket_id)
    return session.scalar(stmt.with_for_update() if is_postgres(session) else stmt)


def answer(session: Session, ticket_id: int, text: str, actor: str, now: datetime) -> Ticket | None:
    """Record an answer and queue it to the asker (a template message outside the 48-hour window);
    the ticket becomes answered. None when there is no such ticket; Refusal ticket_closed when it is
    closed.
    An answered ticket may be answered again; answered_at keeps the first answer's time."""
    ticket = _locked(session, ticket_id)
    if ticket is None:
        return None
    if ticket.status == TicketStatus.CLOSED:
        raise Refusal("ticket_closed", f"Ticket {ticket_id} is closed; it takes no more replies.",
                      sentence=f"工单 #{ticket_id} 已关闭，不能再回复；回复没有发出。", details={"status": TicketStatus.CLOSED.value})
    reply = TicketReply(ticket_id=ticket_id, text=text, actor=actor, created_at=now)
    session.add(reply)
    session.flush()
    ticket.status, ticket.answered_at = TicketStatus.ANSWERED, ticket.answered_at or now
    title = f"客服回复（工单 #{ticket_id}）"
    message = Text(f"【{title}】\n您的问题：{excerpt(ticket.text, 40)}\n\n{text}\n\n还有问题请回复“客服 您的问题”。")
    enqueue(session, f"ticket:{ticket_id}:reply:{reply.id}", ticket.openid, message, now=now,
            template=template_data(Text(text), title=title))
    return ticket


def close(session: Session, ticket_id: int, now: datetime) -> Ticket | None:
    """Close a ticket (None when there is none). Closing a closed ticket changes nothing."""
    ticket = _locked(session, ticket_id)
    if ticket is not None and ticket.status != TicketStatus.CLOSED:
        ticket.status, ticket.closed_at = TicketStatus.CLOSED, now
    return ticket


# ---- overdue ------------------------------------------------------------------------------------
def remind_overdue(session: Session, now: datetime, staff: Sequence[str]) -> int:
    """One message to each staff openid about every open ticket past its due time that they were
    not yet reminded of; the ticket's reminded_at is set in the same unit. Run twice (or by two
    processes at once), each ticket is reminded once: the outbox keys `sla:<ticket>:<openid>` are
    unique and the rows are locked (SKIP LOCKED) on PostgreSQL. The tickets reminded."""
    if not staff:
        return 0  # nobody to tell: they stay unreminded until someone is configured
    stmt = (_with_code().where(Ticket.status == TicketStatus.OPEN, Ticket.due_at < now, Ticket.reminded_at.is_(None))
            .order_by(Ticket.due_at).limit(REMIND_BATCH))
    if is_postgres(session):
        stmt = stmt.with_for_update(of=Ticket, skip_locked=True)
    rows = session.execute(stmt).all()
    items = []
    for ticket, code, _ in rows:
        asker = f"分销员 {code}" if code else "未注册的关注者"
        text = (f"【客服工单超时】工单 #{ticket.id}（{'紧急' if ticket.urgent else '普通'}）已超时 "
                f"{span(now - ticket.due_at)} 未回复\n提问人：{asker}\n问题：{excerpt(ticket.text)}\n"
                f"提问时间：{clock(ticket.created_at, now)}，应答时限：{clock(ticket.due_at, now)}")
        template = template_data(Text(text), title="客服工单超时提醒")
        items += [Queued(f"sla:{ticket.id}:{openid}", openid, Text(text), template) for openid in staff]
    enqueue_many(session, items, now=now)
    if rows:
        session.execute(update(Ticket).where(Ticket.id.in_([t.id for t, _, _ in rows])).values(reminded_at=now))
    return len(rows)


def open_and_overdue(session: Session, now: datetime) -> tuple[int, int]:
    """How many tickets are open, and how many of those are past due: one statement on the
    (status, due_at) index."""
    row = session.execute(select(func.count(), func.coalesce(func.sum(case((Ticket.due_at < now, 1), else_=0)), 0))
                          .where(Ticket.status == TicketStatus.OPEN)).one()
    return int(row[0]), int(row[1])


def is_overdue(ticket: Ticket, now: datetime) -> bool:
    return ticket.status == TicketStatus.OPEN and now > ticket.due_at
