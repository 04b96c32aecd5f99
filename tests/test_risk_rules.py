"""The risk rules alone (domain.risk): pure functions, each at its threshold: exactly at → no
finding, one over → a finding whose detail an admin can judge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from domain.config import ConfigError, RiskConfig, load_config
from domain.risk import (BURST, REFUND_RATIO, SELF_DEALING, SIGNUP_BURST, OrderFacts, burst, refund_ratio,
                         self_dealing, signup_burst, silent_signups)

CFG = RiskConfig()
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class P:
    id: int
    code: str
    openid: str


CHAIN = [P(1, "AAAAAA", "o-a"), P(2, "BBBBBB", "o-b"), P(3, "CCCCCC", "o-c")]


def test_defaults_are_the_contracts() -> None:
    assert (CFG.burst_orders, CFG.burst_minutes, CFG.refund_ratio, CFG.refund_window, CFG.signup_burst) == (
        20, 10, 0.5, 20, 30)
    assert CFG.enabled


@pytest.mark.parametrize("bad", [{"burst_orders": 0}, {"refund_ratio": 1.0}, {"refund_ratio": -0.1},
                                 {"refund_window": 1}, {"signup_burst": 0}, {"burst_minutes": 0}, {"nope": 1}])
def test_bad_thresholds_stop_start_up_naming_the_key(bad: dict[str, object], tmp_path: object) -> None:
    with pytest.raises(ConfigError, match=r"risk\." + next(iter(bad))):
        load_config(None, risk=bad)


def test_self_dealing_is_the_buyer_above_within_max_levels() -> None:
    found = self_dealing("SO1", 12900, "o-b", CHAIN, max_levels=2)
    assert found is not None and found.rule == SELF_DEALING and found.distributor_id == 1
    assert "SO1" in found.detail and "BBBBBB" in found.detail and "直接邀请人" in found.detail
    # Beyond max_levels the buyer is nobody's business here; the credited one buying is self_purchase's.
    assert self_dealing("SO1", 12900, "o-c", CHAIN, max_levels=2) is None
    assert self_dealing("SO1", 12900, "o-c", CHAIN, max_levels=3) is not None
    assert self_dealing("SO1", 12900, "o-a", CHAIN, max_levels=3) is None
    assert self_dealing("SO1", 12900, None, CHAIN, max_levels=3) is None
    assert self_dealing("SO1", 12900, "o-stranger", CHAIN, max_levels=3) is None


def test_burst_exactly_at_the_line_is_not_a_burst() -> None:
    nos = [f"SO{i}" for i in range(21)]
    assert burst(1, "AAAAAA", 20, nos[:20], CFG) is None
    found = burst(1, "AAAAAA", 21, nos, CFG)
    assert found is not None and found.rule == BURST
    assert found.detail.startswith("10 分钟内 21 笔已付款订单：SO0、SO1") and found.detail.endswith(" 等")


def _orders(refunded: int, total: int = 20, amount: int = 1000) -> list[OrderFacts]:
    return [OrderFacts(f"SO{i}", amount, amount if i < refunded else 0, "refunded" if i < refunded else "paid")
            for i in range(total)]


def test_refund_ratio_at_and_over_the_line() -> None:
    assert refund_ratio(1, "AAAAAA", _orders(10), CFG) is None  # exactly 0.5
    found = refund_ratio(1, "AAAAAA", _orders(11), CFG)
    assert found is not None and found.rule == REFUND_RATIO
    assert "最近 20 笔订单退款 55%" in found.detail and "11 笔" in found.detail


def test_refund_ratio_counts_amounts_cancellations_and_a_full_window_only() -> None:
    assert refund_ratio(1, "A", _orders(19, total=19), CFG) is None  # not 20 orders yet
    cancelled = [OrderFacts(f"C{i}", 1000, 0, "cancelled") for i in range(11)] + _orders(0, total=9)
    assert refund_ratio(1, "A", cancelled, CFG) is not None
    # A partial refund counts by its amount: 11 orders each refunded by half is 27.5%.
    half = [OrderFacts(f"H{i}", 1000, 500 if i < 11 else 0, "completed") for i in range(20)]
    assert refund_ratio(1, "A", half, CFG) is None
    # Only the window's newest orders count (the list is newest first).
    assert refund_ratio(1, "A", _orders(0, total=20) + _orders(20, total=20), CFG) is None


def test_signup_burst_and_its_follow_up() -> None:
    signups = [(i, f"C{i:05d}") for i in range(31)]
    assert signup_burst(9, "INVITE", signups[:30], CFG, NOW) is None
    found = signup_burst(9, "INVITE", signups, CFG, NOW)
    assert found is not None and found.rule == SIGNUP_BURST and found.follow_up_at == NOW + timedelta(days=7)
    assert found.facts["ids"] == list(range(31)) and "1 小时内直接邀请 31 人注册" in found.detail
    assert silent_signups(9, "INVITE", list(range(31)), sold=1) is None
    silent = silent_signups(9, "INVITE", list(range(31)), sold=0)
    assert silent is not None and silent.rule == SIGNUP_BURST and "无一人成交" in silent.detail
