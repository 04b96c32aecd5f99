"""The console's 佣金记录 (/admin/commissions): every ledger entry (commissions, reversals, rewards,
adjustments, withdrawals and their refunds), newest first, 50 a page, filtered by kind,
distributor and the days they were posted in (this month until the admin chooses others, an
empty start date: from the beginning); the filtered entries' totals by kind; and 导出, the
filtered entries as CSV in the rows of the API's ledger export (domain.export_rows, cells
defused by kit.csv_stream). Reading only: finance's."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from kit.console import may_open, page, page_number
from kit.csv_stream import stream_csv
from kit.feature import Feature
from kit.app_keys import CLOCK, READER
from domain import export_rows as exports
from domain.formats import CHINA
from domain.ledger import KIND_NAMES
from domain.records import LedgerFilter, ledger_page, ledger_totals

feature = Feature("commissions", scope="finance")


def _read(f: LedgerFilter, page_no: int) -> Any:
    def read(session: Session) -> dict[str, Any]:
        rows, more = ledger_page(session, f, page_no)
        return {"rows": rows, "more": more, "totals": ledger_totals(session, f)}
    return read


@feature.console.get("/commissions")
async def commissions_page(request: web.Request) -> web.Response:
    found, problems = LedgerFilter.of(request.query, request.config_dict[CLOCK].now())
    page_no = page_number(request)
    # The totals sum every entry the filter chooses (a month: a range of one index): off the loop.
    values = await request.config_dict[READER].run(_read(found, page_no), slow=True)
    return page(request, "commissions.html", title="佣金记录", current="/commissions", filters=found,
                problems=problems, page_no=page_no, kind_names=KIND_NAMES, orders=may_open(request, "/orders"),
                **values)


@feature.console.get("/commissions.csv")
async def commissions_csv(request: web.Request) -> web.StreamResponse:
    """The filtered entries, in the order they were posted, streamed a page at a time."""
    found, _ = LedgerFilter.of(request.query, request.config_dict[CLOCK].now())
    start, end = found.bounds()
    narrowing = found.narrowing()
    reader = request.config_dict[READER]

    async def pages(after: exports.LedgerKey) -> tuple[exports.LedgerKey, list[Any]]:
        return await reader.run(lambda s: exports.ledger_rows(s, start, end, after, narrowing), slow=True)
    today = request.config_dict[CLOCK].now().astimezone(CHINA)
    return await stream_csv(request, f"佣金记录-{today:%Y%m%d}.csv", exports.LEDGER_HEADER, pages, first_key=None)
