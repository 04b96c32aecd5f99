"""The pure money rules (domain.commission): worked examples and properties."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import commission as rules
from domain.commission import Receiver, reversal_due, split_commission
from domain.formats import AmountError, day_start, month_start, parse_yuan

RATES = {"junior": (Decimal("0.10"), Decimal("0.03"), Decimal("0.01")),
         "gold": (Decimal("0.15"), Decimal("0.05")),
         "odd": (Decimal("0.29"), Decimal("0.07"), Decimal("0.013"))}


def chain(*ranks: str, **kw: bool) -> list[Receiver]:
    return [Receiver(i + 1, f"o{i + 1}", r, kw.get(f"active{i}", True)) for i, r in enumerate(ranks)]


def split(amount: int, receivers: list[Receiver], **kw) -> list[tuple[int, int, int]]:  # noqa: ANN003
    args = {"rates_of": RATES.__getitem__, "max_levels": 2, "self_purchase": False, **kw}
    return [(s.distributor_id, s.depth, s.amount_fen) for s in split_commission(amount, receivers, **args)]


def test_contract_example() -> None:
    assert split(12900, chain("junior", "junior")) == [(1, 0, 1290), (2, 1, 387)]


def test_rates_belong_to_the_receiver() -> None:
    assert split(10000, chain("junior", "gold")) == [(1, 0, 1000), (2, 1, 500)]
    assert split(10000, chain("gold", "junior")) == [(1, 0, 1500), (2, 1, 300)]
    # A depth the receiver's rank has no rate for earns nothing.
    assert split(10000, chain("junior", "junior", "gold"), max_levels=3) == [(1, 0, 1000), (2, 1, 300)]


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_max_levels(levels: int) -> None:
    assert [d for _, d, _ in split(12900, chain("junior", "junior", "junior", "junior"), max_levels=levels)] == \
        list(range(levels))


def test_floor_is_exact() -> None:
    assert rules.commission_fen(100, Decimal("0.29")) == 29  # 100 * 0.29 is 28.999… in binary floating point
    assert rules.commission_fen(999, Decimal("0.013")) == 12
    assert rules.commission_fen(9, Decimal("0.10")) == 0
    assert split(9, chain("junior", "junior")) == []  # no zero rows


def test_self_purchase_and_exited() -> None:
    assert split(12900, chain("junior", "junior"), buyer_openid="o1") == [(2, 1, 387)]
    assert split(12900, chain("junior", "junior"), buyer_openid="o1", self_purchase=True) == [(1, 0, 1290),
                                                                                                (2, 1, 387)]
    assert split(12900, chain("junior", "junior", active0=False)) == [(2, 1, 387)]


def test_monthly_cap() -> None:
    accrued = {1: 1500}
    assert split(12900, chain("junior", "junior"), monthly_cap_fen=2000, month_accrued=accrued) == [
        (1, 0, 500), (2, 1, 387)]
    assert accrued == {1: 2000, 2: 387}
    assert split(12900, chain("junior", "junior"), monthly_cap_fen=2000, month_accrued=accrued) == [(2, 1, 387)]


def test_reversal_examples() -> None:
    assert reversal_due(1290, 0, 4300, 12900) == 430
    assert reversal_due(1290, 430, 4301, 12900) == 0
    assert reversal_due(1290, 430, 12900, 12900) == 860
    assert reversal_due(1290, 1290, 12900, 12900) == 0


def test_state_machine() -> None:
    ok = rules.next_status
    assert ok("paid", "shipped", amount_fen=10, refunded_fen=0) == "shipped"
    assert ok("paid", "completed", amount_fen=10, refunded_fen=0) == "completed"
    assert ok("completed", "refunded", amount_fen=10, refunded_fen=0, refund_fen=4) == "completed"
    assert ok("completed", "refunded", amount_fen=10, refunded_fen=4, refund_fen=6) == "refunded"
    assert ok("shipped", "cancelled", amount_fen=10, refunded_fen=0) == "cancelled"
    for current, event in [("completed", "shipped"), ("shipped", "shipped"), ("refunded", "completed"),
                           ("cancelled", "refunded"), ("refunded", "cancelled"), ("paid", "paid")]:
        with pytest.raises(rules.TransitionError):
            ok(current, event, amount_fen=10, refunded_fen=0, refund_fen=1)
    with pytest.raises(rules.TransitionError):
        ok("paid", "refunded", amount_fen=10, refunded_fen=4, refund_fen=7)


def test_month_and_day_are_china_time() -> None:
    late = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 01:00 on 1 December in Shanghai
    assert month_start(late).isoformat() == "2026-12-01T00:00:00+08:00"
    assert day_start(late).isoformat() == "2026-12-01T00:00:00+08:00"


@pytest.mark.parametrize("text, fen", [("12.50", 1250), ("12.5", 1250), ("12", 1200), ("¥1,234.56", 123456),
                                       ("１２.５元", 1250), (" 0.01 ", 1), ("12.", 1200)])
def test_parse_yuan(text: str, fen: int) -> None:
    assert parse_yuan(text) == fen


@pytest.mark.parametrize("text", ["12.505", "abc", "-5", "0", "0.00", "1e3", "12.5.0", "", "NaN", "Infinity",
                                  "12,50.0.1", "99999999999"])
def test_parse_yuan_refuses(text: str) -> None:
    with pytest.raises(AmountError):
        parse_yuan(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10**9), st.integers(0, 99))
def test_parse_yuan_round_trips(whole: int, cents: int) -> None:
    assert parse_yuan(f"{whole}.{cents:02d}") == whole * 100 + cents


rates = st.decimals(min_value=0, max_value=Decimal("0.99"), places=3)


@settings(max_examples=150, deadline=None)
@given(amount=st.integers(0, 10**9), r0=rates, r1=rates, r2=rates, levels=st.integers(1, 3),
       cap=st.sampled_from([0, 1, 500, 10**6]), buyer=st.sampled_from([None, "o1", "o2", "x"]),
       self_purchase=st.booleans(), accrued0=st.integers(0, 10**6))
def test_split_properties(amount, r0, r1, r2, levels, cap, buyer, self_purchase, accrued0) -> None:  # noqa: ANN001
    receivers = chain("r", "r", "r", "r")
    accrued = {1: accrued0}
    shares = split_commission(amount, receivers, rates_of=lambda _: (r0, r1, r2), max_levels=levels,
                              self_purchase=self_purchase, buyer_openid=buyer, monthly_cap_fen=cap,
                              month_accrued=accrued)
    total = 0
    for s in shares:
        assert 0 < s.amount_fen <= amount * s.rate  # floor, never rounded up, never zero
        assert s.depth < levels and s.distributor_id == s.depth + 1
        assert not (buyer == f"o{s.distributor_id}" and not self_purchase)
        if cap:
            assert accrued[s.distributor_id] <= max(cap, accrued0 if s.distributor_id == 1 else 0)
        total += s.amount_fen
    assert total <= amount * (r0 + r1 + r2)
    assert len({s.distributor_id for s in shares}) == len(shares)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 10**6), st.integers(1, 10**9), st.lists(st.integers(1, 10**9), max_size=8))
def test_reversals_follow_floor_of_proportion(commission: int, amount: int, refunds: list[int]) -> None:
    reversed_total, refunded = 0, 0
    for r in refunds:
        r = min(r, amount - refunded)
        if r <= 0:
            break
        refunded += r
        step = reversal_due(commission, reversed_total, refunded, amount)
        assert step >= 0
        reversed_total += step
        assert reversed_total == commission * refunded // amount <= commission
    if refunded == amount:
        assert reversed_total == commission
