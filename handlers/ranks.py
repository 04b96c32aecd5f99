"""Ranks: 等级 in chat (the rank, its rates and rights, and what the next one needs, with progress
bars), the daily `ranks` job that promotes whoever has crossed a line (a completed order promotes
at once, domain.orders), and an admin's rank change with its history (CONTRACT §3, §4.1).
"""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from typing import Any, ClassVar

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from kit.api import ApiModel, actor_of, ok, text
from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from kit.menu import MenuKey
from kit.app_keys import CLOCK, PACKS, READER, WRITER
from kit.live_settings import live_config
from domain.distributors import DistributorAnswer, distributor_json, known_distributor
from domain.figures import personal_sales, teams
from domain.formats import china_time, yuan
from domain.messages import Text
from domain.promotion import change_rank, promote, rates_lines, rights_lines
from domain.ranks import RankGap, next_rank_gap
from domain.refusals import Refusal
from storage.models import Distributor, DistributorStatus
from storage.tables import DISTRIBUTORS, RANK_CHANGES

feature = Feature("ranks", scope="admin")  # changing a rank by hand
api = feature.api

BAR_CELLS = 10
JOB_BATCH = 1000
MAX_REASON = 200


# ---- 等级 --------------------------------------------------------------------------------------
def bar(progress: Fraction) -> str:
    """▓▓▓▓▓▓░░░░ 66%: whole cells and whole percent, rounded down (100% only when it is met)."""
    filled = int(progress * BAR_CELLS)
    return "▓" * filled + "░" * (BAR_CELLS - filled) + f" {int(progress * 100)}%"


def gap_lines(gap: RankGap, sales_fen: int, team_size: int, need_sales: int, need_team: int) -> list[str]:
    lines = [f"下一等级：【{gap.name}】"]
    if need_sales:
        missing = f"，还差 {yuan(gap.missing_sales_fen)}" if gap.missing_sales_fen else "，已达标"
        lines += [f"个人销售 {yuan(sales_fen)} / {yuan(need_sales)}{missing}", bar(gap.sales_progress)]
    if need_team:
        missing = f"，还差 {gap.missing_members} 人" if gap.missing_members else "，已达标"
        lines += [f"直接邀请的活跃分销员 {team_size} / {need_team} 人{missing}", bar(gap.team_progress)]
    return lines


@feature.command("等级", "rank", menu=MenuKey.RANK)
@active_only
def on_rank(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    config = ctx.config
    rank = config.rank(me.rank)
    sales = personal_sales(ctx.session, [me.id]).get(me.id, 0)
    team = teams(ctx.session, [me.id], []).get(me.id, (0, []))[0]
    lines = [f"【我的等级】{rank.name}", "佣金比例：", *rates_lines(config, rank)]
    rights = rights_lines(ctx.session, config, rank, ctx.app[PACKS].unlocks)
    if rights:
        lines += ["等级权益：", *(f"· {r}" for r in rights)]
    gap = next_rank_gap(config.ranks, rank.key, sales, team)
    if gap is None:
        lines.append("您已是最高等级，感谢您的付出！")
        return Text("\n".join(lines))
    nxt = config.rank(gap.key)
    lines += ["", *gap_lines(gap, sales, team, nxt.min_sales_fen, nxt.min_team_size)]
    if gap.met:
        lines.append("您已满足升级条件，系统会在几秒内为您升级。")
    else:
        lines.append(f"个人销售按已完成订单计（扣除退款）。升级后佣金比例：{'，'.join(rates_lines(config, nxt))}。")
    return Text("\n".join(lines))


# ---- the daily job ------------------------------------------------------------------------------
def _candidates(session: Session, top: str, after: int) -> list[int]:
    d = DISTRIBUTORS.c
    return list(session.scalars(select(d.id).where(d.id > after, d.status == DistributorStatus.ACTIVE, d.rank != top)
                                .order_by(d.id).limit(JOB_BATCH)))


@feature.job("ranks", "cron", hour=2)
async def evaluate_ranks(app: web.Application) -> int:
    """Promote everyone whose figures meet a higher rank, JOB_BATCH distributors a unit; the
    number promoted. Whoever was promoted already is left as they are (promotion is idempotent)."""
    config, library = live_config(app), app[PACKS]
    top, after, promoted = config.ranks[-1].key, 0, 0
    while ids := await app[READER].run(lambda s, after=after: _candidates(s, top, after)):
        changed = await app[WRITER].run(
            lambda s, ids=ids: promote(s, config, ids, app[CLOCK].now(), unlocks=library.unlocks), slow=True)
        promoted += len(changed)
        after = ids[-1]
    return promoted


# ---- the admin's rank change and the history -------------------------------------------------------
class RankSet(ApiModel):
    noun: ClassVar[str] = "rank_change"
    rank: str = Field(min_length=1, max_length=32, description="a rank key from config")
    # Optional in the schema so that a missing reason is answered 422 like an empty one (§4.1).
    reason: text(MAX_REASON) | None = Field(None, description="required: kept with the change")


class RankChangeOut(BaseModel):
    id: int
    old_rank: str
    new_rank: str
    reason: str
    actor: str
    created_at: datetime


class RankHistory(BaseModel):
    changes: list[RankChangeOut]


def _change_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "old_rank": row.old_rank, "new_rank": row.new_rank, "reason": row.reason,
            "actor": row.actor, "created_at": china_time(row.created_at)}


def _found(session: Session, code: str) -> Distributor:
    return known_distributor(session, code)


@api.post("/distributors/{code}/rank",
          summary="Set a distributor's rank, up or down, with a reason kept with who did it and when; "
                  "422 for an unknown rank or no reason",
          body=RankSet, response=DistributorAnswer, errors=(404,))
async def set_rank(request: web.Request, body: RankSet) -> web.Response:
    config, library, actor = live_config(request.config_dict), request.config_dict[PACKS], actor_of(request)
    known = [r.key for r in config.ranks]
    problems = []
    if body.rank not in known:
        problems.append({"field": "rank", "problem": f"unknown rank {body.rank!r}; configured ranks: {', '.join(known)}"})
    if body.reason is None:
        problems.append({"field": "reason", "problem": "a reason is required"})
    if problems:
        raise Refusal("invalid_rank_change", "The rank change has invalid values.", details=problems)
    code = request.match_info["code"]

    def apply(session: Session) -> dict[str, Any]:
        d = _found(session, code)
        change_rank(session, config, d.id, d.openid, d.rank, body.rank, request.config_dict[CLOCK].now(), reason=body.reason or "",
                    actor=actor, unlocks=library.unlocks)
        session.refresh(d)
        return distributor_json(session, d)
    return ok(await request.config_dict[WRITER].run(apply))


@api.get("/distributors/{code}/rank-changes", summary="A distributor's rank history, oldest first",
         response=RankHistory, errors=(404,), scope=("finance", "ops"))  # readable where distributors are
async def rank_history(request: web.Request) -> web.Response:
    code = request.match_info["code"]

    def read(session: Session) -> dict[str, Any]:
        d = _found(session, code)
        rows = session.execute(select(RANK_CHANGES).where(RANK_CHANGES.c.distributor_id == d.id)
                               .order_by(RANK_CHANGES.c.id)).all()
        return {"changes": [_change_json(r) for r in rows]}
    return ok(await request.config_dict[READER].run(read))
