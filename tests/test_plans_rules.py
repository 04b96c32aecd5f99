"""The plans' rules (domain.plans) as properties: tiers are monotone (more sales never earn less, so
a refund never leaves a bonus larger than the month's sales allow), the cap holds, the next tier is
exactly that far, the repeat reward adds its rate at depth 0 only and leaves booked commission to
the reversal rule; then the same rules through the set-based payment (domain.team_bonus) on both
databases, paid once per month whatever runs twice."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.commission import Receiver, commission_fen, reversal_due, split_commission
from domain.config import Config
from domain.config_sections import RewardsConfig, TeamTier
from domain.formats import CHINA
from domain.formats import Month, parse_month
from domain.plans import is_repeat, next_tier, reward_ref, team_bonus_fen, tier_reached
from domain.team_bonus import pay_some, stage
from kit.app_keys import WRITER
from sandbox.platform import Platform
from storage.tables import ENTRIES, ORDERS
from tests.conftest import make_config
from tests.money_support import money_harness, seed

rates = st.integers(1, 999).map(lambda n: Decimal(n) / 1000)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[TeamTier, ...]:
    mins = sorted(draw(st.sets(st.integers(1, 10**7), min_size=1, max_size=4)))
    tier_rates = sorted(draw(st.lists(rates, min_size=len(mins), max_size=len(mins))))
    return tuple(TeamTier(min_team_sales_fen=m, rate=r) for m, r in zip(mins, tier_rates, strict=True))


sales = st.integers(-10**6, 2 * 10**7)


@given(tier_lists(), sales, st.integers(0, 10**7), st.integers(0, 10**6))
def test_more_sales_never_earn_less_and_the_cap_holds(tiers: tuple[TeamTier, ...], fen: int, refund: int,
                                                      cap: int) -> None:
    bonus = team_bonus_fen(fen, tiers, cap)
    after_refund = team_bonus_fen(fen - refund, tiers, cap)
    assert 0 <= after_refund <= bonus  # a refund never leaves more than the smaller sales allow
    assert bonus <= max(fen, 0) * max(t.rate for t in tiers)
    if cap:
        assert bonus <= cap
    tier = tier_reached(fen, tiers)
    expected = 0 if tier is None else commission_fen(fen, tier.rate)
    assert bonus == (min(expected, cap) if cap else expected)


@given(tier_lists(), sales)
def test_the_next_tier_is_exactly_that_far(tiers: tuple[TeamTier, ...], fen: int) -> None:
    ahead = next_tier(fen, tiers)
    if ahead is None:
        assert tier_reached(fen, tiers) is tiers[-1]
        return
    tier, missing = ahead
    counted = max(fen, 0)  # more refunded than sold counts as nothing sold
    assert missing > 0 and tier_reached(counted + missing, tiers) is tier
    assert tier_reached(counted + missing - 1, tiers) is not tier


def test_tiers_are_refused_unless_monotone_and_rates_are_in_range() -> None:
    for bad in ([{"min_team_sales_fen": 500, "rate": 0.01}, {"min_team_sales_fen": 500, "rate": 0.02}],
                [{"min_team_sales_fen": 500, "rate": 0.02}, {"min_team_sales_fen": 900, "rate": 0.01}],
                [{"min_team_sales_fen": 500, "rate": 1.0}]):
        with pytest.raises(ValidationError, match="team_tiers"):
            Config(rewards={"team_tiers": bad})
    with pytest.raises(ValidationError, match="extra_rate"):
        Config(rewards={"repeat": {"window_days": 30, "extra_rate": -0.01}})
    assert RewardsConfig().team_tiers == () and not RewardsConfig().repeat_on  # off by default


def test_months() -> None:
    assert [parse_month(t) for t in ("2026-13", "2026-00", "26-11", " 2026-11", "2026-11-01")] == [None] * 5
    m = parse_month("2026-12")
    assert m == Month(2026, 12) and m.following == Month(2027, 1) and Month(2027, 1).previous == m
    assert m.start == datetime(2026, 12, 1, tzinfo=CHINA) and reward_ref(m) == "team-bonus:2026-12"


@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
       st.lists(st.integers(-90 * 24, 90 * 24), max_size=5), st.integers(1, 60))
def test_a_repeat_is_an_earlier_order_inside_the_window(at: datetime, hours: list[int], window: int) -> None:
    earlier = [at + timedelta(hours=h) for h in hours]
    expected = any(at - timedelta(days=window) <= e < at for e in earlier)
    assert is_repeat(at, earlier, window) == expected


@given(st.integers(1, 10**7), st.lists(rates, min_size=1, max_size=3), rates, st.integers(0, 10**7))
def test_the_repeat_reward_is_depth_zero_only_and_reverses_like_the_rest(amount: int, sku: list[Decimal],
                                                                          extra: Decimal, refunded: int) -> None:
    chain = [Receiver(i + 1, f"o{i}", "junior") for i in range(3)]
    args: dict[str, Any] = {"rates_of": lambda rank: (Decimal("0.10"),), "max_levels": 3, "self_purchase": False,
                            "sku_rates": sku}
    plain, repeat = split_commission(amount, chain, **args), split_commission(amount, chain, **args, extra_rate=extra)
    deeper = [[(s.depth, s.amount_fen) for s in shares if s.depth > 0] for shares in (plain, repeat)]
    assert deeper[0] == deeper[1]
    if repeat and repeat[0].depth == 0:
        assert repeat[0].amount_fen == min(commission_fen(amount, sku[0] + extra), amount)
    # Booked commission is reversed by its own amount, whatever the plans say by then.
    refunded = min(refunded, amount)
    for s in repeat:
        assert reversal_due(s.amount_fen, 0, refunded, amount) == s.amount_fen * refunded // amount


# ---- the payment on both databases ----------------------------------------------------------------
_months = itertools.count()
sales_rows = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 300_000), st.integers(0, 100),
                                st.booleans()), max_size=8)  # (seller, amount, refunded %, cancelled)


async def test_the_team_bonus_is_paid_once_by_the_rules_on_both_databases(
        db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server) as h:
        boss, _ = await seed(h)
        sellers = [boss] + [(await seed(h, inviter=boss))[0] for _ in range(3)]  # boss's own sales do not count
        writer, loop = h.app[WRITER], asyncio.get_running_loop()

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(sales_rows, tier_lists(), st.integers(0, 5_000))
        def pays_by_the_rules(rows: list[tuple[int, int, int, bool]], tiers: tuple[TeamTier, ...], cap: int) -> None:
            n = next(_months)
            month = Month(2001 + n // 12, n % 12 + 1)
            config = make_config(h.config.database.url, rewards={
                "team_cap_fen": cap, "team_tiers": [t.model_dump() for t in tiers]})
            orders = [{"order_no": f"TB-{n}-{i}", "distributor_id": sellers[s].id, "amount_fen": a,
                       "refunded_fen": a * pct // 100, "status": "cancelled" if gone else "completed", "sku": None,
                       "buyer_openid": None, "paid_at": month.start + timedelta(days=i), "completed_at": None,
                       "updated_at": month.start} for i, (s, a, pct, gone) in enumerate(rows)]
            expected = sum(o["amount_fen"] - o["refunded_fen"] for o, (s, *_) in zip(orders, rows, strict=True)
                           if s and o["status"] != "cancelled")
            now = month.end + timedelta(hours=2)

            def pay_all(session: Session) -> list[int]:
                if orders:
                    session.execute(ORDERS.insert(), orders)
                for _ in range(2):  # a second run pays nothing more
                    stage(session, config, month, now)
                    after: int | None = 0
                    while after is not None:
                        after = pay_some(session, config, month, after, now)
                return list(session.scalars(select(ENTRIES.c.amount_fen).where(
                    ENTRIES.c.distributor_id == boss.id, ENTRIES.c.ref == reward_ref(month))))
            paid = asyncio.run_coroutine_threadsafe(writer.run(pay_all), loop).result(60)
            bonus = team_bonus_fen(expected, tiers, cap)
            assert paid == ([bonus] if bonus else [])
            assert sum(paid) <= (cap or sum(paid)) and sum(paid) <= expected * tiers[-1].rate

        await asyncio.to_thread(pays_by_the_rules)
