"""Orders: the shop system's order events (POST /api/orders/events), the admin's view of an
order (GET /api/orders/{order_no}, and the console's 订单: a search by number, distributor, status
and paid day, and an order's page with its events, commissions and reversals, read by
domain.records like the API's) and the distributor's 订单 report in chat.

Order events go through group commit (storage.group_commit): the events that arrive together
share one transaction and a constant number of statements (domain.orders.apply_events), so the
database sees one commit for many events and a refused event leaves no trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from aiohttp import web
from pydantic import BaseModel, Field, RootModel
from sqlalchemy import and_, func, select

from kit.api import ApiModel, Instant, ok, text
from kit.auditing import note
from kit.chat import Ctx, Incoming, active_only
from kit.console import may_open, page, page_number
from kit.feature import Feature
from kit.menu import MenuKey
from kit.app_keys import CLOCK, PACKS, READER, WRITER
from kit.live_settings import live_config
from domain import commission as rules
from domain.formats import CHINA, china_time, yuan
from domain.messages import Text
from domain.orders import EventIn, apply_events
from domain.payouts import in_flight, in_flight_summary
from domain.catalogue import AUDIT, say
from domain.records import EVENT_NAMES, SHARE_NAMES, OrderFilter, find_orders, order_record, share_state
from domain.refusals import Refusal
from storage.group_commit import GroupCommit
from storage.models import Distributor
from storage.tables import COMMISSIONS, ORDERS

log = logging.getLogger(__name__)
feature = Feature("orders", scope="shop")
api = feature.api
ORDER_EVENTS = web.AppKey("order_events", GroupCommit[EventIn, dict[str, Any]])

RECENT = 10


# ---- the shape of an event -------------------------------------------------------------------
class _Event(ApiModel):
    """What every order event carries."""

    event_id: text(128) = Field(description="idempotency key")
    order_no: text(64)
    sku: text(64) | None = None
    buyer_openid: text(64) | None = None
    occurred_at: Instant | None = Field(None, description="ISO 8601 with a UTC offset")


class PaidEvent(_Event):
    type: Literal["paid"]
    amount_fen: int = Field(gt=0, le=10**12, description="the order amount")
    distributor_code: text(16) = Field(description="the distributor credited with the sale")


class RefundedEvent(_Event):
    type: Literal["refunded"]
    amount_fen: int = Field(gt=0, le=10**12, description="the refunded amount")


class LaterEvent(_Event):
    """shipped, completed or cancelled: amount_fen and distributor_code are ignored."""

    type: Literal["shipped", "completed", "cancelled"]


class OrderEvent(RootModel[Annotated[PaidEvent | RefundedEvent | LaterEvent, Field(discriminator="type")]], ApiModel):
    noun: ClassVar[str] = "event"

    def event_in(self) -> EventIn:
        e = self.root
        return EventIn(event_id=e.event_id, order_no=e.order_no, type=e.type,
                       amount_fen=e.amount_fen if isinstance(e, PaidEvent | RefundedEvent) else None,
                       distributor_code=e.distributor_code.upper() if isinstance(e, PaidEvent) else None,
                       sku=e.sku, buyer_openid=e.buyer_openid, occurred_at=e.occurred_at)


# ---- group commit ----------------------------------------------------------------------------
@feature.resource(ORDER_EVENTS)
async def order_events(app: web.Application) -> AsyncIterator[GroupCommit[EventIn, dict[str, Any]]]:
    library = app[PACKS]
    # The settings in force as each batch starts (kit.live_settings): one state for all its events.
    yield GroupCommit(app[WRITER], lambda session, events: apply_events(session, live_config(app), events,
                                                                               app[CLOCK].now(), library.unlocks))


# ---- /api/orders -----------------------------------------------------------------------------
_STATUS = Literal["paid", "shipped", "completed", "refunded", "cancelled"]


class CommissionShare(BaseModel):
    distributor_code: str
    depth: int
    amount_fen: int
    reversed_fen: int
    state: Literal["pending", "available", "reversed"]


class EventAnswer(BaseModel):
    order_no: str
    status: _STATUS
    duplicate: bool
    amount_fen: int
    refunded_fen: int
    commissions: list[CommissionShare]


class OrderStep(BaseModel):
    event_id: str
    type: _STATUS
    amount_fen: int | None
    status: _STATUS
    occurred_at: datetime | None
    received_at: datetime


class OrderCommission(CommissionShare):
    rate: str
    unfreeze_at: datetime | None


class OrderAnswer(BaseModel):
    order_no: str
    status: _STATUS
    amount_fen: int
    refunded_fen: int
    distributor_code: str
    sku: str | None
    buyer_openid: str | None
    paid_at: datetime
    completed_at: datetime | None
    history: list[OrderStep]
    commissions: list[OrderCommission]


@api.post("/orders/events",
          summary="Apply one order event from the shop (idempotent per event_id). 400: missing field or wrong "
                  "JSON type; 409: the order was already paid under another event_id; 422: bad value, unknown "
                  "distributor, unknown order or impossible transition (nothing stored)",
          body=OrderEvent, response=EventAnswer, errors=(409, 422))
async def post_order_event(request: web.Request, body: OrderEvent) -> web.Response:
    note(request, say(AUDIT, "order_event", name=EVENT_NAMES.get(body.root.type, body.root.type),
                       type=body.root.type, event_id=body.root.event_id), body.root.order_no)
    return ok(await request.config_dict[ORDER_EVENTS](body.event_in()))  # a refused event: its Refusal


@api.get("/orders/{order_no}", summary="One order with its status history and commissions", response=OrderAnswer,
         errors=(404,), scope=("shop", "finance"))  # its commissions are finance's matter too
async def get_order(request: web.Request) -> web.Response:
    order_no = request.match_info["order_no"]
    found = await request.config_dict[READER].run(lambda s: order_record(s, order_no))
    if found is None:
        raise Refusal("not_found", f"No order {order_no!r}.")
    o = found.order

    def at(v: datetime | None) -> str | None:
        return china_time(v) if v else None
    return ok({
        "order_no": o["order_no"], "status": o["status"], "amount_fen": o["amount_fen"],
        "refunded_fen": o["refunded_fen"], "distributor_code": o["code"], "sku": o["sku"],
        "buyer_openid": o["buyer_openid"], "paid_at": at(o["paid_at"]), "completed_at": at(o["completed_at"]),
        "history": [{"event_id": h["event_id"], "type": h["type"], "amount_fen": h["amount_fen"],
                     "status": h["status"], "occurred_at": at(h["occurred_at"]), "received_at": at(h["received_at"])}
                    for h in found.history],
        "commissions": [{"distributor_code": c["code"], "depth": c["depth"], "rate": c["rate"],
                         "amount_fen": c["amount_fen"], "reversed_fen": c["reversed_fen"], "state": share_state(c),
                         "unfreeze_at": at(c["unfreeze_at"])} for c in found.commissions],
    })


# ---- the console's 订单 -------------------------------------------------------------------------
@feature.console.get("/orders", scope=("shop", "finance"))
async def orders_page(request: web.Request) -> web.Response:
    """Orders found by number (exact or a prefix), distributor, status and paid day, latest first."""
    found, problems = OrderFilter.of(request.query)
    page_no = page_number(request)
    rows, more = await request.config_dict[READER].run(lambda s: find_orders(s, found, page_no))
    return page(request, "orders.html", title="订单", current="/orders", filters=found, problems=problems, rows=rows,
                more=more, page_no=page_no, status_names=rules.STATUS_NAMES)


@feature.console.get("/orders/{order_no}", scope=("shop", "finance"))
async def order_page(request: web.Request) -> web.Response:
    """One order: its events, its commissions per level and the reversals its refunds posted."""
    order_no = request.match_info["order_no"]
    found = await request.config_dict[READER].run(lambda s: order_record(s, order_no))
    names = {"status_names": rules.STATUS_NAMES, "event_names": EVENT_NAMES, "share_names": SHARE_NAMES,
             "share_state": share_state}
    if found is None:
        return page(request, "order.html", title="订单", current="/orders", status=404, record=None,
                    order_no=order_no, **names)
    return page(request, "order.html", title=f"订单 {order_no}", current="/orders", record=found,
                order_no=order_no, distributors=may_open(request, "/distributors"), **names)


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
    summary = " · ".join(f"{name} {counts[s]}" for s, name in rules.STATUS_NAMES.items() if counts.get(s))
    lines = [f"我的订单：共 {total} 笔（{summary}）", f"最近 {len(recent)} 笔："]
    for status, name in rules.STATUS_NAMES.items():
        group = [r for r in recent if r[1] == status]
        if not group:
            continue
        lines.append(f"【{name}】")
        for no, _, amount, refunded, paid_at, comm, rev in group:
            mine = (comm or 0) - (rev or 0)
            extra = f"（已退 {yuan(refunded)}）" if refunded and status != rules.REFUNDED else ""
            lines.append(f"{paid_at.astimezone(CHINA):%m-%d} {no} {yuan(amount)}{extra} 佣金 {yuan(mine)}")
    flying = in_flight(ctx.session, me.id)
    if flying:
        lines.append(f"提现中 {len(flying)} 笔，共 {yuan(sum(f[1] for f in flying))}"
                     f"{in_flight_summary(ctx.session, me.id, flying)}，回复“提现记录”查看。")
    lines.append("回复“收益”查看收益明细。")
    return Text("\n".join(lines))
