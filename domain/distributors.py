"""A distributor as the admin API shows it (CONTRACT §4.1), for every route that answers with one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.formats import china_time
from domain.ledger import balance
from storage.models import Distributor, DistributorStatus


class Balance(BaseModel):
    pending_fen: int
    available_fen: int
    withdrawing_fen: int
    withdrawn_fen: int


class DistributorAnswer(BaseModel):
    code: str
    openid: str
    name: str
    phone: str
    status: DistributorStatus
    rank: str
    inviter_code: str | None
    registered_at: datetime
    balance: Balance


def distributor_json(session: Session, d: Distributor) -> dict[str, Any]:
    inviter_code = None
    if d.inviter_id is not None:
        inviter_code = session.scalar(select(Distributor.code).where(Distributor.id == d.inviter_id))
    return {
        "code": d.code, "openid": d.openid, "name": d.name, "phone": d.phone, "status": d.status,
        "rank": d.rank, "inviter_code": inviter_code, "registered_at": china_time(d.registered_at),
        "balance": balance(session, d.id),
    }
