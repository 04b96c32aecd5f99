"""What a batch of order events reads for the commission plans (domain.plans), once per batch and
only when it needs it: the live packs' per-SKU rates when a paid event names a SKU, and, with the
repeat reward on, each buyer's latest earlier order through each distributor (one grouped read
through ix_orders_buyer). The OrderBook (domain.orders) asks `terms` for each paid order and tells
`paid` of each order it books, so a second order of the same buyer in the same batch repeats too.
(A paid event older than a stored order of the same buyer and distributor, which only a shop
sending events out of order makes, is judged against that later order: no repeat.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from domain import plans
from domain.config import Config
from storage.models_ledger import OrderStatus
from storage.tables import CONTENT_LIVE, CONTENT_PACKS, ORDERS

_LIVE_RATES = (select(CONTENT_PACKS.c.sku_rates)
               .join(CONTENT_LIVE, CONTENT_LIVE.c.pack_id == CONTENT_PACKS.c.id)
               .where(CONTENT_PACKS.c.sku_rates.is_not(None))
               .order_by(CONTENT_LIVE.c.activated_at.desc(), CONTENT_LIVE.c.name))  # as content.store.PackLibrary.live
_o = ORDERS.c
# Each buyer's latest order through each distributor before the batch's latest one, inside the
# window: a row per pair, however often they bought (reading every order cost more than the rest of
# the batch). By buyer alone, one list to expand; ix_orders_buyer holds every column read.
_EARLIER = (select(_o.distributor_id, _o.buyer_openid, func.max(_o.paid_at))
            .where(_o.buyer_openid.in_(bindparam("buyers", expanding=True)), _o.paid_at >= bindparam("since"),
                   _o.paid_at < bindparam("until"), _o.status != OrderStatus.CANCELLED)
            .group_by(_o.buyer_openid, _o.distributor_id))
Terms = tuple[Sequence[Decimal] | None, Decimal]  # the SKU's rates (None: the ranks'), the depth-0 extra


class PlanReads:
    """The plans' part of one batch: what was read, and the batch's own paid orders."""

    def __init__(self, config: Config):
        self.repeat = config.rewards.repeat if config.rewards.repeat_on else None
        self.sku_rates: dict[str, tuple[Decimal, ...]] = {}
        self.bought: dict[tuple[int, str], list[datetime]] = defaultdict(list)

    def load(self, session: Session, paid: Sequence[tuple[int, str | None, str | None, datetime]]) -> None:
        """Read for the batch's paid events: (credited distributor id, sku, buyer_openid, paid at)."""
        conn = session.connection()
        if any(sku for _, sku, _, _ in paid):
            for (rates,) in conn.execute(_LIVE_RATES):
                for sku, values in rates.items():
                    self.sku_rates.setdefault(sku, tuple(Decimal(v) for v in values))
        buying = [(did, buyer, at) for did, _, buyer, at in paid if buyer]
        if self.repeat is None or not buying:
            return
        since = min(at for _, _, at in buying) - timedelta(days=self.repeat.window_days)
        until = max(at for _, _, at in buying)
        wanted = {(did, buyer) for did, buyer, _ in buying}
        for did, buyer, at in conn.execute(_EARLIER, {"buyers": sorted({b for _, b, _ in buying}), "since": since,
                                                      "until": until}):
            if (did, buyer) in wanted:
                self.bought[(did, buyer)].append(at)

    def terms(self, distributor_id: int, sku: str | None, buyer: str | None, paid_at: datetime) -> Terms:
        extra = Decimal(0)
        if self.repeat is not None and buyer and plans.is_repeat(
                paid_at, self.bought.get((distributor_id, buyer), ()), self.repeat.window_days):
            extra = self.repeat.extra_rate
        return plans.rates_for_sku(sku, self.sku_rates), extra

    def paid(self, distributor_id: int, buyer: str | None, paid_at: datetime) -> None:
        if self.repeat is not None and buyer:
            self.bought[(distributor_id, buyer)].append(paid_at)
