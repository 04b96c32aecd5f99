"""我的推广: a distributor's week of promotion (Monday 00:00 China time to now) — scans of their
QR code, follows through it, registrations bound to them, their members' first orders — and the
record of each scan, written on the webhook path: one INSERT, nothing read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, distinct, func, insert, select
from sqlalchemy.orm import Session

from domain.formats import week_start
from storage.tables import DISTRIBUTORS, QR_SCANS


@dataclass(frozen=True)
class PromotionWeek:
    since: datetime  # the week's Monday, 00:00 China time
    scans: int  # scans of their QR code (a follow through it counts as one)
    follows: int  # people who followed the account through it
    registrations: int  # members bound to them who registered this week
    first_orders: int  # members whose first order was paid this week


def record_scan(session: Session, scene: str, openid: str, followed: bool, now: datetime) -> None:
    """One scan of the QR code whose scene is `scene` (a distributor's code), or a follow through it."""
    session.execute(insert(QR_SCANS).values(scene=scene[:64], openid=openid, followed=followed, scanned_at=now))


def promotion_week(session: Session, distributor_id: int, code: str, openid: str, now: datetime) -> PromotionWeek:
    """The week's figures: the scans on (scene, scanned_at), the members on (inviter_id, status).
    Their own scans of their own code are not counted."""
    since, s, d = week_start(now), QR_SCANS.c, DISTRIBUTORS.c
    scans, follows = session.execute(
        select(func.count(), func.count(distinct(case((s.followed, s.openid)))))
        .where(s.scene == code, s.scanned_at >= since, s.openid != openid)).one()
    registrations, first_orders = session.execute(
        select(func.count(case((d.registered_at >= since, d.id))), func.count(case((d.first_sale_at >= since, d.id))))
        .where(d.inviter_id == distributor_id)).one()
    return PromotionWeek(since, scans, follows, registrations or 0, first_orders or 0)
