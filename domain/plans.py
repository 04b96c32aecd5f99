"""Commission plans beside the rank rates (CONTRACT §8), as pure rules (no I/O), so that property
tests can hammer them. All of it is a share of sales, never of headcount.

- Per-SKU rates: `rates` on a pack's product replace the rank rates for orders of that SKU (depth
  0, 1, 2), read from the pack live when the order is paid (`sku_rates`); depths beyond them earn
  nothing, as beyond a rank's rates.
- The repeat reward ([rewards.repeat]): a customer who buys again through the same credited
  distributor within `window_days` of their previous paid order through them adds `extra_rate` to
  the depth-0 rate (`is_repeat`); it is part of that one commission (same freeze, same reversal).
- The monthly team bonus ([[rewards.team_tiers]], [rewards] team_cap_fen): by the month's sales of
  the members one invited directly (paid in the month, China time, less refunds, credited to them
  at depth 0), the highest tier reached applies to all of it, capped (`team_bonus_fen`); paid once
  per distributor and month as a `reward` (domain.team_bonus).

Commission once booked keeps its amount: a refund reverses a share of the booked amount
(domain.commission.reversal_due), whatever the plans say by then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from domain.commission import commission_fen
from domain.config_sections import RewardsConfig, TeamTier
from domain.formats import Month, yuan

REWARD_REF = "team-bonus:{month}"  # the ledger's unique (distributor, kind, ref): once per month


# ---- per-SKU rates and the repeat reward -----------------------------------------------------------
def rates_for_sku(sku: str | None, sku_rates: Mapping[str, Sequence[Decimal]]) -> Sequence[Decimal] | None:
    """The rates a live pack gives this SKU (matched without case), or None: the rank rates apply."""
    return sku_rates.get(sku.lower()) if sku else None


def is_repeat(paid_at: datetime, earlier: Iterable[datetime], window_days: int) -> bool:
    """Whether an order paid at `paid_at` repeats one of the buyer's `earlier` paid orders through
    the same distributor: one of them paid before it and at most `window_days` before."""
    since = paid_at - timedelta(days=window_days)
    return any(since <= at < paid_at for at in earlier)


# ---- the monthly team bonus ----------------------------------------------------------------------
def tier_reached(team_sales_fen: int, tiers: Sequence[TeamTier]) -> TeamTier | None:
    """The highest tier whose threshold the month's team sales reach (tiers are listed lowest first)."""
    return next((t for t in reversed(tiers) if team_sales_fen >= t.min_team_sales_fen), None)


def team_bonus_fen(team_sales_fen: int, tiers: Sequence[TeamTier], cap_fen: int = 0) -> int:
    """The month's bonus: the highest tier's rate of all the team's sales, floored to the fen, at
    most `cap_fen` (0: no cap). Nothing without sales, below the first tier or without tiers."""
    tier = tier_reached(team_sales_fen, tiers)
    if tier is None or team_sales_fen <= 0:
        return 0
    fen = commission_fen(team_sales_fen, tier.rate)
    return min(fen, cap_fen) if cap_fen else fen


def next_tier(team_sales_fen: int, tiers: Sequence[TeamTier]) -> tuple[TeamTier, int] | None:
    """The next tier above the sales and how many fen of team sales are missing, or None at the top."""
    tier = next((t for t in tiers if team_sales_fen < t.min_team_sales_fen), None)
    return None if tier is None else (tier, tier.min_team_sales_fen - max(team_sales_fen, 0))


def bonus_lines(team_sales_fen: int, rewards: RewardsConfig) -> list[str]:
    """What 收益 and the weekly report say of this month's team bonus so far (an estimate: refunds
    may still come) and of the next tier; nothing while no tiers are configured."""
    if not rewards.team_tiers:
        return []
    bonus = team_bonus_fen(team_sales_fen, rewards.team_tiers, rewards.team_cap_fen)
    lines = [f"本月团队销售额：{yuan(max(team_sales_fen, 0))}，团队奖励预估：{yuan(bonus)}（次月 1 日发放）"]
    ahead = next_tier(team_sales_fen, rewards.team_tiers)
    if ahead is not None:
        tier, missing = ahead
        lines.append(f"团队再卖 {yuan(missing)} 可达下一档（奖励比例 {(tier.rate * 100).normalize():f}%）")
    elif rewards.team_cap_fen and bonus >= rewards.team_cap_fen:
        lines.append(f"已达最高档，本月团队奖励已到上限 {yuan(rewards.team_cap_fen)}")
    else:
        lines.append("已达最高档")
    return lines


def reward_ref(month: Month) -> str:
    """The team bonus's ledger ref for a month: the unique (distributor, kind, ref) pays it once."""
    return REWARD_REF.format(month=month.label)
