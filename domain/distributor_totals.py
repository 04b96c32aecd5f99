"""Each distributor's running totals (storage DistributorTotals): credited sales, orders and
commission per China-time month and for all time (month 0), added to by every order-event batch
in one statement, so that the console's 分销员 list reads and sorts a page of figures on an index
instead of summing orders. They count what domain.figures counts: sales in the month the order
was paid, paid less refunded, a cancelled order nothing; commission as commission entries less
reversals, also in the month the order was paid. Money is integer fen."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from domain.contests import SaleChange
from domain.formats import month_of
from storage.db import adding_upsert
from storage.models_ledger import EntryKind
from storage.tables import DISTRIBUTOR_TOTALS

ALL_TIME = 0  # the month of the all-time row
COUNTERS = ("sales_fen", "orders", "commission_fen")
COMMISSION_KINDS = (EntryKind.COMMISSION, EntryKind.REVERSAL)


@dataclass(frozen=True)
class Totals:
    sales_fen: int = 0
    orders: int = 0
    commission_fen: int = 0


def add_to_totals(session: Session, sales: Sequence[SaleChange], entries: Iterable[Mapping[str, Any]]) -> None:
    """Add an order-event batch to the totals: its sales changes and its commission and reversal
    entries to the months their orders were paid in (the entries' counted_at), and to the
    all-time rows. One statement, rows in key order (two transactions on PostgreSQL lock them in
    one order)."""
    rows: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for ch in sales:
        for key in ((ch.distributor_id, ALL_TIME), (ch.distributor_id, month_of(ch.paid_at).key)):
            rows[key]["sales_fen"] += ch.fen
            rows[key]["orders"] += ch.orders
    for e in entries:
        if e["kind"] in COMMISSION_KINDS:
            for key in ((e["distributor_id"], ALL_TIME), (e["distributor_id"], month_of(e["counted_at"]).key)):
                rows[key]["commission_fen"] += e["amount_fen"]
    out = [{"distributor_id": did, "month": month, **v} for (did, month), v in sorted(rows.items()) if any(v.values())]
    if out:
        session.connection().execute(adding_upsert(session, DISTRIBUTOR_TOTALS, ("distributor_id", "month"), COUNTERS),
                                     out)


_T = DISTRIBUTOR_TOTALS.c
_TOTALS_OF = (select(_T.distributor_id, _T.month, *(_T[c] for c in COUNTERS))
              .where(_T.distributor_id.in_(bindparam("ids", expanding=True)),
                     _T.month.in_(bindparam("months", expanding=True))))


def totals_of(session: Session, ids: Sequence[int], months: Sequence[int]) -> dict[tuple[int, int], Totals]:
    """The totals of these distributors in these months (ALL_TIME for all time), by (id, month);
    a pair without a row is not there (read it as Totals())."""
    if not ids:
        return {}
    rows = session.connection().execute(_TOTALS_OF, {"ids": list(ids), "months": list(months)})
    return {(did, month): Totals(int(s), int(n), int(c)) for did, month, s, n, c in rows}
