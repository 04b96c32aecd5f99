"""Ledger postings and balances: every entry is written together with the change to its
distributor's balance row, in the caller's transaction (a unit of work on storage.writer).

Balances move only by relative updates (`x = x + delta`), which lock the row on PostgreSQL until
commit (SQLite's BEGIN IMMEDIATE serialises every writer); a withdrawal is one conditional update
(`... WHERE available_fen >= amount`), so no two requests can overdraw, in one process or many.
Callers reach these functions through a unit of work (`Writer.run`) or a read (`Reader.run`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from domain.formats import month_start
from domain.refusals import Refusal
from storage.db import adding_upsert, dialect_insert
from storage.models_ledger import EntryKind, WithdrawalStatus
from storage.tables import ADJUSTMENTS, BALANCES, COMMISSIONS, ENTRIES, WITHDRAWALS

BUCKETS = ("pending_fen", "available_fen", "withdrawing_fen", "withdrawn_fen")
ZERO = dict.fromkeys(BUCKETS, 0)
# Every entry but withdrawals is an earning: what a distributor earned is these entries, net.
EARNING_KINDS = (EntryKind.COMMISSION, EntryKind.REVERSAL, EntryKind.REWARD, EntryKind.ADJUSTMENT)
KIND_NAMES = {EntryKind.COMMISSION: "佣金", EntryKind.REVERSAL: "退款冲回", EntryKind.WITHDRAWAL: "提现",
              EntryKind.WITHDRAWAL_REFUND: "提现退回", EntryKind.REWARD: "奖励", EntryKind.ADJUSTMENT: "调整"}
MAX_ADJUSTMENT_FEN = 10**10  # ¥100,000,000: a typo guard, far above any real correction


@dataclass
class Delta:
    """Changes to one balance row."""

    pending_fen: int = 0
    available_fen: int = 0
    withdrawing_fen: int = 0
    withdrawn_fen: int = 0

    def __bool__(self) -> bool:
        return any((self.pending_fen, self.available_fen, self.withdrawing_fen, self.withdrawn_fen))

    def __add__(self, other: Delta) -> Delta:
        return Delta(self.pending_fen + other.pending_fen, self.available_fen + other.available_fen,
                     self.withdrawing_fen + other.withdrawing_fen, self.withdrawn_fen + other.withdrawn_fen)


# ---- statements, built once ---------------------------------------------------------------------
_INSERT_ENTRY = ENTRIES.insert()
_READ_BALANCE = select(*(BALANCES.c[b] for b in BUCKETS)).where(BALANCES.c.distributor_id == bindparam("did"))
_BALANCES_OF = (select(BALANCES.c.distributor_id, *(BALANCES.c[b] for b in BUCKETS))
                .where(BALANCES.c.distributor_id.in_(bindparam("ids", expanding=True))))
_LOCK_BALANCES = (select(BALANCES.c.distributor_id).where(BALANCES.c.distributor_id.in_(bindparam("ids", expanding=True)))
                  .order_by(BALANCES.c.distributor_id).with_for_update())
_WITHDRAW = (update(BALANCES)
             .where(BALANCES.c.distributor_id == bindparam("did"), BALANCES.c.available_fen >= bindparam("amount"))
             .values(available_fen=BALANCES.c.available_fen - bindparam("amount"),
                     withdrawing_fen=BALANCES.c.withdrawing_fen + bindparam("amount")))
_NEW_WITHDRAWAL = WITHDRAWALS.insert().returning(WITHDRAWALS.c.id)


def add_to_balances(session: Session, deltas: Mapping[int, Delta]) -> None:
    """Add the deltas to the balance rows (creating missing rows), in one executemany.

    Rows are touched in id order so that two transactions on PostgreSQL cannot deadlock."""
    rows = [{"distributor_id": did, "pending_fen": d.pending_fen, "available_fen": d.available_fen,
             "withdrawing_fen": d.withdrawing_fen, "withdrawn_fen": d.withdrawn_fen}
            for did, d in sorted(deltas.items()) if d]
    if rows:
        session.connection().execute(adding_upsert(session, BALANCES, "distributor_id", BUCKETS), rows)


def append_entries(session: Session, entries: Iterable[Mapping[str, Any]]) -> None:
    """Append entries: dicts with distributor_id, kind, amount_fen, ref, created_at and maybe
    order_no, withdrawal_id, counted_at (an order's paid time; else when posted). The unique
    (distributor_id, kind, ref) makes a second posting fail."""
    rows = [{"order_no": None, "withdrawal_id": None, **e} for e in entries]
    if rows:
        session.connection().execute(_INSERT_ENTRY, rows)


_C = COMMISSIONS.c
_MONTH_ACCRUED = (select(_C.distributor_id, func.sum(_C.amount_fen - _C.reversed_fen))
                  .where(_C.distributor_id.in_(bindparam("ids", expanding=True)), _C.created_at >= bindparam("since"))
                  .group_by(_C.distributor_id))


def month_accrued(session: Session, ids: list[int], now: datetime) -> dict[int, int]:
    """Each receiver's commission credited this month, net of reversals (0 for none): the monthly
    cap's count (domain.orders). On PostgreSQL their balance rows are locked first, so two
    processes cannot both fill one cap."""
    if session.get_bind().dialect.name == "postgresql":
        ensure_balances(session, ids, lock=True)
    rows = session.connection().execute(_MONTH_ACCRUED, {"ids": ids, "since": month_start(now)}).all()
    return {**dict.fromkeys(ids, 0), **{i: int(v or 0) for i, v in rows}}


def ensure_balances(session: Session, ids: Iterable[int], *, lock: bool = False) -> None:
    """Make sure the balance rows exist; `lock` holds them until commit (PostgreSQL), in id order."""
    ids = sorted(set(ids))
    if not ids:
        return
    session.connection().execute(dialect_insert(session, BALANCES).on_conflict_do_nothing(index_elements=["distributor_id"]),
                    [{"distributor_id": i, **ZERO} for i in ids])
    if lock and session.get_bind().dialect.name == "postgresql":
        session.connection().execute(_LOCK_BALANCES, {"ids": ids})


def balance(session: Session, distributor_id: int) -> dict[str, int]:
    """The four balances (all zero before the first entry)."""
    row = session.connection().execute(_READ_BALANCE, {"did": distributor_id}).first()
    return dict(zip(BUCKETS, row, strict=True)) if row is not None else dict(ZERO)


def balances(session: Session, ids: Iterable[int]) -> dict[int, dict[str, int]]:
    ids = list(ids)
    found = {r[0]: dict(zip(BUCKETS, r[1:], strict=True))
             for r in session.connection().execute(_BALANCES_OF, {"ids": ids}).all()} if ids else {}
    return {i: found.get(i, dict(ZERO)) for i in ids}


def withdraw(session: Session, distributor_id: int, amount_fen: int, now: datetime, *,
             source: str = "chat") -> int | None:
    """Move `amount_fen` from available to withdrawing and post the withdrawal entry; the new
    withdrawal's id, or None when available is short (nothing changed)."""
    if session.connection().execute(_WITHDRAW, {"did": distributor_id, "amount": amount_fen}).rowcount != 1:
        return None
    wid = session.connection().execute(_NEW_WITHDRAWAL, {"distributor_id": distributor_id, "amount_fen": amount_fen,
                                            "status": WithdrawalStatus.PENDING, "source": source,
                                            "requested_at": now}).scalar_one()
    append_entries(session, [{"distributor_id": distributor_id, "kind": EntryKind.WITHDRAWAL,
                              "amount_fen": -amount_fen, "ref": f"withdrawal:{wid}", "withdrawal_id": wid,
                              "created_at": now}])
    return wid


def settle(session: Session, distributor_id: int, now: datetime) -> tuple[int, int] | None:
    """An exited distributor's available money becomes a withdrawal request (no minimum: it is
    the settlement). (withdrawal id, amount), or None when nothing is available."""
    ensure_balances(session, [distributor_id], lock=True)
    amount = balance(session, distributor_id)["available_fen"]
    if amount <= 0:
        return None
    wid = withdraw(session, distributor_id, amount, now, source="exit")
    return (wid, amount) if wid is not None else None


def ledger_sums(session: Session, distributor_id: int | None = None) -> dict[int, dict[str, int]]:
    """Per distributor: the sum of all entries and the sum of withdrawal-type entries (checks)."""
    wd = func.sum(ENTRIES.c.amount_fen).filter(
        ENTRIES.c.kind.in_((EntryKind.WITHDRAWAL, EntryKind.WITHDRAWAL_REFUND)))
    stmt = select(ENTRIES.c.distributor_id, func.sum(ENTRIES.c.amount_fen), wd).group_by(ENTRIES.c.distributor_id)
    if distributor_id is not None:
        stmt = stmt.where(ENTRIES.c.distributor_id == distributor_id)
    return {r[0]: {"total": int(r[1] or 0), "withdrawals": int(r[2] or 0)} for r in session.connection().execute(stmt).all()}


def decide_withdrawal(session: Session, withdrawal_id: int, approve: bool, now: datetime,
                      reason: str | None = None, *, paid_out: bool = True) -> dict[str, Any] | None:
    """Approve (withdrawing → withdrawn) or reject (withdrawing → available, plus a
    withdrawal_refund entry). None when there is no such withdrawal; Refusal already_decided when it
    was.

    `paid_out=False` (payouts through WeChat Pay): an approval leaves the money withdrawing until
    the transfer's final state (domain.payouts)."""
    status = WithdrawalStatus.APPROVED if approve else WithdrawalStatus.REJECTED
    row = session.connection().execute(
        update(WITHDRAWALS)
        .where(WITHDRAWALS.c.id == withdrawal_id, WITHDRAWALS.c.status == WithdrawalStatus.PENDING)
        .values(status=status, decided_at=now, reason=reason, pay_transfer=approve and not paid_out)
        .returning(WITHDRAWALS.c.distributor_id, WITHDRAWALS.c.amount_fen)).first()
    if row is None:
        current = session.connection().scalar(select(WITHDRAWALS.c.status).where(WITHDRAWALS.c.id == withdrawal_id))
        if current is None:
            return None
        raise Refusal("already_decided", f"Withdrawal {withdrawal_id} was already {current}.",
                      sentence=f"申请 {withdrawal_id} 已经处理过（{current}）。", details={"status": current})
    did, amount = row
    if approve:
        if paid_out:
            add_to_balances(session, {did: Delta(withdrawing_fen=-amount, withdrawn_fen=amount)})
    else:
        add_to_balances(session, {did: Delta(withdrawing_fen=-amount, available_fen=amount)})
        append_entries(session, [{"distributor_id": did, "kind": EntryKind.WITHDRAWAL_REFUND, "amount_fen": amount,
                                  "ref": f"withdrawal:{withdrawal_id}", "withdrawal_id": withdrawal_id,
                                  "created_at": now}])
    return {"distributor_id": did, "amount_fen": amount, "status": status}


def withdrawal_paid_out(session: Session, distributor_id: int, amount_fen: int) -> None:
    """A withdrawal's transfer arrived: withdrawing → withdrawn (its entry was posted on request)."""
    add_to_balances(session, {distributor_id: Delta(withdrawing_fen=-amount_fen, withdrawn_fen=amount_fen)})


def withdrawal_returned(session: Session, distributor_id: int, withdrawal_id: int, amount_fen: int, ref: str,
                        now: datetime) -> None:
    """A withdrawal's transfer failed for good: withdrawing → available, with a withdrawal_refund
    entry under `ref` (one per failed transfer)."""
    add_to_balances(session, {distributor_id: Delta(withdrawing_fen=-amount_fen, available_fen=amount_fen)})
    append_entries(session, [{"distributor_id": distributor_id, "kind": EntryKind.WITHDRAWAL_REFUND,
                              "amount_fen": amount_fen, "ref": ref, "withdrawal_id": withdrawal_id,
                              "created_at": now}])


def withdrawal_again(session: Session, distributor_id: int, withdrawal_id: int, amount_fen: int, ref: str,
                     now: datetime) -> bool:
    """An admin retries a failed transfer: the money returned to available goes back to
    withdrawing (a new withdrawal entry under `ref`), as one conditional update like a request.
    False when available is short now (nothing changed)."""
    if session.connection().execute(_WITHDRAW, {"did": distributor_id, "amount": amount_fen}).rowcount != 1:
        return False
    append_entries(session, [{"distributor_id": distributor_id, "kind": EntryKind.WITHDRAWAL,
                              "amount_fen": -amount_fen, "ref": ref, "withdrawal_id": withdrawal_id,
                              "created_at": now}])
    return True


def adjust(session: Session, distributor_id: int, amount_fen: int, reason: str, actor: str,
           now: datetime) -> dict[str, Any]:
    """An admin's correction (±, counted in available), kept with its reason and who made it;
    the ledger entry posted (ref `adjustment:<id>`)."""
    aid = session.connection().execute(ADJUSTMENTS.insert().returning(ADJUSTMENTS.c.id), {
        "distributor_id": distributor_id, "amount_fen": amount_fen, "reason": reason, "actor": actor,
        "created_at": now}).scalar_one()
    entry = {"distributor_id": distributor_id, "kind": EntryKind.ADJUSTMENT, "amount_fen": amount_fen,
             "ref": f"adjustment:{aid}", "created_at": now}
    append_entries(session, [entry])
    add_to_balances(session, {distributor_id: Delta(available_fen=amount_fen)})
    eid = session.connection().scalar(select(ENTRIES.c.id).where(
        ENTRIES.c.distributor_id == distributor_id, ENTRIES.c.kind == EntryKind.ADJUSTMENT,
        ENTRIES.c.ref == entry["ref"]))
    return {"id": eid, "kind": EntryKind.ADJUSTMENT.value, "amount_fen": amount_fen, "order_no": None,
            "created_at": now, "reason": reason, "actor": actor}
