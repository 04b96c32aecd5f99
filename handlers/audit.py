"""The audit trail for admins (CONTRACT §4.11): GET /api/audit?page=N and the console's 审计日志
(/admin/audit), newest first, 50 a page, optionally about one object (`object=`, e.g. a
withdrawal's id: its history page links here); an order event's order links to its 订单 page.
The rows are written by kit.auditing."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from kit.api import ApiModel, ok
from kit.console import may_open, page, page_number
from kit.feature import Feature
from kit.app_keys import READER
from domain import audit_log as audit
from domain.catalogue import audit_summary

feature = Feature("audit", scope="admin")
MAX_PAGE = 10**6


class AuditQuery(ApiModel):
    page: int = Field(1, ge=1, le=MAX_PAGE, description="the page, from 1; 50 entries a page, newest first")
    object: str | None = Field(None, min_length=1, max_length=128,
                               description="only entries about this object (a withdrawal's id, a code, an order_no)")


class AuditRow(BaseModel):
    at: str = Field(description="when the request arrived, China time")
    token_name: str = Field(description="the token's name (admin, or a name from [[admin.tokens]]), or the "
                                        "staff account's name for a person signed in to the console")
    actor: str = Field(description='who acted as the records name it: "admin", "token:<name>", '
                                   '"console:<session>:<token or account name>"')
    method: str
    path: str
    status: int = Field(description="the status the request was answered with (refusals too)")
    summary: str
    object_id: str | None = Field(description="the id of what it changed, when there is one")


class AuditPage(BaseModel):
    entries: list[AuditRow]
    total: int = Field(description="entries in all pages")


def _read(page_no: int, object_id: str | None) -> Any:
    return lambda session: audit.entries(session, page_no, object_id=object_id)


@feature.api.get("/audit", summary="Every request that changed or tried to change something, newest first, 50 a page",
                 query=AuditQuery, response=AuditPage)
async def list_audit(request: web.Request, query: AuditQuery) -> web.Response:
    rows, total = await request.config_dict[READER].run(_read(query.page, query.object))
    return ok({"entries": rows, "total": total})


@feature.console.get("/audit")
async def audit_page(request: web.Request) -> web.Response:
    object_id = request.query.get("object", "").strip()[:128] or None
    page_no = page_number(request, last=MAX_PAGE)

    def read(session: Session) -> tuple[list[dict[str, Any]], int]:
        return audit.entries(session, page_no, object_id=object_id)
    rows, total = await request.config_dict[READER].run(read)
    # Rows written before summaries were Chinese say the route's name: shown as what it did.
    rows = [{**r, "summary": audit_summary(r["summary"])} for r in rows]
    pages = max((total + audit.PAGE_SIZE - 1) // audit.PAGE_SIZE, 1)
    return page(request, "audit.html", title="审计日志", current="/audit", entries=rows, total=total,
                number=page_no, pages=pages, object_id=object_id or "", orders=may_open(request, "/orders"))
