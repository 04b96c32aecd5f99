"""The rank rules (domain.ranks): what is missing for the next rank, and the rank a distributor's
figures reach — worked examples and properties over any ladder of ranks."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from domain.ranks import RankGap, meets, next_rank_gap, rank_index, rank_reached
from tests.conftest import make_config


@dataclass(frozen=True)
class R:
    key: str
    name: str
    min_sales_fen: int
    min_team_size: int


LADDER = (R("junior", "初级推广员", 0, 0), R("silver", "白银", 100_000, 3), R("gold", "黄金合伙人", 1_000_000, 10))

ranks_st = st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 500)), min_size=1, max_size=5).map(
    lambda reqs: tuple(R(f"r{i}", f"等级{i}", s, t) for i, (s, t) in enumerate(reqs)))
sales_st = st.integers(-10**6, 2 * 10**9)
team_st = st.integers(0, 1000)


def test_worked_examples() -> None:
    assert next_rank_gap(LADDER, "junior", 30_000, 1) == RankGap("silver", "白银", 70_000, 2, Fraction(3, 10),
                                                                 Fraction(1, 3))
    assert next_rank_gap(LADDER, "silver", 2_000_000, 12).met
    assert next_rank_gap(LADDER, "gold", 0, 0) is None
    assert next_rank_gap(LADDER, "unknown", 0, 0).key == "silver"  # an unknown rank counts as the first
    assert rank_reached(LADDER, "junior", 2_000_000, 3) == "silver"
    assert rank_reached(LADDER, "junior", 2_000_000, 10) == "gold"
    assert rank_reached(LADDER, "gold", 0, 0) == "gold"  # never demoted
    gap = next_rank_gap(LADDER, "junior", 70_000, 3)
    assert gap is not None and gap.within(Fraction(7, 10)) and not gap.within(Fraction(71, 100))


def test_the_configured_ranks_fit_the_rules() -> None:
    ranks = make_config("sqlite+aiosqlite:///:memory:").ranks
    gap = next_rank_gap(ranks, "junior", 250_000, 4)
    assert gap is not None and (gap.key, gap.missing_sales_fen, gap.missing_members) == ("gold", 750_000, 6)


@given(ranks_st, st.data(), sales_st, team_st)
def test_the_gap_is_exactly_what_is_missing(ranks: tuple[R, ...], data: st.DataObject, sales: int, team: int) -> None:
    current = data.draw(st.sampled_from(ranks)).key
    gap = next_rank_gap(ranks, current, sales, team)
    i = rank_index(ranks, current)
    if i == len(ranks) - 1:
        assert gap is None
        return
    assert gap is not None
    nxt = ranks[i + 1]
    assert gap.key == nxt.key and gap.missing_sales_fen >= 0 and gap.missing_members >= 0
    assert (gap.missing_sales_fen == 0) == (sales >= nxt.min_sales_fen)
    assert (gap.missing_members == 0) == (team >= nxt.min_team_size)
    assert gap.met == meets(nxt, sales, team)
    assert 0 <= gap.sales_progress <= 1 and 0 <= gap.team_progress <= 1
    assert (gap.sales_progress == 1) == (gap.missing_sales_fen == 0)
    # Adding what is missing is exactly enough: nothing more, nothing less.
    assert next_rank_gap(ranks, current, sales + gap.missing_sales_fen, team + gap.missing_members).met
    if gap.missing_sales_fen:
        assert not meets(nxt, sales + gap.missing_sales_fen - 1, team + gap.missing_members)
    if gap.missing_members:
        assert not meets(nxt, sales + gap.missing_sales_fen, team + gap.missing_members - 1)


@given(ranks_st, st.data(), sales_st, team_st, st.integers(0, 10**6), st.integers(0, 50))
def test_progress_only_grows_with_the_figures(ranks: tuple[R, ...], data: st.DataObject, sales: int, team: int,
                                              more_sales: int, more_team: int) -> None:
    current = data.draw(st.sampled_from(ranks)).key
    before = next_rank_gap(ranks, current, sales, team)
    after = next_rank_gap(ranks, current, sales + more_sales, team + more_team)
    if before is None or after is None:
        assert before is after is None
        return
    assert after.sales_progress >= before.sales_progress and after.team_progress >= before.team_progress
    assert after.missing_sales_fen <= before.missing_sales_fen and after.missing_members <= before.missing_members
    assert after.within(Fraction(7, 10)) or not before.within(Fraction(7, 10))


@given(ranks_st, st.data(), sales_st, team_st)
def test_the_rank_reached_is_the_highest_met_and_never_lower(ranks: tuple[R, ...], data: st.DataObject,
                                                              sales: int, team: int) -> None:
    current = data.draw(st.sampled_from(ranks)).key
    reached = rank_reached(ranks, current, sales, team)
    i, j = rank_index(ranks, current), rank_index(ranks, reached)
    assert j >= i
    if j > i:
        assert meets(ranks[j], sales, team)
    assert not any(meets(r, sales, team) for r in ranks[j + 1:])
    # Promotion is stable: from the rank reached, the same figures reach no further.
    assert rank_reached(ranks, reached, sales, team) == reached
