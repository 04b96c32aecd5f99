"""A distributor as admins see them: the API's answer (CONTRACT §4.1), for every route that
answers with one, and finding distributors by code, name or phone (the console's 分销员)."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from domain.formats import china_time
from domain.ledger import balance
from domain.refusals import Refusal
from storage.db import is_postgres
from storage.models import Distributor, DistributorStatus
from storage.queries import distributor_by_code
from storage.tables import DISTRIBUTORS

PER_PAGE = 50
MAX_PAGE = 10_000_000  # keeps the OFFSET within a 64-bit integer


def known_distributor(session: Session, code: str) -> Distributor:
    """The distributor of `code`; a Refusal (not_found) when there is none."""
    d = distributor_by_code(session, code)
    if d is None:
        raise Refusal("not_found", f"No distributor has the code {code!r}.",
                      sentence=f"没有推广码为 {code[:16]} 的分销员。")
    return d


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


# ---- finding distributors ------------------------------------------------------------------------
def _like(text: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


def search_where(session: Session, query: str) -> list[ColumnElement[bool]]:
    """What finds the distributors `query` names (none for an empty query: everyone).

    An exact code (any case) or a whole phone number is looked up first, on their unique indexes;
    only when neither is there does the query match part of a name (a scan of the name index) or
    of a phone number (a scan)."""
    d = DISTRIBUTORS.c
    q = " ".join(unicodedata.normalize("NFKC", query).split())
    digits = re.sub(r"[\s-]", "", q).removeprefix("+86")
    if not q:
        return []
    exact = or_(d.code == q.upper(), d.phone == digits)
    if session.scalar(select(d.id).where(exact).limit(1)) is not None:
        return [exact]
    if digits.isascii() and digits.isdigit():
        return [d.phone.like(_like(digits), escape="\\")]
    # SQLite's LIKE already ignores ASCII case, and lower() would cost a call per row.
    like = d.name.ilike if is_postgres(session) else d.name.like
    return [like(_like(q), escape="\\")]
