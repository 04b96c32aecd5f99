"""The audit trail (CONTRACT §4.11): who asked to change what, when, and how it was answered.

One row per request that meant to change something (kit.auditing decides which and writes them);
these are the statements, for any unit of work: `record` adds a row, `correct` sets the final
status and summary of a row written before the answer was known, `entries` reads a page,
newest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from domain.formats import china_time
from storage.db import is_postgres
from storage.tables import AUDIT_ENTRIES

PAGE_SIZE = 50
MAX_SUMMARY = 200
MAX_PATH = 512
MAX_OBJECT = 128


@dataclass(frozen=True)
class Entry:
    at: datetime
    token_name: str
    actor: str
    method: str
    path: str
    status: int
    summary: str
    object_id: str | None = None

    def values(self) -> dict[str, Any]:
        return {"at": self.at, "token_name": self.token_name, "actor": self.actor, "method": self.method,
                "path": self.path[:MAX_PATH], "status": self.status, "summary": self.summary[:MAX_SUMMARY],
                "object_id": None if self.object_id is None else self.object_id[:MAX_OBJECT]}


_INSERT = AUDIT_ENTRIES.insert().returning(AUDIT_ENTRIES.c.id, sort_by_parameter_order=True)
_INSERT_ROWS = AUDIT_ENTRIES.insert()
_LAST_IDS = select(AUDIT_ENTRIES.c.id).order_by(AUDIT_ENTRIES.c.id.desc()).limit(bindparam("n"))


def record(session: Session, entry: Entry) -> int:
    """Add the row; its id."""
    return record_many(session, [entry])[0]


def record_many(session: Session, entries: list[Entry]) -> list[int]:
    """Rows written together, in one statement (a batch's order events, the refusals that arrived
    together); their ids, in the order given."""
    if not entries:
        return []
    conn, rows = session.connection(), [e.values() for e in entries]
    if is_postgres(session):
        return list(conn.execute(_INSERT, rows).scalars())
    # SQLite answers an INSERT ... RETURNING that keeps its rows' order one statement per row. A
    # unit holds the database's write lock, and a new row's id is one more than the largest before
    # it: the last len(rows) ids are these rows', in order. Two statements for any number of rows.
    conn.execute(_INSERT_ROWS, rows)
    return sorted(conn.execute(_LAST_IDS, {"n": len(rows)}).scalars())


def correct(session: Session, row_id: int, status: int, summary: str, object_id: str | None) -> None:
    """The answer's status and the final summary of a row written inside the change's unit."""
    session.execute(update(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.id == row_id).values(
        status=status, summary=summary[:MAX_SUMMARY],
        object_id=None if object_id is None else object_id[:MAX_OBJECT]))


def entries(session: Session, page: int, *, object_id: str | None = None,
            size: int = PAGE_SIZE) -> tuple[list[dict[str, Any]], int]:
    """A page (from 1) of rows, newest first, optionally about one object; and how many there are."""
    where = [] if object_id is None else [AUDIT_ENTRIES.c.object_id == object_id]
    total = session.scalar(select(func.count()).select_from(AUDIT_ENTRIES).where(*where)) or 0
    rows = session.execute(select(AUDIT_ENTRIES).where(*where).order_by(AUDIT_ENTRIES.c.id.desc())
                           .offset((page - 1) * size).limit(size)).mappings().all()
    return [as_json(r) for r in rows], total


def as_json(row: Any) -> dict[str, Any]:
    return {"at": china_time(row["at"]), "token_name": row["token_name"], "actor": row["actor"],
            "method": row["method"], "path": row["path"], "status": row["status"], "summary": row["summary"],
            "object_id": row["object_id"]}
