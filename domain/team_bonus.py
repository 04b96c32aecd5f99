"""Paying the monthly team bonus (CONTRACT §8, rules in domain.plans), set-based:

1. `stage`: one aggregate statement per month, INSERT ... SELECT into team_bonuses of every active
   distributor whose active direct members' sales in the month (paid in it, China time, less
   refunds, a cancelled order nothing: domain.figures' count) reach the first tier; a row already
   there is left alone, so a second run adds nothing.
2. `pay_some`: a chunk of staged rows not yet paid, in id order: each one's bonus by the tiers (the
   highest reached applies to all of it, capped), its `reward` entry (ref `team-bonus:YYYY-MM`, the
   ledger's unique key), its balance, its notice and the row marked paid, in one unit. Memory holds a
   chunk; a run killed between chunks resumes where the last committed chunk ended; two processes
   at once take different rows (SKIP LOCKED on PostgreSQL).

`team_sales` is the same count for a few distributors (收益 and the weekly report's estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, literal, select, update
from sqlalchemy.orm import Session

from domain.config import Config
from domain.figures import COUNTED, SALE_FEN
from domain.ledger import Delta, add_to_balances, append_entries
from domain.messages import Text
from domain.outbox_rows import Queued, enqueue_many, template_data
from domain.plans import bonus_lines, reward_ref, team_bonus_fen
from domain.formats import Month, month_of, yuan
from storage.db import dialect_insert, is_postgres
from storage.models import DistributorStatus
from storage.models_ledger import EntryKind
from storage.tables import DISTRIBUTORS, ORDERS, TEAM_BONUSES

CHUNK = 5000
_member, _inviter, _o, _b = DISTRIBUTORS.alias("member"), DISTRIBUTORS.alias("inviter"), ORDERS.c, TEAM_BONUSES.c
_SUM = func.sum(SALE_FEN)


def _team_month(month: Month) -> Any:
    """(inviter id, team sales) of the month, grouped by active inviter over their active direct members."""
    return (select(_inviter.c.id, _SUM)
            .select_from(ORDERS.join(_member, _member.c.id == _o.distributor_id)
                         .join(_inviter, _inviter.c.id == _member.c.inviter_id))
            .where(_o.paid_at >= month.start, _o.paid_at < month.end, COUNTED,
                   _member.c.status == DistributorStatus.ACTIVE, _inviter.c.status == DistributorStatus.ACTIVE)
            .group_by(_inviter.c.id))


def team_sales(session: Session, ids: Sequence[int], month: Month) -> dict[int, int]:
    """These distributors' team sales in the month (so far); those without any are left out."""
    if not ids:
        return {}
    stmt = _team_month(month).where(_inviter.c.id.in_(list(ids)))
    return {did: int(fen or 0) for did, fen in session.execute(stmt)}


def month_so_far(session: Session, config: Config, distributor_id: int, now: datetime) -> list[str]:
    """收益's and the weekly report's lines on this month's team bonus so far (none without tiers)."""
    if not config.rewards.team_tiers:
        return []
    month = month_of(now)
    return bonus_lines(team_sales(session, [distributor_id], month).get(distributor_id, 0), config.rewards)


def stage(session: Session, config: Config, month: Month, now: datetime) -> int:
    """The month's rows of everyone whose team reached the first tier (one statement); how many it added."""
    tiers = config.rewards.team_tiers
    if not tiers:
        return 0
    query = (_team_month(month).having(_SUM >= tiers[0].min_team_sales_fen)
             .add_columns(literal(month.key), literal(now, type_=_b.created_at.type)))
    insert = dialect_insert(session, TEAM_BONUSES).from_select(
        ["distributor_id", "team_sales_fen", "month", "created_at"], query)
    return session.execute(insert.on_conflict_do_nothing(index_elements=["month", "distributor_id"])).rowcount


_DUE = (select(_b.distributor_id, _b.team_sales_fen, DISTRIBUTORS.c.openid)
        .join(DISTRIBUTORS, DISTRIBUTORS.c.id == _b.distributor_id)
        .where(_b.month == bindparam("month"), _b.paid_at.is_(None), _b.distributor_id > bindparam("after"))
        .order_by(_b.distributor_id).limit(CHUNK))
_MARK = (update(TEAM_BONUSES).where(_b.month == bindparam("m"), _b.distributor_id == bindparam("did"))
         .values(bonus_fen=bindparam("fen"), paid_at=bindparam("at")))


def pay_some(session: Session, config: Config, month: Month, after: int, now: datetime) -> int | None:
    """Pay the next chunk of the month's staged rows after distributor id `after`: the last id
    looked at, or None when none was left."""
    due = _DUE.with_for_update(of=TEAM_BONUSES, skip_locked=True) if is_postgres(session) else _DUE
    rows = session.execute(due, {"month": month.key, "after": after}).all()
    if not rows:
        return None
    rewards = config.rewards
    paid = [(did, openid, team_bonus_fen(sales, rewards.team_tiers, rewards.team_cap_fen))
            for did, sales, openid in rows]
    won = [(did, openid, fen) for did, openid, fen in paid if fen > 0]
    append_entries(session, [{"distributor_id": did, "kind": EntryKind.REWARD, "amount_fen": fen, "ref": reward_ref(month),
                              "created_at": now} for did, _, fen in won])
    add_to_balances(session, {did: Delta(available_fen=fen) for did, _, fen in won})
    session.execute(_MARK, [{"m": month.key, "did": did, "fen": fen, "at": now} for did, _, fen in paid])
    notices = []
    for did, openid, fen in won:
        text = Text(f"团队奖励到账：{month.year}年{month.month}月直属团队业绩奖励 {yuan(fen)} 已计入您的可提现余额，"
                    "回复“收益”查看。")
        notices.append(Queued(f"{reward_ref(month)}:{did}", openid, text, template_data(text, "团队奖励到账")))
    enqueue_many(session, notices, now=now)
    return int(rows[-1].distributor_id)
