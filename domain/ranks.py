"""Ranks and what it takes to reach the next one, as pure functions (no I/O), so that the weekly
report's rank progress and rank promotion read the same rule, and property tests can hammer it.

CONTRACT §3: ranks are ordered lowest first and every new distributor starts at the first. A
rank's requirements must all hold: personal sales (completed orders credited at depth 0, less
refunds, all time) of at least `min_sales_fen`, and a team (active distributors invited directly)
of at least `min_team_size`. Promotion only goes up; nobody is demoted automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol


class RankRule(Protocol):
    """What the rules read of a rank (domain.config.RankConfig has it)."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def min_sales_fen(self) -> int: ...
    @property
    def min_team_size(self) -> int: ...


@dataclass(frozen=True)
class RankGap:
    """What separates a distributor from the next rank."""

    key: str
    name: str
    missing_sales_fen: int  # ≥ 0
    missing_members: int  # ≥ 0
    sales_progress: Fraction  # share of the sales requirement reached, 0..1 (1 without one)
    team_progress: Fraction

    @property
    def met(self) -> bool:
        """Every requirement holds: the distributor is due for promotion."""
        return self.missing_sales_fen == 0 and self.missing_members == 0

    def within(self, share: Fraction) -> bool:
        """At least `share` of both requirements reached (e.g. 7/10: close to the next rank)."""
        return self.sales_progress >= share and self.team_progress >= share


def rank_index(ranks: Sequence[RankRule], key: str) -> int:
    """A rank's place, lowest first; an unknown key counts as the first rank (as Config.rank)."""
    return next((i for i, r in enumerate(ranks) if r.key == key), 0)


def _progress(have: int, need: int) -> Fraction:
    """The share of a requirement reached: 1 exactly when it holds."""
    if have >= need:
        return Fraction(1)
    return Fraction(max(have, 0), need) if need > 0 else Fraction(0)


def meets(rank: RankRule, sales_fen: int, team_size: int) -> bool:
    return sales_fen >= rank.min_sales_fen and team_size >= rank.min_team_size


def next_rank_gap(ranks: Sequence[RankRule], current_key: str, sales_fen: int, team_size: int) -> RankGap | None:
    """What is missing for the rank above the current one; None at the top rank."""
    i = rank_index(ranks, current_key)
    if i + 1 >= len(ranks):
        return None
    nxt = ranks[i + 1]
    return RankGap(nxt.key, nxt.name, max(nxt.min_sales_fen - sales_fen, 0), max(nxt.min_team_size - team_size, 0),
                   _progress(sales_fen, nxt.min_sales_fen), _progress(team_size, nxt.min_team_size))


def rank_reached(ranks: Sequence[RankRule], current_key: str, sales_fen: int, team_size: int) -> str:
    """The rank a distributor should hold: the highest rank above the current one whose every
    requirement holds, else the current one (never lower: promotion only goes up)."""
    i = rank_index(ranks, current_key)
    for j in range(len(ranks) - 1, i, -1):
        if meets(ranks[j], sales_fen, team_size):
            return ranks[j].key
    return ranks[i].key if ranks else current_key
