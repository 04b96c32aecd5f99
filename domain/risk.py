"""Risk rules (CONTRACT §4.12): pure functions over the facts they need, the flags they raise,
and the admins' notices of new flags.

The rules run where the data arrives:
- order events: `Watch` collects what a batch of events did (domain.orders.OrderBook) and, at the
  batch's end, reads the facts of the batch's distributors at once: `self_dealing` (the buyer is
  the credited distributor's inviter or anyone above within max_levels: the chain is loaded
  already), `burst` (more than burst_orders orders paid within burst_minutes, one grouped count)
  and `refund_ratio` (the refunded share of a distributor's last refund_window orders above the
  ratio, by amount, a cancelled order counting as refunded in full; only once they have that many
  orders);
- registration: `signup_burst` (more than signup_burst direct sign-ups within one hour);
- the `risk` job: a sign-up burst whose recruits made no sale within 7 days (`follow_up`).

A flag is open until an admin dismisses it or suspends the distributor (domain.suspension);
there is one open flag per distributor and rule (the unique open_key), so a rule that keeps
firing adds nothing until the open flag is resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, Protocol

from sqlalchemy import bindparam, func, select, union_all, update
from sqlalchemy.orm import Session

from domain.config import Config
from domain.config_sections import RiskConfig
from domain.formats import china_time, yuan
from domain.messages import Text
from domain.outbox_rows import Queued, enqueue_many, template_data
from storage.db import dialect_insert, is_postgres
from storage.models_risk import FlagStatus
from storage.tables import DISTRIBUTORS, ORDERS, RISK_FLAGS

SELF_DEALING, BURST, REFUND_RATIO, SIGNUP_BURST = "self_dealing", "burst", "refund_ratio", "signup_burst"
RULES = (SELF_DEALING, BURST, REFUND_RATIO, SIGNUP_BURST)
RULE_NAMES = {SELF_DEALING: "上级自购", BURST: "订单激增", REFUND_RATIO: "退款率高", SIGNUP_BURST: "注册激增"}
SIGNUP_WINDOW = timedelta(hours=1)
SIGNUP_FOLLOW_UP = timedelta(days=7)
SHOWN = 5  # order numbers or codes named in a detail
FOLLOW_UP_BATCH = 200
_UNION_CHUNK = 100  # SQLite allows 500 terms in a compound SELECT


@dataclass(frozen=True)
class Finding:
    """What a rule found about one distributor, in words an admin can judge."""

    distributor_id: int
    code: str
    rule: str
    detail: str
    facts: dict[str, Any] = field(default_factory=dict)
    follow_up_at: datetime | None = None


class Link(Protocol):
    """One distributor of an order's chain (domain.notices.Person): the credited one first."""

    id: int
    code: str
    openid: str


@dataclass(frozen=True)
class OrderFacts:
    order_no: str
    amount_fen: int
    refunded_fen: int
    status: str


def _listed(items: Sequence[str]) -> str:
    return "、".join(items[:SHOWN]) + (" 等" if len(items) > SHOWN else "")


# ---- the rules: pure functions -------------------------------------------------------------------
def self_dealing(order_no: str, amount_fen: int, buyer_openid: str | None, chain: Sequence[Link],
                 max_levels: int) -> Finding | None:
    """The buyer is the credited distributor's inviter, or anyone above them within max_levels."""
    if not buyer_openid or not chain:
        return None
    for depth, above in enumerate(chain[1:max_levels], start=1):
        if above.openid == buyer_openid:
            who = "直接邀请人" if depth == 1 else f"第 {depth} 级上级"
            return Finding(chain[0].id, chain[0].code, SELF_DEALING,
                           f"订单 {order_no}（{yuan(amount_fen)}）的买家是其{who} {above.code}",
                           {"order_no": order_no, "buyer_code": above.code, "depth": depth})
    return None


def burst(distributor_id: int, code: str, paid: int, order_nos: Sequence[str], cfg: RiskConfig) -> Finding | None:
    """More than burst_orders orders paid within burst_minutes (`paid` of them, `order_nos` some)."""
    if paid <= cfg.burst_orders:
        return None
    return Finding(distributor_id, code, BURST,
                   f"{cfg.burst_minutes} 分钟内 {paid} 笔已付款订单：{_listed(list(order_nos))}",
                   {"orders": paid, "minutes": cfg.burst_minutes})


def refund_ratio(distributor_id: int, code: str, last: Sequence[OrderFacts], cfg: RiskConfig) -> Finding | None:
    """The refunded share, by amount, of the last refund_window orders (newest first) is above
    refund_ratio; a cancelled order counts as refunded in full. Judged only on a full window."""
    window = list(last[:cfg.refund_window])
    if len(window) < cfg.refund_window:
        return None
    total = sum(o.amount_fen for o in window)
    refunded = [o for o in window if o.refunded_fen > 0 or o.status == "cancelled"]
    taken = sum(o.amount_fen if o.status == "cancelled" else o.refunded_fen for o in window)
    if total <= 0 or Fraction(taken, total) <= Fraction(str(cfg.refund_ratio)):
        return None
    share = taken * 100 // total
    return Finding(distributor_id, code, REFUND_RATIO,
                   f"最近 {len(window)} 笔订单退款 {share}%（{yuan(taken)} / {yuan(total)}），"
                   f"{len(refunded)} 笔有退款或取消：{_listed([o.order_no for o in refunded])}",
                   {"orders": len(window), "refunded_fen": taken, "total_fen": total})


def signup_burst(inviter_id: int, code: str, signups: Sequence[tuple[int, str]], cfg: RiskConfig,
                 now: datetime) -> Finding | None:
    """More than signup_burst direct sign-ups (id, code) within the last hour."""
    if len(signups) <= cfg.signup_burst:
        return None
    return Finding(inviter_id, code, SIGNUP_BURST,
                   f"1 小时内直接邀请 {len(signups)} 人注册：{_listed([c for _, c in signups])}",
                   {"ids": [i for i, _ in signups]}, follow_up_at=now + SIGNUP_FOLLOW_UP)


def silent_signups(inviter_id: int, code: str, ids: Sequence[int], sold: int) -> Finding | None:
    """A sign-up burst seven days on: none of those sign-ups has sold."""
    if not ids or sold > 0:
        return None
    return Finding(inviter_id, code, SIGNUP_BURST,
                   f"7 天前 1 小时内直接邀请的 {len(ids)} 人至今无一人成交（疑似刷注册）",
                   {"ids": list(ids), "silent": True})


# ---- raising flags -------------------------------------------------------------------------------
def notice(code: str, rule: str, detail: str) -> Text:
    return Text(f"【风险提示】分销员 {code}：{RULE_NAMES.get(rule, rule)}\n{detail}\n"
                "请到管理后台“风险”页处理；处理前不能批准其提现。")


def raise_flags(session: Session, config: Config, findings: Sequence[Finding], now: datetime) -> list[int]:
    """Store each finding as an open flag unless that distributor has one open for the rule, and
    tell admin.notify_openids of each new one; the new flags' ids. Findings are rare, so one
    statement each is cheap."""
    if not findings:
        return []
    insert = dialect_insert(session, RISK_FLAGS).on_conflict_do_nothing(index_elements=["open_key"]).returning(
        RISK_FLAGS.c.id)
    made: list[int] = []
    items: list[Queued] = []
    seen: set[str] = set()
    for f in findings:
        key = f"{f.distributor_id}:{f.rule}"
        if key in seen:
            continue
        seen.add(key)
        fid = session.connection().execute(insert, {
            "distributor_id": f.distributor_id, "rule": f.rule, "detail": f.detail, "facts": f.facts,
            "status": FlagStatus.OPEN, "open_key": key, "created_at": now, "follow_up_at": f.follow_up_at}).scalar()
        if fid is None:
            continue
        made.append(fid)
        text = notice(f.code, f.rule, f.detail)
        items += [Queued(f"risk:{fid}:{o}", o, text, template_data(text, "风险提示")) for o in config.admin.notify_openids]
    enqueue_many(session, items, now=now)
    return made


# ---- order events: what a batch needs, read at once ----------------------------------------------------
# Paid orders per distributor since a time, for those without an open burst flag (a busy seller
# already flagged is not counted again with every batch): built once, run with every batch.
_PAID_SINCE = (select(ORDERS.c.distributor_id, func.count())
               .where(ORDERS.c.distributor_id.in_(bindparam("ids", expanding=True)),
                      ORDERS.c.distributor_id.not_in(select(RISK_FLAGS.c.distributor_id).where(
                          RISK_FLAGS.c.rule == BURST, RISK_FLAGS.c.status == FlagStatus.OPEN)),
                      ORDERS.c.paid_at >= bindparam("since"))
               .group_by(ORDERS.c.distributor_id))
_PAID_LATELY = (select(ORDERS.c.order_no).where(ORDERS.c.distributor_id == bindparam("did"),
                                                 ORDERS.c.paid_at >= bindparam("since"))
                .order_by(ORDERS.c.paid_at.desc()).limit(SHOWN + 1))


class Watch:
    """Collects what a batch of order events did, then judges the batch's distributors with one
    grouped read per rule (OrderBook.finish). Does nothing when risk.enabled is false."""

    def __init__(self, config: Config):
        self.config, self.on = config, config.risk.enabled
        self.findings: list[Finding] = []
        self.paid: dict[int, str] = {}  # distributor id -> code
        self.refunded: set[int] = set()

    def paid_order(self, order_no: str, amount_fen: int, buyer_openid: str | None, chain: Sequence[Link]) -> None:
        if not self.on or not chain:
            return
        self.paid[chain[0].id] = chain[0].code
        found = self_dealing(order_no, amount_fen, buyer_openid, chain, self.config.distribution.max_levels)
        if found is not None:
            self.findings.append(found)

    def refund(self, distributor_id: int) -> None:
        if self.on:
            self.refunded.add(distributor_id)

    def finish(self, session: Session, now: datetime) -> list[int]:
        if not self.on:
            return []
        cfg = self.config.risk
        if self.paid:
            since = now - timedelta(minutes=cfg.burst_minutes)
            counts = session.connection().execute(_PAID_SINCE, {"ids": list(self.paid), "since": since}).all()
            over = {did: n for did, n in counts if n > cfg.burst_orders}
            for did, n in over.items():  # rare: only a distributor over the line
                nos = session.connection().scalars(_PAID_LATELY, {"did": did, "since": since}).all()
                found = burst(did, self.paid[did], n, nos, cfg)
                if found is not None:
                    self.findings.append(found)
        if self.refunded:
            codes, last = dict(session.connection().execute(
                select(DISTRIBUTORS.c.id, DISTRIBUTORS.c.code).where(DISTRIBUTORS.c.id.in_(list(self.refunded))))
                .all()), last_orders(session, sorted(self.refunded), cfg.refund_window)
            for did in sorted(self.refunded):
                found = refund_ratio(did, codes.get(did, "?"), last.get(did, []), cfg)
                if found is not None:
                    self.findings.append(found)
        return raise_flags(session, self.config, self.findings, now)


def last_orders(session: Session, ids: Sequence[int], n: int) -> dict[int, list[OrderFacts]]:
    """Each distributor's last n orders, newest first: one statement per 100 distributors, each
    part an index range of (distributor_id, paid_at) that stops after n rows."""
    o, found = ORDERS.c, {}
    for start in range(0, len(ids), _UNION_CHUNK):
        parts = [select(o.distributor_id, o.order_no, o.amount_fen, o.refunded_fen, o.status, o.paid_at)
                 .where(o.distributor_id == did).order_by(o.paid_at.desc(), o.order_no.desc()).limit(n)
                 .subquery().select() for did in ids[start:start + _UNION_CHUNK]]
        stmt = parts[0] if len(parts) == 1 else union_all(*parts)
        for did, no, amount, refunded, status, paid_at in session.connection().execute(stmt).all():
            found.setdefault(did, []).append((paid_at, no, OrderFacts(no, amount, refunded, status)))
    # A UNION ALL keeps no order: newest first again.
    return {did: [facts for *_, facts in sorted(rows, key=lambda r: (r[0], r[1]), reverse=True)]
            for did, rows in found.items()}


# ---- registration and the risk job ---------------------------------------------------------------
def check_signups(session: Session, config: Config, inviter_id: int, code: str, now: datetime) -> list[int]:
    """After a sign-up: the inviter's direct sign-ups within the last hour (inviter_id's index)."""
    if not config.risk.enabled:
        return []
    d = DISTRIBUTORS.c
    rows = session.execute(select(d.id, d.code).where(d.inviter_id == inviter_id, d.registered_at > now - SIGNUP_WINDOW)
                           .order_by(d.id)).all()
    found = signup_burst(inviter_id, code, [(r.id, r.code) for r in rows], config.risk, now)
    return raise_flags(session, config, [found] if found else [], now)


def follow_up(session: Session, config: Config, now: datetime) -> int:
    """Sign-up bursts seven days on (the `risk` job): when none of those sign-ups has sold, a flag
    (or, while the burst's flag is still open, its detail says so and admins hear again). Each
    burst is looked at once: its follow_up_at is cleared in the same unit. The bursts looked at."""
    f, d = RISK_FLAGS.c, DISTRIBUTORS.c
    stmt = (select(f.id, f.distributor_id, d.code, f.facts, f.status, f.detail).join(DISTRIBUTORS, d.id == f.distributor_id)
            .where(f.rule == SIGNUP_BURST, f.follow_up_at <= now).order_by(f.follow_up_at).limit(FOLLOW_UP_BATCH))
    if is_postgres(session):
        stmt = stmt.with_for_update(of=RISK_FLAGS, skip_locked=True)
    rows = session.execute(stmt).all()
    new: list[Finding] = []
    items: list[Queued] = []
    for row in rows:
        ids = [int(i) for i in (row.facts or {}).get("ids", [])]
        sold = session.scalar(select(func.count()).where(d.id.in_(ids), d.first_sale_at.is_not(None))) if ids else 0
        found = silent_signups(row.distributor_id, row.code, ids, sold or 0)
        values: dict[str, Any] = {"follow_up_at": None}
        if found is not None and row.status == FlagStatus.OPEN:
            values["detail"] = f"{row.detail}\n{found.detail}"
            text = notice(row.code, SIGNUP_BURST, found.detail)
            items += [Queued(f"risk:{row.id}:silent:{o}", o, text, template_data(text, "风险提示"))
                      for o in config.admin.notify_openids]
        elif found is not None:
            new.append(found)
        session.execute(update(RISK_FLAGS).where(f.id == row.id).values(**values))
    enqueue_many(session, items, now=now)
    raise_flags(session, config, new, now)
    return len(rows)


# ---- reading flags ---------------------------------------------------------------------------------
def _flags() -> Any:
    f, d = RISK_FLAGS.c, DISTRIBUTORS.c
    return select(f.id, d.code.label("distributor_code"), d.name, f.distributor_id, f.rule, f.detail, f.created_at,
                  f.status, f.resolved_at, f.resolved_by, f.reason).join(DISTRIBUTORS, d.id == f.distributor_id)


def list_flags(session: Session, status: str | None, limit: int, offset: int) -> tuple[list[Any], int]:
    """Flags newest first (open ones on the (status, id) index), and how many there are."""
    f = RISK_FLAGS.c
    where = [f.status == status] if status else []
    total = session.scalar(select(func.count()).select_from(RISK_FLAGS).where(*where)) or 0
    rows = session.execute(_flags().where(*where).order_by(f.id.desc()).offset(offset).limit(limit)).all()
    return list(rows), total


def find_flag(session: Session, flag_id: int) -> Any:
    return session.execute(_flags().where(RISK_FLAGS.c.id == flag_id)).first()


def open_flags(session: Session, distributor_id: int) -> list[Any]:
    return open_flags_of(session, [distributor_id]).get(distributor_id, [])


def open_flags_of(session: Session, distributor_ids: Sequence[int]) -> dict[int, list[Any]]:
    """The open flags of each of these distributors, oldest first, in one read (a page of the
    withdrawal queue shows them before anyone presses 批准)."""
    if not distributor_ids:
        return {}
    found: dict[int, list[Any]] = {}
    for row in session.execute(_flags().where(RISK_FLAGS.c.distributor_id.in_(set(distributor_ids)),
                                              RISK_FLAGS.c.status == FlagStatus.OPEN).order_by(RISK_FLAGS.c.id)):
        found.setdefault(row.distributor_id, []).append(row)
    return found


def flag_json(row: Any) -> Mapping[str, Any]:
    return {"id": row.id, "distributor_code": row.distributor_code, "rule": row.rule, "detail": row.detail,
            "created_at": china_time(row.created_at), "status": row.status,
            "resolved_at": china_time(row.resolved_at) if row.resolved_at else None,
            "resolved_by": row.resolved_by, "reason": row.reason}
