"""Earnings: the 收益 report with its 30-day chart, the admin's view of a distributor's ledger
(GET /api/distributors/{code}/ledger) and the job that makes commission available once its
freeze after completion is over.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web
from cachetools import TTLCache
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, literal_column, null, or_, select, union_all, update
from sqlalchemy.orm import Session

from kit.api import ApiModel, actor_of, ok, text
from kit.chat import Ctx, Incoming, Later, active_only
from kit.feature import Feature
from kit.menu import MenuKey
from kit.app_keys import CLOCK, READER, WRITER
from kit.live_settings import live_config
from wechat.wechat_keys import WECHAT
from wechat.client import WeChatAPI
from content.charts import render_earnings_chart
from domain.config import Config
from domain.distributors import known_distributor
from domain.figures import ENTRY_COUNTED_AT, daily_totals, posted_from
from domain.formats import china_time, day_start, month_start, yuan
from domain.ledger import BUCKETS, EARNING_KINDS, MAX_ADJUSTMENT_FEN, ZERO, Delta, add_to_balances
from domain.messages import Image, Reply, Text
from domain.notices import Credits, adjust_and_tell, settle_and_notify
from domain.payouts import in_flight_summary
from domain.refusals import Refusal
from domain.team_bonus import month_so_far
from storage.db import is_postgres
from storage.models import Distributor
from storage.models_ledger import CommissionState, EntryKind
from storage.tables import BALANCES, COMMISSIONS, ENTRIES, ORDERS
from storage.writer import Writer

feature = Feature("earnings", scope="finance")  # the ledger and adjustments
api = feature.api

CHART_DAYS = 30
DETAILS_HINT = "回复“明细”查看每一笔收支。"  # 收益 ends pointing to 明细 (handlers.details)
MAX_REASON = 200
UNFREEZE_CHUNK = 500
UNFREEZE_EVERY_SECONDS = 3


# ---- 收益 --------------------------------------------------------------------------------------
def _since(now: datetime) -> datetime:
    return min(month_start(now), day_start(now) - timedelta(days=CHART_DAYS - 1))


# One statement for everyone asking in a group commit: their earnings entries counted since `since`
# (rows with the time they count at, domain.figures.ENTRY_COUNTED_AT), then their balance rows
# (time NULL). Entries come first so that the union takes their column types (read back as an
# aware datetime).
_SNAPSHOT = union_all(
    select(ENTRIES.c.distributor_id, ENTRY_COUNTED_AT, ENTRIES.c.amount_fen, *(null() for _ in BUCKETS))
    .where(ENTRIES.c.distributor_id.in_(bindparam("ids", expanding=True)), ENTRIES.c.created_at >= bindparam("posted"),
           ENTRY_COUNTED_AT >= bindparam("since"),
           # constants in the SQL: an IN list of parameters would be expanded again on every call
           or_(*(ENTRIES.c.kind == literal_column(f"'{kind.value}'") for kind in EARNING_KINDS))),
    select(BALANCES.c.distributor_id, null(), null(), *(BALANCES.c[b] for b in BUCKETS))
    .where(BALANCES.c.distributor_id.in_(bindparam("ids", expanding=True))))


def earnings_snapshots(session: Session, ids: list[int],
                       now: datetime) -> dict[int, tuple[dict[str, int], list[tuple[datetime, int]]]]:
    """Balances and the earnings entries counted since the month (or chart) start, for many
    distributors in one query (the 收益 command's preload)."""
    balances: dict[int, dict[str, int]] = {}
    rows: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    since = _since(now)
    params = {"ids": ids, "since": since, "posted": posted_from(since)}
    for did, at, fen, *buckets in session.connection().execute(_SNAPSHOT, params):
        if at is not None:
            rows[did].append((at, fen))
        else:
            balances[did] = dict(zip(BUCKETS, buckets, strict=True))
    return {i: (balances.get(i) or dict(ZERO), rows.get(i, [])) for i in ids}


# A chart already sent is not sent again while it is the same picture; its upload is reused
# while the media is valid. Process-local: another process at worst sends one more chart.
CHART_REPEAT_SECONDS = 600
CHART_MEDIA_SECONDS = 3 * 24 * 3600 - 2 * 3600
CHARTS_REMEMBERED = 10_000


@dataclass
class Charts:
    """Charts sent lately, (distributor, picture), and uploads still valid, picture -> media_id."""

    sent: TTLCache[tuple[int, Any], bool] = field(
        default_factory=lambda: TTLCache(maxsize=CHARTS_REMEMBERED, ttl=CHART_REPEAT_SECONDS))
    media: TTLCache[Any, str] = field(
        default_factory=lambda: TTLCache(maxsize=CHARTS_REMEMBERED, ttl=CHART_MEDIA_SECONDS))


CHARTS = web.AppKey("earnings_charts", Charts)


@feature.resource(CHARTS)
async def charts(app: web.Application) -> AsyncIterator[Charts]:
    yield Charts()


@feature.command("收益", "earnings", menu=MenuKey.EARNINGS, preload=earnings_snapshots)
@active_only
def on_earnings(msg: Incoming, ctx: Ctx, me: Distributor) -> Text | Later:
    today = day_start(ctx.now)
    month = month_start(ctx.now)
    balance, rows = ctx.load(earnings_snapshots, me.id)
    today_fen = sum(f for at, f in rows if at >= today)
    month_fen = sum(f for at, f in rows if at >= month)
    # Every entry that is not a withdrawal is an earning, so all-time earnings are the four
    # balances together (withdrawals only move money between them).
    all_time = sum(balance.values())
    dist = ctx.config.distribution
    freeze = "订单完成后即可提现" if dist.freeze_days == 0 else f"订单完成 {dist.freeze_days} 天后可提现"
    lines = [f"{me.name}的收益", f"今日：{yuan(today_fen)}", f"本月：{yuan(month_fen)}", f"累计：{yuan(all_time)}",
             "", f"待结算：{yuan(balance['pending_fen'])}（{freeze}）", f"可提现：{yuan(balance['available_fen'])}"]
    if balance["withdrawing_fen"]:
        lines.append(f"提现中：{yuan(balance['withdrawing_fen'])}{in_flight_summary(ctx.session, me.id)}")
    if balance["withdrawn_fen"]:
        lines.append(f"已提现：{yuan(balance['withdrawn_fen'])}")
    lines += month_so_far(ctx.session, ctx.config, me.id, ctx.now)  # the team bonus, with tiers configured
    lines.append(f"回复“提现 金额”申请提现，单笔至少 {yuan(dist.min_withdraw_fen)}。")
    if not (rows or all_time):
        return Text("\n".join([*lines, DETAILS_HINT]))
    days = daily_totals(rows, today.date(), CHART_DAYS)
    digest = tuple(days)  # the picture itself is the key: no collision can swap two charts
    memo = ctx.app[CHARTS]
    if (me.id, digest) in memo.sent:
        lines.append("近 30 天收益图与刚才发给您的一样。")
        return Text("\n".join([*lines, DETAILS_HINT]))
    lines.append("近 30 天收益图马上发给您。")
    wechat = ctx.app[WECHAT]
    return Later(lambda: send_chart(wechat, memo, me.id, days, digest),
                 first=Text("\n".join([*lines, DETAILS_HINT])))


async def send_chart(wechat: WeChatAPI, memo: Charts, distributor_id: int, days: list[tuple[date, int]],
                     digest: Any) -> Reply:
    # Remembered once committed: a transaction undone and run again must still send it.
    memo.sent[(distributor_id, digest)] = True
    media_id = memo.media.get(digest)
    if media_id is None:
        png = await asyncio.to_thread(render_earnings_chart, days)
        media_id = memo.media[digest] = await wechat.upload_image(png, "earnings.png", "image/png")
    return Image(media_id)


# ---- /api/distributors/{code}/ledger ---------------------------------------------------------------
class LedgerEntry(BaseModel):
    id: int
    kind: EntryKind
    amount_fen: int
    order_no: str | None
    created_at: datetime


class Ledger(BaseModel):
    entries: list[LedgerEntry]


class LedgerQuery(ApiModel):
    # The upper bounds keep both within a 64-bit integer, as the database needs.
    after_id: int = Field(0, ge=0, le=2**63 - 1, description="only entries with a larger id (paging)")
    limit: int | None = Field(None, ge=1, le=2**63 - 1, description="at most this many entries")


@api.get("/distributors/{code}/ledger",
         summary="A distributor's ledger entries, oldest first (signed fen: commission, reward, withdrawal_refund "
                 "+; reversal, withdrawal −; adjustment ±)",
         query=LedgerQuery, response=Ledger, errors=(404,))
async def get_ledger(request: web.Request, query: LedgerQuery) -> web.Response:
    after_id, limit = query.after_id, query.limit
    code = request.match_info["code"]

    def read(session: Session) -> list[Any]:
        d = known_distributor(session, code)
        e = ENTRIES.c
        stmt = (select(e.id, e.kind, e.amount_fen, e.order_no, e.created_at)
                .where(e.distributor_id == d.id, e.id > after_id).order_by(e.id))
        return list(session.execute(stmt.limit(limit) if limit else stmt).all())
    rows = await request.config_dict[READER].run(read, slow=limit is None)  # a whole ledger when unbounded
    return ok({"entries": [{"id": i, "kind": k, "amount_fen": a, "order_no": o, "created_at": china_time(at)}
                           for i, k, a, o, at in rows]})


class AdjustmentIn(ApiModel):
    noun: ClassVar[str] = "adjustment"
    # Optional in the schema so that zero and a missing reason are both answered 422 (§4.1).
    amount_fen: int = Field(ge=-MAX_ADJUSTMENT_FEN, le=MAX_ADJUSTMENT_FEN, description="signed fen, not zero")
    reason: text(MAX_REASON) | None = Field(None, description="required; told to the distributor")


class AdjustmentOut(LedgerEntry):
    reason: str
    actor: str


@api.post("/distributors/{code}/adjustments",
          summary="Post an adjustment (± fen, counted in available) with a reason; 422 for zero or no reason",
          body=AdjustmentIn, response=AdjustmentOut, status=201, errors=(404,))
async def post_adjustment(request: web.Request, body: AdjustmentIn) -> web.Response:
    problems = []
    if body.amount_fen == 0:
        problems.append({"field": "amount_fen", "problem": "must not be zero"})
    if body.reason is None:
        problems.append({"field": "reason", "problem": "a reason is required"})
    if problems:
        raise Refusal("invalid_adjustment", "The adjustment has invalid values.", details=problems)
    code, actor = request.match_info["code"], actor_of(request)

    def apply(session: Session) -> dict[str, Any]:
        d = known_distributor(session, code)
        entry = adjust_and_tell(session, d.id, d.openid, body.amount_fen, body.reason or "", actor, request.config_dict[CLOCK].now())
        return {**entry, "created_at": china_time(entry["created_at"])}
    return ok(await request.config_dict[WRITER].run(apply), status=201)


# ---- unfreezing ------------------------------------------------------------------------------------
# Pending commissions whose freeze is over by :until (ix_commissions_due), built once.
_DUE = select(COMMISSIONS.c.order_no).where(COMMISSIONS.c.state == CommissionState.PENDING,
                                            COMMISSIONS.c.unfreeze_at <= bindparam("until"))
_DUE_ANY, _DUE_CHUNK = _DUE.limit(1), _DUE.order_by(COMMISSIONS.c.order_no).limit(UNFREEZE_CHUNK)


def unfreeze_some(session: Session, config: Config, now: datetime, until: datetime) -> int:
    """Make up to UNFREEZE_CHUNK commissions whose freeze is over by `until` available (their
    notices are queued `now`); how many moved.
    Orders are locked before their commissions are read, the same order as the order events
    take, so a refund arriving meanwhile cannot be lost."""
    c = COMMISSIONS.c
    nos = list(dict.fromkeys(session.execute(_DUE_CHUNK, {"until": until}).scalars()))
    if not nos:
        return 0
    if is_postgres(session):
        session.execute(select(ORDERS.c.order_no).where(ORDERS.c.order_no.in_(nos))
                        .order_by(ORDERS.c.order_no).with_for_update())
    rows = session.execute(select(c.order_no, c.distributor_id, c.amount_fen - c.reversed_fen)
                           .where(c.order_no.in_(nos), c.state == CommissionState.PENDING,
                                  c.unfreeze_at <= until)).all()
    session.execute(update(COMMISSIONS).where(c.order_no == bindparam("c_no"), c.distributor_id == bindparam("c_did"))
                    .values(state=CommissionState.AVAILABLE), [{"c_no": no, "c_did": did} for no, did, _ in rows])
    credits = Credits()
    for _, did, rest in rows:
        credits.freed[did] += rest
    add_to_balances(session, {did: Delta(pending_fen=-fen, available_fen=fen) for did, fen in credits.freed.items()})
    settle_and_notify(session, config, now, credits)
    return len(rows)


async def unfreeze_due(writer: Writer, config: Config, now: datetime, *, until: datetime | None = None) -> int:
    """Make every commission whose freeze is over (`now`, or as of `until`) available; the number
    of commissions moved. Safe to run twice and at any time: it moves what is due and not yet
    moved, so it also catches up after downtime."""
    moved, until = 0, until or now
    while chunk := await writer.run(lambda session: unfreeze_some(session, config, now, until), slow=True):
        moved += chunk
    return moved


# Every few seconds, so that 佣金已解冻 reaches a distributor within 5 s of their freeze's end
# (CONTRACT §5): a run with nothing due is one indexed read.
@feature.job("unfreeze", "interval", seconds=UNFREEZE_EVERY_SECONDS)
async def unfreeze_job(app: web.Application) -> int:
    now = app[CLOCK].now()
    if await app[READER].run(lambda session: session.execute(_DUE_ANY, {"until": now}).first()) is None:
        return 0  # read on a snapshot: no write lock taken every few seconds for nothing
    return await unfreeze_due(app[WRITER], live_config(app), now)
