"""Exports for an ERP or a spreadsheet (CONTRACT §4.11): the ledger and the withdrawals as CSV,
UTF-8 with a BOM (Excel opens it as UTF-8), money in yuan with two decimals, optionally limited
to China-time days `from`–`to` (both included). Streamed a page at a time on an index, so a year
of a large programme never sits in memory."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator, ConfigDict, Field

from kit.api import ApiModel
from kit.csv_stream import stream_csv
from kit.feature import Feature
from kit.app_keys import CLOCK, READER
from domain import export_rows as exports
from domain.formats import CHINA, day_bounds
from domain.refusals import Refusal

feature = Feature("exports", scope="finance")
CSV = "text/csv"


def _iso_day(value: Any) -> Any:
    """Only YYYY-MM-DD: pydantic alone would also read "0" as a Unix time (1970-01-01)."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_iso_day)]


class ExportQuery(ApiModel):
    model_config = ConfigDict(populate_by_name=True, regex_engine="python-re")

    since: Day | None = Field(None, alias="from", description="first day (YYYY-MM-DD, China time); omitted: "
                                                               "from the beginning")
    until: Day | None = Field(None, alias="to", description="last day, included (YYYY-MM-DD, China time); "
                                                             "omitted: until now")

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """The UTC instants the days span; 'to' before 'from' is a 422 (each is a day, the pair is not)."""
        if self.since and self.until and self.until < self.since:
            raise Refusal("invalid_query", f"'to' ({self.until}) is before 'from' ({self.since}).")
        return day_bounds(self.since, self.until)

    def filename(self, what: str, now: datetime) -> str:
        today = now.astimezone(CHINA).date()
        return f"{what}-{self.since or '开始'}-{self.until or today}.csv"


@feature.api.get("/exports/ledger.csv", summary="The ledger's entries as CSV, in the order they were posted",
                 query=ExportQuery, answers=CSV, errors=(422,))
async def ledger_csv(request: web.Request, query: ExportQuery) -> web.StreamResponse:
    start, end = query.bounds()
    reader = request.config_dict[READER]

    async def pages(after: exports.LedgerKey) -> tuple[exports.LedgerKey, list[Any]]:
        return await reader.run(lambda s: exports.ledger_rows(s, start, end, after), slow=True)
    name = query.filename("ledger", request.config_dict[CLOCK].now())
    return await stream_csv(request, name, exports.LEDGER_HEADER, pages, first_key=None)


@feature.api.get("/exports/withdrawals.csv", summary="Withdrawals as CSV, by the day they were requested",
                 query=ExportQuery, answers=CSV, errors=(422,))
async def withdrawals_csv(request: web.Request, query: ExportQuery) -> web.StreamResponse:
    where = exports.withdrawals_between(*query.bounds())
    reader = request.config_dict[READER]

    async def pages(after: int) -> tuple[int, list[Any]]:
        return await reader.run(lambda s: exports.withdrawal_rows(s, where, after), slow=True)
    name = query.filename("withdrawals", request.config_dict[CLOCK].now())
    return await stream_csv(request, name, exports.WITHDRAWALS_HEADER, pages)
