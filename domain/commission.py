"""The rules of money, as pure functions (no I/O), so that property tests can hammer them.

Commission (CONTRACT §3, §4.2):
- depth 0 is the distributor credited with the order, depth d their d-th inviter;
- the rate is `rates[d]` of the **receiver's** rank; a depth at or beyond `max_levels`, or without
  a rate, earns nothing; the amount is floor(amount_fen × rate) in exact integer arithmetic;
- rows of zero are never written; nothing is ever paid for recruiting (only orders pay);
- with `self_purchase = false` the buyer earns nothing on their own purchase: the receiver whose
  openid is the event's `buyer_openid` is skipped (the credited distributor in the contract's
  case; an inviter who buys through an invitee's link is treated the same); the others still earn;
- `monthly_cap_fen` caps each receiver's commission credited in a calendar month (Asia/Shanghai,
  by the time distbot records it), counted net of what has since been reversed; the part above
  the cap is not accrued at all;
- an exited distributor earns nothing more, nor does a suspended one while suspended (CONTRACT
  §4.12; `Receiver.active` is false for both). An order credited to either is still accepted and
  recorded (the sale happened): they get no share and their inviters earn at their usual depths,
  exactly as if the credited distributor earned zero; a suspended inviter's depth is skipped alike.

Reversals: after refunds totalling R of an order of amount A, a commission c has been reversed
by exactly floor(c × R / A) in all (so a full refund, or a cancellation, reverses all of it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction


# ---- the order state machine -----------------------------------------------------------------
PAID, SHIPPED, COMPLETED, REFUNDED, CANCELLED = "paid", "shipped", "completed", "refunded", "cancelled"
EVENT_TYPES = (PAID, SHIPPED, COMPLETED, REFUNDED, CANCELLED)
# An order status as people read it (chat and console).
STATUS_NAMES = {PAID: "待发货", SHIPPED: "已发货", COMPLETED: "已完成", REFUNDED: "已退款", CANCELLED: "已取消"}
# Which statuses each event may follow. A partial refund keeps the order's status, so shipping
# and completing stay possible after one; a full refund or a cancellation ends the order.
ALLOWED_FROM: Mapping[str, frozenset[str]] = {
    SHIPPED: frozenset({PAID}),
    COMPLETED: frozenset({PAID, SHIPPED}),
    REFUNDED: frozenset({PAID, SHIPPED, COMPLETED}),
    CANCELLED: frozenset({PAID, SHIPPED, COMPLETED}),
}


class TransitionError(ValueError):
    """An event that the order's current state does not allow."""

    code = "invalid_transition"


class RefundTooLarge(TransitionError):
    code = "refund_too_large"


def next_status(current: str, event: str, *, amount_fen: int, refunded_fen: int, refund_fen: int = 0) -> str:
    """The order's status after `event`; raises TransitionError with a clear English sentence."""
    allowed = ALLOWED_FROM.get(event)
    if allowed is None:
        raise TransitionError(f"the order is already {current}; a second 'paid' is not possible")
    if current not in allowed:
        raise TransitionError(f"a '{event}' event is not possible for an order that is {current}")
    if event == REFUNDED:
        left = amount_fen - refunded_fen
        if refund_fen > left:
            raise RefundTooLarge(f"the refund of {refund_fen} fen exceeds the {left} fen not yet refunded")
        return REFUNDED if refund_fen == left else current
    return event


# ---- commission ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Receiver:
    """Someone on the order's path up the tree: the credited distributor, then their inviters."""

    distributor_id: int
    openid: str
    rank: str
    active: bool = True


@dataclass(frozen=True)
class Share:
    distributor_id: int
    depth: int
    rate: Decimal
    amount_fen: int


def commission_fen(amount_fen: int, rate: Decimal) -> int:
    """floor(amount × rate) to the fen, exactly: a Decimal is a fraction with a power-of-ten
    denominator, so integer floor division gives the right answer for every amount."""
    f = Fraction(rate)
    return amount_fen * f.numerator // f.denominator


def split_commission(
    amount_fen: int,
    chain: Sequence[Receiver],
    *,
    rates_of: Callable[[str], Sequence[Decimal]],
    max_levels: int,
    self_purchase: bool,
    buyer_openid: str | None = None,
    monthly_cap_fen: int = 0,
    month_accrued: MutableMapping[int, int] | None = None,
    sku_rates: Sequence[Decimal] | None = None,
    extra_rate: Decimal = Decimal(0),
) -> list[Share]:
    """The commission rows of one paid order. `chain[0]` is the credited distributor.

    `month_accrued` (receiver id → commission already credited this month, net of reversals) is
    updated in place, so several orders split in a row respect the cap together. The plans
    (domain.plans): `sku_rates`, a pack's rates for the order's SKU, replace every receiver's rank
    rates; `extra_rate` (a repeat purchase) is added to the depth-0 rate, in the same commission.
    """
    if amount_fen <= 0:
        return []
    accrued = month_accrued if month_accrued is not None else {}
    shares: list[Share] = []
    for depth, receiver in enumerate(chain[:max_levels]):
        if not receiver.active:
            continue
        if not self_purchase and buyer_openid and buyer_openid == receiver.openid:
            continue
        rates = sku_rates if sku_rates is not None else rates_of(receiver.rank)
        if depth >= len(rates):
            continue
        rate = rates[depth] + extra_rate if depth == 0 else rates[depth]
        fen = min(commission_fen(amount_fen, rate), amount_fen)
        if monthly_cap_fen:
            fen = min(fen, max(monthly_cap_fen - accrued.get(receiver.distributor_id, 0), 0))
        if fen <= 0:
            continue
        accrued[receiver.distributor_id] = accrued.get(receiver.distributor_id, 0) + fen
        shares.append(Share(receiver.distributor_id, depth, rate, fen))
    return shares


def reversal_due(commission: int, reversed_so_far: int, refunded_total: int, order_amount: int) -> int:
    """How much more of a commission to reverse once refunds total `refunded_total`.

    In all, floor(c × R / A) is reversed; never more than the commission, never negative (a
    reversal already posted is never taken back)."""
    if order_amount <= 0 or refunded_total >= order_amount:
        target = commission
    else:
        target = commission * max(refunded_total, 0) // order_amount
    return max(min(target, commission) - reversed_so_far, 0)


def unfreeze_at(completed_at: datetime, freeze_days: int) -> datetime:
    return completed_at + timedelta(days=freeze_days)
