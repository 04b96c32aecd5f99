"""The money side: orders pushed by the shop, commissions, the append-only ledger, balances and
withdrawals. Money is integer fen; every signed amount is in the ledger, nothing is ever edited
or deleted there.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId


class OrderStatus(StrEnum):
    PAID = "paid"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    REFUNDED = "refunded"  # refunded in full; a partial refund keeps the order's status
    CANCELLED = "cancelled"


class EntryKind(StrEnum):
    COMMISSION = "commission"  # + when an order is paid
    REVERSAL = "reversal"  # − on a refund or cancellation
    WITHDRAWAL = "withdrawal"  # − when requested
    WITHDRAWAL_REFUND = "withdrawal_refund"  # + when an admin rejects the request, or its transfer fails
    REWARD = "reward"  # + (contests; never for recruiting)
    ADJUSTMENT = "adjustment"  # ± by an admin


class CommissionState(StrEnum):
    """Which balance a commission's unreversed remainder sits in."""

    PENDING = "pending"
    AVAILABLE = "available"


class WithdrawalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # pay.mode "off": paid out; otherwise approved and claimable (domain.payouts)
    REJECTED = "rejected"
    PAID = "paid"  # the WeChat Pay transfer succeeded
    FAILED = "failed"  # the transfer failed for good: the money went back to available


Fen = BigInteger


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_distributor_paid", "distributor_id", "paid_at"),
        # A period's orders as one index range, with what lists and rankings read (console 订单, 推广统计).
        Index("ix_orders_paid", "paid_at", "distributor_id", "status", "amount_fen", "refunded_fen"),
        # A buyer's earlier orders through a distributor: the repeat reward (domain.plan_reads).
        Index("ix_orders_buyer", "buyer_openid", "paid_at", "distributor_id", "status",
              sqlite_where=text("buyer_openid IS NOT NULL"), postgresql_where=text("buyer_openid IS NOT NULL")),
    )

    order_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The distributor credited with the sale (fixed by the paid event).
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"))
    amount_fen: Mapped[int] = mapped_column(Fen)
    refunded_fen: Mapped[int] = mapped_column(Fen, default=0)
    status: Mapped[str] = mapped_column(String(16))
    sku: Mapped[str | None] = mapped_column(String(64))
    buyer_openid: Mapped[str | None] = mapped_column(String(64))
    paid_at: Mapped[datetime]  # the shop's occurred_at of the paid event (else when we got it)
    completed_at: Mapped[datetime | None]  # when we got the completed event
    updated_at: Mapped[datetime]


class OrderEvent(Base):
    """Every accepted order event: the idempotency key, the status history, the first answer."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    order_no: Mapped[str] = mapped_column(ForeignKey("orders.order_no"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    amount_fen: Mapped[int | None] = mapped_column(Fen)
    status: Mapped[str] = mapped_column(String(16))  # the order's status after this event
    occurred_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    answer: Mapped[dict[str, Any]]


class Commission(Base):
    """One receiver's share of one order; its remainder moves from pending to available."""

    __tablename__ = "commissions"
    __table_args__ = (
        # A receiver's commissions newest first, a page at a time (团队订单): order_no breaks ties.
        Index("ix_commissions_receiver_created", "distributor_id", "created_at", "order_no"),
        Index("ix_commissions_due", "state", "unfreeze_at"),
    )

    order_no: Mapped[str] = mapped_column(ForeignKey("orders.order_no"), primary_key=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), primary_key=True)
    depth: Mapped[int]
    rate: Mapped[str] = mapped_column(String(16))  # the Decimal rate applied, as text
    amount_fen: Mapped[int] = mapped_column(Fen)
    reversed_fen: Mapped[int] = mapped_column(Fen, default=0)
    state: Mapped[str] = mapped_column(String(16), default=CommissionState.PENDING)
    unfreeze_at: Mapped[datetime | None]  # set when the order completes
    created_at: Mapped[datetime]


def _when_posted(context: Any) -> datetime:
    return context.get_current_parameters()["created_at"]


class LedgerEntry(Base):
    """Append-only. `ref` makes each posting unique per (receiver, kind): the order number for a
    commission, the refund or cancel event's id for a reversal, the withdrawal id for the rest."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("distributor_id", "kind", "ref", name="uq_ledger_entries_posting"),
        # A distributor's entries newest first, a page at a time (明细): id breaks ties.
        Index("ix_ledger_entries_distributor_created", "distributor_id", "created_at", "id"),
        # A period's entries as one index range, with what totals and rankings read (佣金记录, 推广统计).
        Index("ix_ledger_entries_posted", "created_at", "kind", "distributor_id", "amount_fen"),
        # The same by the day figures count them on (推广统计's commission).
        Index("ix_ledger_entries_counted", "counted_at", "kind", "distributor_id", "amount_fen"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"))
    kind: Mapped[str] = mapped_column(String(24))
    amount_fen: Mapped[int] = mapped_column(Fen)
    ref: Mapped[str] = mapped_column(String(160))
    order_no: Mapped[str | None] = mapped_column(String(64))
    withdrawal_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(index=True)  # the console's period figures
    # When figures ("today", "this month") count it: an order's entries (commission, reversal) when
    # the order was paid, as its sales (domain.orders sets it); any other when it was posted.
    counted_at: Mapped[datetime] = mapped_column(default=_when_posted)


class Balance(Base):
    """The ledger summed per distributor, kept in the same transaction as every entry.

    pending + available == sum(entries); withdrawing + withdrawn == −sum(withdrawal entries and
    withdrawal_refund entries). available may go negative (a reversal after a withdrawal)."""

    __tablename__ = "balances"
    # The console's 分销员 list sorted by a balance reads these in order (domain.distributor_list).
    __table_args__ = (Index("ix_balances_available", "available_fen", "distributor_id"),
                      Index("ix_balances_pending", "pending_fen", "distributor_id"))

    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), primary_key=True)
    pending_fen: Mapped[int] = mapped_column(Fen, default=0)
    available_fen: Mapped[int] = mapped_column(Fen, default=0)
    withdrawing_fen: Mapped[int] = mapped_column(Fen, default=0)
    withdrawn_fen: Mapped[int] = mapped_column(Fen, default=0)


class DistributorTotals(Base):
    """A distributor's credited sales and commission summed per China-time month (`month` is
    YYYYMM) and for all time (`month` 0), kept by the order-event batches (one statement a batch,
    domain.distributor_totals): what the console's 分销员 list shows and sorts by. Sales count as
    domain.figures counts them (paid less refunded, cancelled orders nothing) in the month the
    order was paid; commission is commission entries less reversals, also in the month the order was paid.
    A distributor without a row has sold and earned nothing."""

    __tablename__ = "distributor_totals"
    __table_args__ = (Index("ix_distributor_totals_sales", "month", "sales_fen", "distributor_id"),
                      Index("ix_distributor_totals_commission", "month", "commission_fen", "distributor_id"))

    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), primary_key=True)
    month: Mapped[int] = mapped_column(primary_key=True)
    sales_fen: Mapped[int] = mapped_column(Fen, default=0)
    orders: Mapped[int] = mapped_column(default=0)
    commission_fen: Mapped[int] = mapped_column(Fen, default=0)


class TeamBonus(Base):
    """The monthly team bonus (domain.team_bonus): one row per distributor and China-time month
    (`month` YYYYMM) whose direct members' sales reached a tier, written by one aggregate
    statement; `paid_at` is set in the unit that posts its `reward` entry, so a month is paid once
    per distributor whatever runs twice."""

    __tablename__ = "team_bonuses"

    month: Mapped[int] = mapped_column(primary_key=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), primary_key=True)
    team_sales_fen: Mapped[int] = mapped_column(Fen)
    bonus_fen: Mapped[int | None] = mapped_column(Fen)  # set when paid (the tiers of that day)
    created_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]


class Withdrawal(Base):
    __tablename__ = "withdrawals"
    __table_args__ = (Index("ix_withdrawals_status", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(Fen)
    status: Mapped[str] = mapped_column(String(16), default=WithdrawalStatus.PENDING)
    # "chat": asked for in chat; "exit": the settlement of a distributor who left the programme.
    source: Mapped[str] = mapped_column(String(16), default="chat")
    reason: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    # Approved while pay.mode was on: paid through WeChat Pay (payout_bills), not recorded as paid out.
    pay_transfer: Mapped[bool] = mapped_column(default=False, server_default=false())


class PayoutBill(Base):
    """One attempt to pay a withdrawal through WeChat Pay 商家转账 (domain.payouts). The row is
    written, state CREATING, before WeChat Pay is asked to create the bill, so that an outcome
    lost in a crash is found again by its out_bill_no. A final state is applied once: the update
    that moves the row into it is the one that moves the money."""

    __tablename__ = "payout_bills"
    __table_args__ = (
        UniqueConstraint("withdrawal_id", "attempt", name="uq_payout_bills_attempt"),
        Index("ix_payout_bills_state", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    withdrawal_id: Mapped[int] = mapped_column(ForeignKey("withdrawals.id"))
    attempt: Mapped[int]  # 1, 2, ...: a new bill after an expiry or an admin's retry
    out_bill_no: Mapped[str] = mapped_column(String(32), unique=True)  # derived from the withdrawal and attempt
    state: Mapped[str] = mapped_column(String(24))  # CREATING, then WeChat Pay's states
    fail_reason: Mapped[str | None] = mapped_column(String(64))
    transfer_bill_no: Mapped[str | None] = mapped_column(String(64))
    package_info: Mapped[str | None] = mapped_column(Text)  # only create answers it: kept for the confirm page
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]  # when the final state was applied


class InviterChange(Base):
    """A distributor moved to another inviter: the tree's history, kept. `reason` says why in a
    word: "inviter_exited" (their inviter left, handlers/leave.py) or "admin" (an admin moved them,
    domain.inviters, with `actor` and the admin's own words in `note`)."""

    __tablename__ = "inviter_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    old_inviter_id: Mapped[int | None] = mapped_column(BigInteger)
    new_inviter_id: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(64))  # who moved them (None: the exit of their inviter)
    note: Mapped[str | None] = mapped_column(Text)  # the admin's reason, as given
    changed_at: Mapped[datetime]
