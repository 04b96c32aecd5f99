"""Money notices through the outbox: new commission (batched: one message per distributor per
window, however many orders), commission made available, an exited distributor's settlement,
which is where their newly available money goes instead, and an admin's adjustment (API and
console alike).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.config import Config
from domain.config_sections import WebhookEvent
from domain.contests import SaleChange
from domain.outbox_rows import Merge, enqueue, merge_notices
from domain.messages import Text
from domain.formats import yuan
from domain.ledger import adjust, balance, settle
from storage.models import DistributorStatus
from storage.tables import DISTRIBUTORS
PERSON_COLUMNS = ("id", "code", "openid", "rank", "status", "inviter_id")

# Commission notices are batched: one message per distributor per window, sent when it ends. The
# notices reach a distributor within 5 seconds of the event (CONTRACT §5): the window, plus the
# outbox's idle poll (wechat.outbox), stays under that.
NOTICE_WINDOW = timedelta(seconds=3)


@dataclass
class Person:
    """What the money side needs of a distributor."""

    id: int
    code: str
    openid: str
    rank: str
    status: str
    inviter_id: int | None


@dataclass
class Credits:
    """What a batch of changes did, for what follows it: commission credited and made available
    (notices), credited sales moved (contest totals, daily totals), orders completed (rank
    promotion), events for webhooks."""

    credited: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # receiver -> amounts
    freed: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # receiver -> fen
    people: dict[int, Person] = field(default_factory=dict)  # whoever is known already
    sales: list[SaleChange] = field(default_factory=list)
    completed: set[int] = field(default_factory=set)  # distributors credited with a completed order
    # Webhook events by type: (the distributor, the event's data), in order (domain.webhook_events.emit).
    hooks: dict[WebhookEvent, list[tuple[int, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, other: Credits) -> None:
        for did, amounts in other.credited.items():
            self.credited[did].extend(amounts)
        for did, fen in other.freed.items():
            self.freed[did] += fen
        self.people.update(other.people)
        self.sales.extend(other.sales)
        self.completed |= other.completed
        for type_, events in other.hooks.items():
            self.hooks[type_].extend(events)


def window_end(now: datetime) -> tuple[int, datetime]:
    step = int(NOTICE_WINDOW.total_seconds())
    index = int(now.timestamp()) // step
    return index, datetime.fromtimestamp((index + 1) * step, UTC)


def credit_notice(freeze_days: int):  # noqa: ANN201
    def render(c: dict[str, int]) -> Text:
        when = "订单完成后即可提现" if freeze_days == 0 else f"订单完成 {freeze_days} 天后可提现"
        return Text(f"新佣金入账：{c.get('n', 0)} 笔订单，共 {yuan(c.get('fen', 0))}（待结算，{when}）。\n"
                    "回复“收益”查看详情。")
    return render


def available_notice(c: dict[str, int]) -> Text:
    return Text(f"佣金已解冻：{yuan(c.get('fen', 0))} 现在可以提现了。\n回复“提现 金额”申请提现，例如：提现 12.50。")


def settlement_notice(c: dict[str, int]) -> Text:
    return Text(f"您退出前的佣金 {yuan(c.get('fen', 0))} 已解冻，已自动提交为提现申请，审核通过后打款。")


def settle_and_notify(session: Session, config: Config, now: datetime, credits: Credits) -> None:
    """Batched notices for credited and newly available commission; an exited distributor's newly
    available money becomes their next settlement withdrawal instead."""
    credited, freed, people = credits.credited, credits.freed, dict(credits.people)
    missing = {*credited, *freed} - set(people)
    if missing:
        d = DISTRIBUTORS.c
        for row in session.connection().execute(select(*(d[n] for n in PERSON_COLUMNS)).where(d.id.in_(list(missing)))).all():
            people[row[0]] = Person(*row)
    index, due = window_end(now)
    notices: list[Merge] = []
    for did, amounts in credited.items():
        notices.append(Merge(f"credit:{did}:{index}", people[did].openid, {"n": len(amounts), "fen": sum(amounts)},
                             credit_notice(config.distribution.freeze_days), due))
    # Money made available is summed per distributor by the run that frees it: told at once.
    for did, fen in sorted(freed.items()):
        p = people[did]
        if p.status == DistributorStatus.EXITED:
            settled = settle(session, did, now)
            if settled:
                notices.append(Merge(f"settle:{did}:{index}", p.openid, {"fen": settled[1]}, settlement_notice, now))
        elif fen > 0:
            notices.append(Merge(f"available:{did}:{index}", p.openid, {"fen": fen}, available_notice, now))
    merge_notices(session, notices, now)


def adjust_and_tell(session: Session, distributor_id: int, openid: str, amount_fen: int, reason: str, actor: str,
                    now: datetime) -> dict[str, Any]:
    """An admin's adjustment (domain.ledger.adjust) and the distributor's notice of it; the entry."""
    entry = adjust(session, distributor_id, amount_fen, reason, actor, now)
    sign = "+" if amount_fen > 0 else "−"
    enqueue(session, f"adjustment:{entry['id']}", openid, Text(
        f"您的账户有一笔调整：{sign}{yuan(abs(amount_fen))}\n原因：{reason}\n"
        f"当前可提现 {yuan(balance(session, distributor_id)['available_fen'])}。回复“收益”查看明细。"), now=now)
    return entry
