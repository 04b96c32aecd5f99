"""Contests (CONTRACT §4.6): running totals kept as order events arrive.

A sales or sku_sales contest keeps one score row per distributor (contest_scores), moved by each
order event's change to the distributor's credited sales inside the contest's window: + the paid
amount, − a refund, − what was left of a cancelled order. Live standings read it by index.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.models_engage import ContestStatus
from storage.tables import CONTEST_SCORES, CONTESTS

SALES_METRICS = ("sales", "sku_sales")


@dataclass(frozen=True)
class SaleChange:
    """A change to a distributor's credited sales: `fen` > 0 when an order is paid, < 0 on a
    refund or a cancellation; `paid_at` places it in a contest's window."""

    distributor_id: int
    paid_at: datetime
    sku: str | None
    fen: int


_OPEN_SALES_CONTESTS = select(CONTESTS.c.id, CONTESTS.c.metric, CONTESTS.c.skus, CONTESTS.c.starts_at,
                              CONTESTS.c.ends_at).where(CONTESTS.c.status != ContestStatus.SETTLED,
                                                        CONTESTS.c.metric.in_(SALES_METRICS))


@functools.cache
def _add_scores(dialect: str) -> Any:
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(CONTEST_SCORES)
    s = CONTEST_SCORES.c
    return stmt.on_conflict_do_update(
        index_elements=["contest_id", "distributor_id"],
        set_={"value": s.value + stmt.excluded.value,
              "reached_at": case((stmt.excluded.value > 0, stmt.excluded.reached_at), else_=s.reached_at)})


def counts(contest: Any, change: SaleChange) -> bool:
    """Whether a change counts in a sales or sku_sales contest (its window, its SKUs)."""
    if not (contest.starts_at <= change.paid_at < contest.ends_at):
        return False
    return contest.metric == "sales" or (change.sku is not None and change.sku in (contest.skus or ()))


def record_sales(session: Session, changes: Sequence[SaleChange]) -> None:
    """Move the running totals of every unsettled sales contest the changes count in: one read of
    the open contests and one statement for all the batch's changes."""
    if not changes:
        return
    contests = session.connection().execute(_OPEN_SALES_CONTESTS).all()
    totals: dict[tuple[int, int], list[Any]] = {}
    for c in contests:
        for ch in changes:
            if counts(c, ch):
                t = totals.setdefault((c.id, ch.distributor_id), [0, ch.paid_at, False])
                t[0] += ch.fen
                if ch.fen > 0 and (not t[2] or ch.paid_at > t[1]):
                    t[1], t[2] = ch.paid_at, True
    if totals:
        # In key order: two transactions on PostgreSQL lock the rows in one order, no deadlock.
        rows = [{"contest_id": cid, "distributor_id": did, "value": fen, "reached_at": at}
                for (cid, did), (fen, at, _) in sorted(totals.items()) if fen]
        if rows:
            session.connection().execute(_add_scores(session.get_bind().dialect.name), rows)
