"""Orders: the shop system's order events (POST /api/orders/events), the admin's view of an
order (GET /api/orders/{order_no}) and the distributor's 订单 report in chat.

Order events go through group commit (storage.group_commit): the events that arrive together
share one transaction, each in its own SAVEPOINT (domain.orders applies one), so the database
sees one commit for many events and a refused event leaves no trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from bot.api import ApiError, json_body, ok
from bot.chat import Ctx, Incoming, active_only
from bot.feature import Feature
from bot.menu import MenuKey
from bot.typedefs import CONFIG, SESSIONMAKER, WRITER
from domain import commission as rules
from domain.config import Config
from domain.formats import CHINA, china_time, yuan
from domain.messages import Text
from domain.notices import Credits, settle_and_notify
from domain.orders import EventIn, Rejected, apply_event
from storage.group_commit import Failed, GroupCommit, each_in_savepoint
from storage.models import Distributor
from storage.tables import COMMISSIONS, EVENTS, ORDERS

log = logging.getLogger(__name__)
feature = Feature("orders")
api = feature.api
ORDER_EVENTS = web.AppKey("order_events", GroupCommit[EventIn, dict[str, Any]])

RECENT = 10
STATUS_NAMES = {rules.PAID: "待发货", rules.SHIPPED: "已发货", rules.COMPLETED: "已完成",
                rules.REFUNDED: "已退款", rules.CANCELLED: "已取消"}


# ---- the shape of an event -------------------------------------------------------------------
def parse_event(data: dict[str, Any]) -> EventIn:
    """Check an event's JSON: a missing field or a wrong JSON type → 400, a bad value → 422."""
    malformed: list[dict[str, str]] = []
    invalid: list[dict[str, str]] = []

    def text(name: str, required: bool, limit: int) -> str | None:
        value = data.get(name)
        if value is None:
            if required:
                malformed.append({"field": name, "problem": "is required"})
            return None
        if not isinstance(value, str):
            malformed.append({"field": name, "problem": "must be a string"})
            return None
        value = value.strip()
        if not value or len(value) > limit:
            invalid.append({"field": name, "problem": f"must be 1 to {limit} characters"})
        return value

    event_id = text("event_id", True, 128)
    order_no = text("order_no", True, 64)
    kind = text("type", True, 16)
    if kind is not None and kind not in rules.EVENT_TYPES:
        invalid.append({"field": "type", "problem": "must be one of " + ", ".join(rules.EVENT_TYPES)})
    needs_amount = kind in (rules.PAID, rules.REFUNDED)
    amount = data.get("amount_fen")
    if needs_amount:
        if amount is None:
            malformed.append({"field": "amount_fen", "problem": f"is required on '{kind}'"})
        elif not isinstance(amount, int) or isinstance(amount, bool):
            malformed.append({"field": "amount_fen", "problem": "must be a whole number of fen (a JSON integer)"})
        elif amount <= 0:
            invalid.append({"field": "amount_fen", "problem": "must be more than 0"})
        elif amount > 10**12:
            invalid.append({"field": "amount_fen", "problem": "is implausibly large"})
    code = text("distributor_code", kind == rules.PAID, 16) if kind == rules.PAID else None
    sku = text("sku", False, 64)
    buyer = text("buyer_openid", False, 64)
    occurred = None
    raw_at = data.get("occurred_at")
    if raw_at is not None:
        if not isinstance(raw_at, str):
            malformed.append({"field": "occurred_at", "problem": "must be a string"})
        else:
            try:
                occurred = datetime.fromisoformat(raw_at)
            except ValueError:
                occurred = None
            if occurred is None or occurred.tzinfo is None:
                invalid.append({"field": "occurred_at", "problem": "must be ISO 8601 with a UTC offset, "
                                "e.g. 2026-11-25T10:00:00+08:00"})
                occurred = None
    if malformed:
        raise ApiError(400, "malformed_event", "The order event is missing fields or has fields of the wrong "
                       "type.", malformed + invalid)
    if invalid:
        raise ApiError(422, "invalid_event", "The order event has invalid values.", invalid)
    assert event_id and order_no and kind
    return EventIn(event_id=event_id, order_no=order_no, type=kind, amount_fen=amount if needs_amount else None,
                   distributor_code=code.upper() if code else None, sku=sku, buyer_openid=buyer,
                   occurred_at=occurred)


# ---- group commit ----------------------------------------------------------------------------
def apply_events(session: Session, config: Config, events: list[EventIn]) -> list[dict[str, Any] | Failed]:
    """A batch of events in one transaction, each in its own SAVEPOINT; then the batched notices
    for what the applied ones credited."""
    now = datetime.now(UTC)
    credits = Credits()

    def one(session: Session, e: EventIn) -> dict[str, Any]:
        answer, credited = apply_event(session, config, e, now)
        credits.add(credited)
        return answer

    answers = each_in_savepoint(session, events, one)
    settle_and_notify(session, config, now, credits)
    return answers


@feature.resource(ORDER_EVENTS)
async def order_events(app: web.Application) -> AsyncIterator[GroupCommit[EventIn, dict[str, Any]]]:
    config = app[CONFIG]
    yield GroupCommit(app[WRITER], lambda session, events: apply_events(session, config, events))


# ---- /api/orders -----------------------------------------------------------------------------
_COMMISSION_SCHEMA = {"type": "object", "properties": {
    "distributor_code": {"type": "string"}, "depth": {"type": "integer"}, "amount_fen": {"type": "integer"},
    "reversed_fen": {"type": "integer"},
    "state": {"type": "string", "enum": ["pending", "available", "reversed"]}}}
_EVENT_BODY = {"type": "object", "required": ["event_id", "order_no", "type"], "properties": {
    "event_id": {"type": "string", "maxLength": 128, "description": "idempotency key"},
    "order_no": {"type": "string", "maxLength": 64},
    "type": {"type": "string", "enum": list(rules.EVENT_TYPES)},
    "amount_fen": {"type": "integer", "minimum": 1,
                   "description": "order amount on paid, refunded amount on refunded; ignored otherwise"},
    "distributor_code": {"type": "string", "description": "required on paid, ignored after"},
    "sku": {"type": "string"}, "buyer_openid": {"type": "string"},
    "occurred_at": {"type": "string", "format": "date-time"}}}
_EVENT_ANSWER = {"type": "object", "properties": {
    "order_no": {"type": "string"}, "status": {"type": "string", "enum": list(rules.EVENT_TYPES)},
    "duplicate": {"type": "boolean"}, "amount_fen": {"type": "integer"}, "refunded_fen": {"type": "integer"},
    "commissions": {"type": "array", "items": _COMMISSION_SCHEMA}}}


@api.post("/orders/events",
          summary="Apply one order event from the shop (idempotent per event_id). 400: missing field or wrong "
                  "JSON type; 409: the order was already paid under another event_id; 422: bad value, unknown "
                  "distributor, unknown order or impossible transition (nothing stored)",
          body=_EVENT_BODY, response=_EVENT_ANSWER, errors=(400, 409, 422))
async def post_order_event(request: web.Request) -> web.Response:
    event = parse_event(await json_body(request))
    try:
        return ok(await request.config_dict[ORDER_EVENTS](event))
    except Rejected as r:
        raise ApiError(r.status, r.code, r.message, r.details) from None


@api.get("/orders/{order_no}", summary="One order with its status history and commissions",
         response={"type": "object", "properties": {
             "order_no": {"type": "string"}, "status": {"type": "string"}, "amount_fen": {"type": "integer"},
             "refunded_fen": {"type": "integer"}, "distributor_code": {"type": "string"},
             "sku": {"type": "string", "nullable": True}, "buyer_openid": {"type": "string", "nullable": True},
             "paid_at": {"type": "string", "format": "date-time"},
             "completed_at": {"type": "string", "format": "date-time", "nullable": True},
             "history": {"type": "array", "items": {"type": "object"}},
             "commissions": {"type": "array", "items": _COMMISSION_SCHEMA}}},
         errors=(404,))
async def get_order(request: web.Request) -> web.Response:
    order_no = request.match_info["order_no"]
    d = Distributor.__table__.c
    async with request.config_dict[SESSIONMAKER]() as session, session.begin():
        o = (await session.execute(select(ORDERS, d.code).join(Distributor.__table__, d.id == ORDERS.c.distributor_id)
                                   .where(ORDERS.c.order_no == order_no))).mappings().first()
        if o is None:
            raise ApiError(404, "not_found", f"No order {order_no!r}.")
        history = (await session.execute(select(EVENTS).where(EVENTS.c.order_no == order_no)
                                         .order_by(EVENTS.c.id))).mappings().all()
        comms = (await session.execute(select(COMMISSIONS, d.code).join(
            Distributor.__table__, d.id == COMMISSIONS.c.distributor_id).where(COMMISSIONS.c.order_no == order_no)
            .order_by(COMMISSIONS.c.depth))).mappings().all()

    def at(v: datetime | None) -> str | None:
        return china_time(v) if v else None
    return ok({
        "order_no": o["order_no"], "status": o["status"], "amount_fen": o["amount_fen"],
        "refunded_fen": o["refunded_fen"], "distributor_code": o["code"], "sku": o["sku"],
        "buyer_openid": o["buyer_openid"], "paid_at": at(o["paid_at"]), "completed_at": at(o["completed_at"]),
        "history": [{"event_id": h["event_id"], "type": h["type"], "amount_fen": h["amount_fen"],
                     "status": h["status"], "occurred_at": at(h["occurred_at"]), "received_at": at(h["received_at"])}
                    for h in history],
        "commissions": [{"distributor_code": c["code"], "depth": c["depth"], "rate": c["rate"],
                         "amount_fen": c["amount_fen"], "reversed_fen": c["reversed_fen"],
                         "state": "reversed" if c["reversed_fen"] >= c["amount_fen"] else c["state"],
                         "unfreeze_at": at(c["unfreeze_at"])} for c in comms],
    })


# ---- 订单 in chat ------------------------------------------------------------------------------
@feature.command("订单", "orders", menu=MenuKey.ORDERS)
@active_only
def on_orders(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    o, c = ORDERS.c, COMMISSIONS.c
    counts = dict((ctx.session.execute(
        select(o.status, func.count()).where(o.distributor_id == me.id).group_by(o.status))).all())
    if not counts:
        return Text("您还没有推广订单。回复“海报”获取专属推广海报，分享给朋友下单后，订单会显示在这里。")
    recent = (ctx.session.execute(
        select(o.order_no, o.status, o.amount_fen, o.refunded_fen, o.paid_at, c.amount_fen, c.reversed_fen)
        .outerjoin(COMMISSIONS, and_(c.order_no == o.order_no, c.distributor_id == me.id))
        .where(o.distributor_id == me.id).order_by(o.paid_at.desc(), o.order_no.desc()).limit(RECENT))).all()
    total = sum(counts.values())
    summary = " · ".join(f"{name} {counts[s]}" for s, name in STATUS_NAMES.items() if counts.get(s))
    lines = [f"我的订单：共 {total} 笔（{summary}）", f"最近 {len(recent)} 笔："]
    for status, name in STATUS_NAMES.items():
        group = [r for r in recent if r[1] == status]
        if not group:
            continue
        lines.append(f"【{name}】")
        for no, _, amount, refunded, paid_at, comm, rev in group:
            mine = (comm or 0) - (rev or 0)
            extra = f"（已退 {yuan(refunded)}）" if refunded and status != rules.REFUNDED else ""
            lines.append(f"{paid_at.astimezone(CHINA):%m-%d} {no} {yuan(amount)}{extra} 佣金 {yuan(mine)}")
    lines.append("回复“收益”查看收益明细。")
    return Text("\n".join(lines))
