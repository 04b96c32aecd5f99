"""The audit trail's transport: every request that means to change something, by a known token,
is recorded (CONTRACT §4.11), with the status it was answered with.

One mechanism, for /api and the console alike: `audited(request, answer, ...)` runs the
request's answer with an `Audit` attached to the request (AUDIT) and hooked into the Writer for
the request's own task (storage.writer.hooked). So:

- A request that changes something writes its row inside the unit of work of the change, in the
  same transaction: the change and its record commit together or not at all. The row is written
  in the request's first unit, with the status the route answers on success; when the answer
  differs (a handler that fails after its write) or the handler refined the summary afterwards,
  the row is corrected once the answer is known.
- A change made through a group commit (an order event) is the same: the item carries the hook,
  and its row is written in the batch's transaction, after the item succeeded.
- A request that wrote nothing (a refusal: 403, 404, 409, 422..., whose unit rolled back with
  its row, or an item its batch refused) gets its row after the answer, before it is sent. These
  rows go through a group commit of their own (AUDIT_LOG): a burst of refusals costs one more
  commit per batch, not one per request.

Requests without a known token (401, a console POST without a session) are not recorded: an
anonymous caller cannot fill the table. The exception is a failed console sign-in (kit.sign_in
writes its row through AUDIT_LOG), of which a client gets at most 10 in 10 minutes. Handlers may name what they changed with
`note(request, summary, object_id)`; otherwise the summary is the route's name and the object is
the path's {id}/{code}/{order_no}/{name}, or the "id" of what the unit of work returned.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from kit.metrics import Answered
from kit.scopes import Principal
from kit.app_keys import CLOCK, WRITER
from domain import audit_log as audit
from storage.group_commit import GroupCommit
from storage.writer import hooked

log = logging.getLogger(__name__)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OBJECT_PARAMS = ("id", "code", "order_no", "name")
AUDIT_LOG = web.AppKey("audit_log", GroupCommit[audit.Entry, int])


@dataclass
class Audit:
    """The record of one request, as it is being answered."""

    entry: audit.Entry
    row_id: int | None = None  # the row written with the change, once its unit committed
    written: audit.Entry | None = None  # what that row says
    _pending: tuple[int, audit.Entry] | None = field(default=None, repr=False)

    # ---- storage.writer.UnitHook: the row in the request's first unit of work -------------------
    def in_unit(self, session: Session, result: Any) -> None:
        Audit.in_units(session, [(self, result)])

    @classmethod
    def in_units(cls, session: Session, pairs: list[tuple[Audit, Any]]) -> None:
        """The rows of several requests (a batch of order events) in one statement."""
        due = [record for record, _ in pairs if record.row_id is None]
        for record, result in pairs:
            if record.row_id is None and record.entry.object_id is None:
                record.entry = replace(record.entry, object_id=_returned_id(result))
        for record, row_id in zip(due, audit.record_many(session, [r.entry for r in due]), strict=True):
            record._pending = row_id, record.entry

    def committed(self) -> None:
        if self._pending is not None:
            (self.row_id, self.written), self._pending = self._pending, None


AUDIT = web.RequestKey("audit", Audit)


def note(request: web.Request, summary: str | None = None, object_id: str | int | None = None) -> None:
    """What the request changed, in a few words and the object's id, for its audit row."""
    found = request.get(AUDIT)
    if found is None:
        return
    found.entry = replace(found.entry, **({"summary": summary} if summary else {}),
                           **({"object_id": str(object_id)} if object_id is not None else {}))


def route_name(handler: Callable[..., Any]) -> str:
    """The name a route is audited under (domain.catalogue.AUDIT): its handler's; an /api route's
    endpoint is bound to the route that holds the handler it runs."""
    inner = getattr(getattr(handler, "__self__", None), "handler", handler)
    return getattr(inner, "__name__", "console")


async def audited(request: web.Request, answer: Callable[[], Awaitable[web.StreamResponse]], *,
                  principal: Principal, actor: str, success: int, summary: str) -> web.StreamResponse:
    """`answer()` recorded: a mutating request's row is written with its change, else after it."""
    if request.method not in MUTATING:
        return await answer()
    params = request.match_info
    object_id = next((params[n] for n in OBJECT_PARAMS if n in params), None)
    record = request[AUDIT] = Audit(audit.Entry(
        at=request.config_dict[CLOCK].now(), token_name=principal.name, actor=actor, method=request.method,
        path=request.path, status=success, summary=summary, object_id=object_id))
    answered = Answered()
    try:
        with hooked(record):
            return await answered.by(answer)
    finally:
        await _settle(request, record, answered.status)


async def _settle(request: web.Request, record: Audit, status: int) -> None:
    row_id, final = record.row_id, replace(record.entry, status=status)
    try:
        if row_id is None:
            await request.config_dict[AUDIT_LOG](final)
        elif final != record.written:
            await request.config_dict[WRITER].run(
                lambda s: audit.correct(s, row_id, status, final.summary, final.object_id))
    except Exception:  # the answer stands; the log says what the trail could not keep
        log.exception("audit: could not record %s %s (%s)", request.method, request.path, status)


def _returned_id(result: Any) -> str | None:
    """The id of what a unit of work created, when it returned it (a campaign's, a contest's)."""
    value = result.get("id") if isinstance(result, dict) else None
    return None if value is None else str(value)


async def audit_log(app: web.Application) -> AsyncIterator[None]:
    """The group commit of rows written after their answer (cleanup_ctx, after the writer)."""
    app[AUDIT_LOG] = GroupCommit(app[WRITER], audit.record_many)
    yield
