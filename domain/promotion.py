"""Rank changes with their I/O: automatic promotion (CONTRACT §3) and an admin's move, each kept
in rank_changes with its reason, who did it and when, and told to the distributor in chat.

Promotion reads the figures as domain.figures counts them and decides by the pure rule of
domain.ranks; it only ever goes up. A change is one guarded update (`... WHERE rank = old`), so
two processes promoting the same distributor at once change it once and tell it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.orm import Session

from domain.config import Config
from domain.config_sections import RankConfig
from domain.figures import rank_figures
from domain.formats import yuan
from domain.messages import Text
from domain.outbox_rows import enqueue, template_data
from domain.ranks import rank_index, rank_reached
from storage.tables import DISTRIBUTORS, RANK_CHANGES

SYSTEM = "system"
# What a rank unlocks besides its rates, from the live content (posters, scripts, trainings that
# name it): (session, rank key) -> lines such as "专属培训：《黄金进阶课》". Given by the caller,
# which knows the content library; the domain does not.
Unlocks = Callable[[Session, str], list[str]]
DEPTH_NAMES = ("自己推广的订单", "直接邀请的分销员的订单", "间接邀请的分销员的订单")


def no_unlocks(session: Session, rank: str) -> list[str]:
    return []


@dataclass(frozen=True)
class RankChanged:
    distributor_id: int
    old_rank: str
    new_rank: str
    change_id: int


def percent(rate: Decimal) -> str:
    """0.15 → "15%", 0.025 → "2.5%"."""
    return f"{format((rate * 100).normalize(), 'f')}%"


def rates_lines(config: Config, rank: RankConfig) -> list[str]:
    """The rank's commission rates by depth, as far as max_levels reaches (a depth without a rate
    earns nothing and is not listed)."""
    levels = min(config.distribution.max_levels, len(rank.rates))
    return [f"{DEPTH_NAMES[d]}：{percent(rank.rates[d])}" for d in range(levels) if rank.rates[d] > 0]


def rights_lines(session: Session, config: Config, rank: RankConfig, unlocks: Unlocks) -> list[str]:
    """What a rank gives besides its rates: priority service, content only it gets."""
    lines = []
    if rank.key in config.service.priority_ranks:
        lines.append(f"客服优先：您的问题都按紧急处理，{config.service.urgent_minutes} 分钟内响应")
    return lines + unlocks(session, rank.key)


def _notice(session: Session, config: Config, old: str, new: str, unlocks: Unlocks) -> Text:
    rank = config.rank(new)
    if rank_index(config.ranks, new) < rank_index(config.ranks, old):
        return Text(f"您的分销等级已调整为【{rank.name}】。\n佣金比例：\n" + "\n".join(rates_lines(config, rank))
                    + "\n回复“等级”查看详情，有疑问请回复“客服 您的问题”。")
    lines = [f"恭喜您升级为【{rank.name}】！", "新的佣金比例：", *rates_lines(config, rank)]
    rights = rights_lines(session, config, rank, unlocks)
    if rights:
        lines += ["解锁权益：", *(f"· {r}" for r in rights)]
    lines.append("回复“等级”查看详情。")
    return Text("\n".join(lines))


def change_rank(session: Session, config: Config, distributor_id: int, openid: str, old: str, new: str,
                now: datetime, *, reason: str, actor: str, unlocks: Unlocks = no_unlocks) -> RankChanged | None:
    """Move one distributor from `old` to `new`, keep the change and tell them; None when their
    rank is no longer `old` (someone else changed it first) or nothing changes."""
    if old == new:
        return None
    moved = session.connection().execute(update(DISTRIBUTORS).where(
        DISTRIBUTORS.c.id == distributor_id, DISTRIBUTORS.c.rank == old).values(rank=new)).rowcount
    if moved != 1:
        return None
    change_id = session.connection().execute(RANK_CHANGES.insert().returning(RANK_CHANGES.c.id), {
        "distributor_id": distributor_id, "old_rank": old, "new_rank": new, "reason": reason, "actor": actor,
        "created_at": now}).scalar_one()
    notice = _notice(session, config, old, new, unlocks)
    enqueue(session, f"rank:{distributor_id}:{change_id}", openid, notice,
            now=now, template=template_data(notice, "等级变更通知"))
    return RankChanged(distributor_id, old, new, change_id)


def promote(session: Session, config: Config, ids: Iterable[int], now: datetime, *,
            unlocks: Unlocks = no_unlocks) -> list[RankChanged]:
    """Promote each of these active distributors whose figures meet a higher rank's every
    requirement (never down). One read for all of them."""
    changed = []
    for did, openid, rank, fen, size in rank_figures(session, sorted(set(ids)), config.ranks[-1].key):
        new = rank_reached(config.ranks, rank, fen, size)
        if new != rank:
            reason = f"自动晋升：个人销售 {yuan(fen)}，直接邀请的活跃分销员 {size} 人"
            c = change_rank(session, config, did, openid, rank, new, now, reason=reason, actor=SYSTEM,
                            unlocks=unlocks)
            if c is not None:
                changed.append(c)
    return changed
