"""Orders: the shop system's order events (POST /api/orders/events), the admin's view of an
order (GET /api/orders/{order_no}) and the distributor's 订单 report in chat.

Order events go through a group-commit queue: every event waiting when a batch starts shares one
transaction (see domain.orders), so the database sees one commit for many events.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.api import ApiError, ApiRoutes, json_body, ok
from bot.chat import Ctx, Incoming, Router
from domain.config import Config
from bot.menu import MenuKey
from bot.outbox import Outbox
from domain.messages import Text
from bot.typedefs import CONFIG, OUTBOX, SESSIONMAKER
from domain import commission as rules
from domain.formats import CHINA, china_time, yuan
from handlers.help import Me, active_only
from domain.orders import COMMISSIONS, EVENTS, ORDERS, EventIn, Rejected, apply_events, apply_events_sync
from storage.db import SqliteWriter
from storage.models import Distributor

log = logging.getLogger(__name__)
router = Router("orders")
api = ApiRoutes("orders")

MAX_BATCH = 200
LINGER_SECONDS = 0.002
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
@dataclass(eq=False)
class _Item:
    event: EventIn
    future: asyncio.Future[dict[str, Any] | Rejected]


class EventQueue:
    """Events waiting for a transaction. The first arrival starts a drain task that commits
    batches until the queue is empty; events arriving meanwhile join the next batch.

    On an SQLite file, a batch runs in one thread on a synchronous connection to the same file:
    one hop to that thread per batch, instead of a few hops to aiosqlite's thread per statement
    (SQLite serialises this writer with the app's own connections through BEGIN IMMEDIATE).
    On PostgreSQL it runs in an AsyncSession (asyncpg round trips are cheap)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], config: Config, outbox: Outbox | None):
        self._sessionmaker, self._config, self._outbox = sessionmaker, config, outbox
        self._queue: list[_Item] = []
        self._task: asyncio.Task[None] | None = None
        self._writer = SqliteWriter.for_url(config.database.url)
        if self._writer is not None:
            weakref.finalize(self, self._writer.close)

    async def submit(self, event: EventIn) -> dict[str, Any] | Rejected:
        item = _Item(event, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await asyncio.shield(item.future)

    async def _drain(self) -> None:
        last = 0
        while self._queue:
            if last > 1 and len(self._queue) < last:
                # Under load the answers to the last batch went out together and their senders'
                # next events are arriving now: wait a moment so they share one commit, instead
                # of alternating between a batch of one and a batch of the rest.
                await asyncio.sleep(LINGER_SECONDS)
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            last = len(batch)
            await self._commit(batch)
        if self._outbox is not None:
            self._outbox.wake()

    async def _apply(self, events: list[EventIn]) -> list[dict[str, Any] | Rejected]:
        notify = self._outbox is not None
        if self._writer is not None:
            return await self._writer.run(lambda conn: apply_events_sync(conn, self._config, events, notify=notify))
        async with self._sessionmaker() as session, session.begin():
            return await apply_events(session, self._config, events, notify=notify)

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            results = await self._apply([i.event for i in batch])
        except Exception as e:
            if len(batch) > 1:
                # One event spoiled the shared transaction (e.g. another process paid the same
                # order a moment earlier): redo each on its own so the others are not punished.
                for item in batch:
                    await self._commit([item])
                return
            log.exception("order event failed", extra={"event_id": batch[0].event.event_id})
            if not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)


_queues: weakref.WeakKeyDictionary[web.Application, EventQueue] = weakref.WeakKeyDictionary()


def event_queue(request: web.Request) -> EventQueue:
    """One queue per app, kept weakly on the /api sub-application (which the queue does not
    reference, so the queue goes when the app goes)."""
    q = _queues.get(request.app)
    if q is None:
        q = _queues[request.app] = EventQueue(request.config_dict[SESSIONMAKER], request.config_dict[CONFIG],
                                              request.config_dict[OUTBOX])
    return q


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
    result = await event_queue(request).submit(event)
    if isinstance(result, Rejected):
        raise ApiError(result.status, result.code, result.message, result.details)
    return ok(result)


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
@router.command("订单", "orders", menu=MenuKey.ORDERS)
@active_only
async def on_orders(msg: Incoming, ctx: Ctx, me: Me) -> Text:
    o, c = ORDERS.c, COMMISSIONS.c
    counts = dict((await ctx.session.execute(
        select(o.status, func.count()).where(o.distributor_id == me.id).group_by(o.status))).all())
    if not counts:
        return Text("您还没有推广订单。回复“海报”获取专属推广海报，分享给朋友下单后，订单会显示在这里。")
    recent = (await ctx.session.execute(
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
