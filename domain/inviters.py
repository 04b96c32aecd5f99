"""An admin moves a distributor to another inviter (CONTRACT §10, issue 23 item 6), the same for
/api and the console.

What moves is the distributor's `inviter_id`, and only that: every commission already booked
stays where it was booked (nothing in the ledger is touched), the next order's commission goes
up the new chain (domain.orders reads the chain when the order is paid), and every team figure
follows at once, being read from `inviter_id`. The change is a row of inviter_changes (who, why,
when), and the distributor and both inviters (the old one, if any, and the new) are told in chat.

Refused: an unknown code (404), the distributor as their own inviter, a new inviter below the
distributor (the tree would get a cycle), and a new inviter who is not active (a suspended or
exited distributor is no inviter anyone can join, as at registration). The check and the move
run under one lock on PostgreSQL, so two admins moving A under B and B under A at once cannot
make a cycle between them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from domain.distributors import known_distributor
from domain.formats import mask_name
from domain.messages import Text
from domain.outbox_rows import Queued, enqueue_many, template_data
from domain.refusals import Refusal
from storage.db import is_postgres
from storage.models import Distributor, DistributorStatus
from storage.tables import DISTRIBUTORS, INVITER_CHANGES

BY_ADMIN = "admin"  # inviter_changes.reason of an admin's move
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('distbot:inviter-changes', 0))")


def below(session: Session, ancestor_id: int, distributor_id: int) -> bool:
    """Whether `distributor_id` is `ancestor_id` or anywhere below them: one recursive read up the
    chain from `distributor_id` (UNION, not UNION ALL, so it ends even on a hand-made cycle)."""
    d = DISTRIBUTORS.c
    chain = select(d.id, d.inviter_id).where(d.id == distributor_id).cte("chain", recursive=True)
    chain = chain.union(select(d.id, d.inviter_id).join(chain, d.id == chain.c.inviter_id))
    return session.scalar(select(chain.c.id).where(chain.c.id == ancestor_id).limit(1)) is not None


def _checked(session: Session, d: Distributor, new: Distributor) -> None:
    if new.id == d.id:
        raise Refusal("inviter_self", f"Distributor {d.code} cannot be their own inviter.",
                      sentence=f"不能把 {d.code} 设为自己的邀请人。")
    if new.status != DistributorStatus.ACTIVE:
        raise Refusal("inviter_inactive", f"The new inviter {new.code} is {new.status}, not active.",
                      sentence=f"新邀请人 {new.code} 不是正常状态（已暂停或已退出），不能作为邀请人。",
                      details={"inviter_code": new.code, "status": new.status})
    if below(session, d.id, new.id):
        raise Refusal("inviter_cycle", f"The new inviter {new.code} is in {d.code}'s own team: the tree would "
                      "have a cycle.", sentence=f"不能更换：新邀请人 {new.code} 在 {d.code} 的团队（下线）中，"
                      "更换后会形成循环。", details={"inviter_code": new.code})


def change_inviter(session: Session, code: str, inviter_code: str, reason: str, actor: str,
                   now: datetime) -> tuple[Distributor, bool]:
    """Move the distributor of `code` under the distributor of `inviter_code`, keep the change
    and tell the three people; the distributor as it is now, and whether they moved (already
    there: nothing happens)."""
    if is_postgres(session):
        session.execute(_LOCK)
    d = known_distributor(session, code)
    new = known_distributor(session, inviter_code)
    _checked(session, d, new)
    old_id = d.inviter_id
    if old_id == new.id:
        return d, False
    session.execute(update(DISTRIBUTORS).where(DISTRIBUTORS.c.id == d.id).values(inviter_id=new.id))
    change_id = session.execute(INVITER_CHANGES.insert().returning(INVITER_CHANGES.c.id), {
        "distributor_id": d.id, "old_inviter_id": old_id, "new_inviter_id": new.id, "reason": BY_ADMIN,
        "actor": actor, "note": reason, "changed_at": now}).scalar_one()
    old = session.get(Distributor, old_id) if old_id is not None else None
    _tell(session, change_id, d, old, new, reason, now)
    session.refresh(d)
    return d, True


def _tell(session: Session, change_id: int, d: Distributor, old: Distributor | None, new: Distributor,
          reason: str, now: datetime) -> None:
    him = f"{mask_name(d.name)}（{d.code}）"
    told = [("distributor", d, f"您的邀请人已调整为 {mask_name(new.name)}（{new.code}）。\n原因：{reason}\n"
                               "已入账的佣金不受影响；之后的订单按新的邀请关系计算。"),
            ("new", new, f"{him}已调整为您的直属成员，之后的订单按新的邀请关系为您计算佣金。")]
    if old is not None:
        told.append(("old", old, f"{him}已调整到其他邀请人名下，不再是您的直属成员。\n此前已入账的佣金不受影响。"))
    enqueue_many(session, [Queued(f"inviter:{change_id}:{who}", p.openid, Text(body),
                                  template_data(Text(body), "邀请关系调整通知")) for who, p, body in told], now=now)


def history(session: Session, distributor_id: int) -> list[Any]:
    """The distributor's inviter changes, newest first, with the inviters' codes (their page)."""
    c = INVITER_CHANGES.c
    old, new = DISTRIBUTORS.alias("old"), DISTRIBUTORS.alias("new")
    return list(session.execute(
        select(c.changed_at, c.reason, c.actor, c.note, old.c.code.label("old_code"), new.c.code.label("new_code"))
        .select_from(INVITER_CHANGES)
        .outerjoin(old, old.c.id == c.old_inviter_id).outerjoin(new, new.c.id == c.new_inviter_id)
        .where(c.distributor_id == distributor_id).order_by(c.id.desc())).all())
