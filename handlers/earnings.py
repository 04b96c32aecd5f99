"""Earnings: the 收益 report with its 30-day chart, the admin's view of a distributor's ledger
(GET /api/distributors/{code}/ledger) and the job that makes commission available once its
freeze after completion is over.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, null, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.api import ApiError, ApiModel, ApiRoutes, ok
from bot.chat import Ctx, Incoming, Router
from bot.config import Config
from bot.menu import MenuKey
from bot.outbox import Outbox
from bot.replies import Image, Reply, Text
from bot.scheduler import job
from bot.typedefs import CONFIG, OUTBOX, SESSIONMAKER
from content.charts import render_earnings_chart
from handlers import commission as rules
from handlers.help import Me, active_only
from handlers.common import CHINA, china_time, yuan
from handlers.commission_notices import settle_and_notify
from handlers.order_events import COMMISSIONS, ORDERS
from storage.ledger import BALANCES, BUCKETS, ENTRIES, ZERO, Delta, apply_deltas, is_postgres
from storage.models_ledger import CommissionState, EntryKind
from storage.queries import distributor_by_code

router = Router("earnings")
api = ApiRoutes("ledger")

CHART_DAYS = 30
EARNING_KINDS = (EntryKind.COMMISSION, EntryKind.REVERSAL, EntryKind.REWARD, EntryKind.ADJUSTMENT)
UNFREEZE_CHUNK = 500


# ---- 收益 --------------------------------------------------------------------------------------
def daily_totals(rows: list[tuple[datetime, int]], today: date, days: int = CHART_DAYS) -> list[tuple[date, int]]:
    """Net earnings per China-time day for the `days` days ending today, oldest first."""
    per_day: dict[date, int] = defaultdict(int)
    for at, fen in rows:
        per_day[at.astimezone(CHINA).date()] += fen
    return [(d, per_day.get(d, 0)) for d in (today - timedelta(days=i) for i in range(days - 1, -1, -1))]


def _since(now: datetime) -> datetime:
    return min(rules.month_start(now), rules.day_start(now) - timedelta(days=CHART_DAYS - 1))


# One statement for the whole batch: each distributor's earnings entries since `since` (rows with
# a created_at), then their balance row (created_at NULL). Entries come first so that the union
# takes their column types (created_at read back as an aware datetime).
_SNAPSHOT = union_all(
    select(ENTRIES.c.distributor_id, ENTRIES.c.created_at, ENTRIES.c.amount_fen, *(null() for _ in BUCKETS))
    .where(ENTRIES.c.distributor_id.in_(bindparam("ids", expanding=True)),
           ENTRIES.c.created_at >= bindparam("since"), ENTRIES.c.kind.in_(EARNING_KINDS)),
    select(BALANCES.c.distributor_id, null(), null(), *(BALANCES.c[b] for b in BUCKETS))
    .where(BALANCES.c.distributor_id.in_(bindparam("ids", expanding=True))))


async def earnings_snapshot(session: AsyncSession, ids: list[int],
                            now: datetime) -> dict[int, tuple[dict[str, int], list[tuple[datetime, int]]]]:
    """Balances and the earnings entries since the month (or chart) start, for many distributors
    in one query: the dispatcher calls it once for every 收益 in a group commit."""
    balances: dict[int, dict[str, int]] = {}
    rows: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    conn = await session.connection()
    for did, at, fen, *buckets in await conn.execute(_SNAPSHOT, {"ids": ids, "since": _since(now)}):
        if at is not None:
            rows[did].append((at, fen))
        else:
            balances[did] = dict(zip(BUCKETS, buckets, strict=True))
    return {i: (balances.get(i) or dict(ZERO), rows.get(i, [])) for i in ids}


# A chart already sent is not sent again while it is the same picture; its upload is reused
# while the media is valid. Process-local: another process at worst sends one more chart.
CHART_REPEAT_SECONDS = 600
CHART_MEDIA_SECONDS = 3 * 24 * 3600 - 2 * 3600
_CHART_CACHE_SIZE = 10_000


class ChartMemo:
    """Charts sent lately (distributor, picture) and uploads still valid (picture -> media_id)."""

    def __init__(self) -> None:
        self.sent: OrderedDict[tuple[int, Any], float] = OrderedDict()
        self.media: OrderedDict[Any, tuple[str, float]] = OrderedDict()

    @staticmethod
    def remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CHART_CACHE_SIZE:
            cache.popitem(last=False)


@router.command("收益", "earnings", menu=MenuKey.EARNINGS, prefetch=earnings_snapshot)
@active_only
async def on_earnings(msg: Incoming, ctx: Ctx, me: Me) -> Text:
    today = rules.day_start(ctx.now)
    month = rules.month_start(ctx.now)
    balance, rows = ctx.prefetched or (await earnings_snapshot(ctx.session, [me.id], ctx.now))[me.id]
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
        lines.append(f"提现审核中：{yuan(balance['withdrawing_fen'])}")
    if balance["withdrawn_fen"]:
        lines.append(f"已提现：{yuan(balance['withdrawn_fen'])}")
    lines.append(f"回复“提现 金额”申请提现，单笔至少 {yuan(dist.min_withdraw_fen)}。")
    if rows or all_time:
        days = daily_totals(rows, today.date())
        digest = tuple(days)  # the picture itself is the key: no collision can swap two charts
        memo = ctx.memo.setdefault("earnings.charts", ChartMemo())
        clock = time.monotonic()
        sent = memo.sent.get((me.id, digest))
        if sent is not None and clock - sent < CHART_REPEAT_SECONDS:
            lines.append("近 30 天收益图与刚才发给您的一样。")
        else:
            ctx.after_commit(_chart_sender(ctx.wechat, memo, me.id, days, digest))
            lines.append("近 30 天收益图马上发给您。")
    return Text("\n".join(lines))


def _chart_sender(wechat: Any, memo: ChartMemo, distributor_id: int, days: list[tuple[date, int]],
                  digest: Any) -> Callable[[], Awaitable[Reply]]:
    async def send_chart() -> Reply:
        # Remembered once committed: a transaction undone and run again must still send it.
        memo.remember(memo.sent, (distributor_id, digest), time.monotonic())
        cached = memo.media.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return Image(cached[0])
        png = await asyncio.to_thread(render_earnings_chart, days)
        media_id = await wechat.upload_image(png, "earnings.png", "image/png")
        memo.remember(memo.media, digest, (media_id, time.monotonic() + CHART_MEDIA_SECONDS))
        return Image(media_id)
    return send_chart


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
    async with request.config_dict[SESSIONMAKER]() as session, session.begin():
        d = await distributor_by_code(session, request.match_info["code"])
        if d is None:
            raise ApiError(404, "not_found", f"No distributor has the code {request.match_info['code']!r}.")
        e = ENTRIES.c
        stmt = (select(e.id, e.kind, e.amount_fen, e.order_no, e.created_at)
                .where(e.distributor_id == d.id, e.id > after_id).order_by(e.id))
        rows = (await session.execute(stmt.limit(limit) if limit else stmt)).all()
    return ok({"entries": [{"id": i, "kind": k, "amount_fen": a, "order_no": o, "created_at": china_time(at)}
                           for i, k, a, o, at in rows]})


# ---- unfreezing ------------------------------------------------------------------------------------
async def unfreeze_due(sessionmaker: async_sessionmaker[AsyncSession], config: Config, outbox: Outbox | None,
                       now: datetime | None = None) -> int:
    """Make every commission whose freeze is over available; the number of commissions moved.

    Safe to run twice and at any time: it moves what is due and not yet moved, so it also
    catches up after downtime. Orders are locked before their commissions are read, the same
    order as the order events take, so a refund arriving meanwhile cannot be lost."""
    now = now or datetime.now(UTC)
    moved = 0
    c = COMMISSIONS.c
    while True:
        async with sessionmaker() as session, session.begin():
            due = (select(c.order_no).where(c.state == CommissionState.PENDING, c.unfreeze_at <= now)
                   .order_by(c.order_no).limit(UNFREEZE_CHUNK))
            nos = list(dict.fromkeys((await session.execute(due)).scalars()))
            if not nos:
                return moved
            if is_postgres(session):
                await session.execute(select(ORDERS.c.order_no).where(ORDERS.c.order_no.in_(nos))
                                      .order_by(ORDERS.c.order_no).with_for_update())
            rows = (await session.execute(
                select(c.order_no, c.distributor_id, c.amount_fen - c.reversed_fen)
                .where(c.order_no.in_(nos), c.state == CommissionState.PENDING, c.unfreeze_at <= now))).all()
            await session.execute(
                update(COMMISSIONS).where(c.order_no == bindparam("c_no"), c.distributor_id == bindparam("c_did"))
                .values(state=CommissionState.AVAILABLE),
                [{"c_no": no, "c_did": did} for no, did, _ in rows])
            freed: dict[int, int] = defaultdict(int)
            for _, did, rest in rows:
                freed[did] += rest
            await apply_deltas(session, {did: Delta(pending_fen=-fen, available_fen=fen) for did, fen in freed.items()})
            await session.run_sync(lambda s: settle_and_notify(s.connection(), config, now, credited={}, freed=freed,
                                                               notify=outbox is not None))
            moved += len(rows)
        if outbox is not None:
            outbox.wake()


@job("unfreeze-commission", "interval", minutes=1)
async def unfreeze_job(app: web.Application) -> Any:
    return await unfreeze_due(app[SESSIONMAKER], app[CONFIG], app[OUTBOX])


jobs = [unfreeze_job]
