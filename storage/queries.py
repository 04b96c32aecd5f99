"""Queries shared by several features. Each takes the session first (async callers: run_sync)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Distributor, DistributorStatus


def distributor_by_code(session: Session, code: str, *, active: bool = False) -> Distributor | None:
    d = session.scalar(select(Distributor).where(Distributor.code == code.strip().upper()))
    if d is not None and active and d.status != DistributorStatus.ACTIVE:
        return None
    return d


def upline(session: Session, distributor: Distributor, levels: int) -> list[Distributor]:
    """The distributor's inviters, nearest first, at most `levels` of them.

    The tree has no cycles (an inviter is set at registration, before anyone can be invited by
    the newcomer, and an admin's move under someone in the distributor's own team is refused:
    domain.inviters); the `seen` set only guards against a database edited by hand.
    """
    chain: list[Distributor] = []
    seen = {distributor.id}
    inviter_id = distributor.inviter_id
    while inviter_id is not None and len(chain) < levels and inviter_id not in seen:
        inviter = session.get(Distributor, inviter_id)
        if inviter is None:
            break
        chain.append(inviter)
        seen.add(inviter.id)
        inviter_id = inviter.inviter_id
    return chain
