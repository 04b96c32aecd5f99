"""What the CSV downloads hold (the API's /api/exports/*.csv and the console's 提现 export): a page
of rows after a key, each page an indexed range read however deep, money in yuan with two
decimals, times in China time. Streaming them is kit.csv_stream.stream_csv's job."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from domain.formats import CHINA_OFFSET, plain_yuan
from domain.ledger import KIND_NAMES
from storage.tables import DISTRIBUTORS, ENTRIES, WITHDRAWALS

EXPORT_PAGE = 1000
STATUS_NAMES = {"pending": "待审核", "approved": "已批准", "rejected": "已拒绝", "paid": "已到账", "failed": "转账失败"}
SOURCE_NAMES = {"chat": "申请", "exit": "退出结算"}
WITHDRAWALS_HEADER = ("申请号", "推广码", "姓名", "金额（元）", "状态", "来源", "原因", "申请时间", "处理时间")
LEDGER_HEADER = ("流水号", "时间", "推广码", "姓名", "类型", "金额（元）", "订单号", "提现申请号")
Row = tuple[Any, ...]


def local_time(value: datetime | None) -> str:
    """2026-12-01 08:00:00, China time (a fixed +08:00 since 1991: the fast conversion)."""
    return value.astimezone(CHINA_OFFSET).isoformat(" ", "seconds")[:19] if value else ""


def _withdrawals() -> Select[Any]:
    w, d = WITHDRAWALS.c, DISTRIBUTORS.c
    return (select(w.id, d.code, d.name, w.amount_fen, w.status, w.source, w.reason, w.requested_at, w.decided_at)
            .join(DISTRIBUTORS, d.id == w.distributor_id))


def withdrawal_rows(session: Session, where: list[Any], after: int) -> tuple[int, list[Row]]:
    """Withdrawals matching `where` with ids above `after`, oldest first, a page of them, and the
    last id (the next page's key)."""
    found = session.execute(_withdrawals().where(*where, WITHDRAWALS.c.id > after)
                            .order_by(WITHDRAWALS.c.id).limit(EXPORT_PAGE)).all()
    return (found[-1].id if found else after), [
        (r.id, r.code, r.name, plain_yuan(r.amount_fen), STATUS_NAMES.get(r.status, r.status),
         SOURCE_NAMES.get(r.source, r.source), r.reason or "", local_time(r.requested_at), local_time(r.decided_at))
        for r in found]


def withdrawals_between(start: datetime | None, end: datetime | None) -> list[Any]:
    w = WITHDRAWALS.c
    return [c for c in ((w.requested_at >= start) if start else None, (w.requested_at < end) if end else None)
            if c is not None]


LedgerKey = tuple[datetime, int] | None


def ledger_rows(session: Session, start: datetime | None, end: datetime | None,
                after: LedgerKey, narrowing: Sequence[Any] = ()) -> tuple[LedgerKey, list[Row]]:
    """Ledger entries posted in [start, end), in (created_at, id) order — the created_at index's
    own order, so each page is a range of it — a page of them, and the next page's key; only
    those `narrowing` allows too (conditions on the entries: the console's 佣金记录 filters)."""
    e, d = ENTRIES.c, DISTRIBUTORS.c
    where = [*narrowing, *([e.created_at < end] if end else [])]
    if after is not None:
        where.append(tuple_(e.created_at, e.id) > tuple_(*after))
    elif start is not None:
        where.append(e.created_at >= start)
    found = session.execute(
        select(e.id, e.created_at, d.code, d.name, e.kind, e.amount_fen, e.order_no, e.withdrawal_id)
        .join(DISTRIBUTORS, d.id == e.distributor_id).where(*where)
        .order_by(e.created_at, e.id).limit(EXPORT_PAGE)).all()
    key = (found[-1].created_at, found[-1].id) if found else after
    return key, [(id_, local_time(at), code, name, KIND_NAMES.get(kind, kind), plain_yuan(fen), order_no or "",
                  withdrawal_id or "") for id_, at, code, name, kind, fen, order_no, withdrawal_id in found]
