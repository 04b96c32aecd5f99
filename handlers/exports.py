"""Exports for an ERP or a spreadsheet (CONTRACT §4.11): the ledger and the withdrawals as CSV,
UTF-8 with a BOM (Excel opens it as UTF-8), money in yuan with two decimals, optionally limited
to China-time days `from`–`to` (both included). Streamed a page at a time on an index, so a year
of a large programme never sits in memory."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web
from pydantic import ConfigDict, Field, model_validator

from bot.api import ApiModel
from bot.exports import stream_csv
from bot.feature import Feature
from bot.typedefs import SESSIONMAKER
from domain import exports
from domain.formats import CHINA
from storage.db import run_read

feature = Feature("exports")
CSV = "text/csv"


class ExportQuery(ApiModel):
    model_config = ConfigDict(populate_by_name=True, regex_engine="python-re")

    since: date | None = Field(None, alias="from", description="first day (YYYY-MM-DD, China time); omitted: "
                                                               "from the beginning")
    until: date | None = Field(None, alias="to", description="last day, included (YYYY-MM-DD, China time); "
                                                             "omitted: until now")

    @model_validator(mode="after")
    def _ordered(self) -> ExportQuery:
        if self.since and self.until and self.until < self.since:
            raise ValueError("'to' is before 'from'")
        return self

    def filename(self, what: str) -> str:
        today = datetime.now(UTC).astimezone(CHINA).date()
        return f"{what}-{self.since or '开始'}-{self.until or today}.csv"


@feature.api.get("/exports/ledger.csv", summary="The ledger's entries as CSV, in the order they were posted",
                 query=ExportQuery, answers=CSV)
async def ledger_csv(request: web.Request, query: ExportQuery) -> web.StreamResponse:
    start, end = exports.day_bounds(query.since, query.until)
    sessionmaker = request.config_dict[SESSIONMAKER]

    async def pages(after: exports.LedgerKey) -> tuple[exports.LedgerKey, list[Any]]:
        return await run_read(sessionmaker, lambda s: exports.ledger_rows(s, start, end, after))
    return await stream_csv(request, query.filename("ledger"), exports.LEDGER_HEADER, pages, first_key=None)


@feature.api.get("/exports/withdrawals.csv", summary="Withdrawals as CSV, by the day they were requested",
                 query=ExportQuery, answers=CSV)
async def withdrawals_csv(request: web.Request, query: ExportQuery) -> web.StreamResponse:
    where = exports.withdrawals_between(*exports.day_bounds(query.since, query.until))
    sessionmaker = request.config_dict[SESSIONMAKER]

    async def pages(after: int) -> tuple[int, list[Any]]:
        return await run_read(sessionmaker, lambda s: exports.withdrawal_rows(s, where, after))
    return await stream_csv(request, query.filename("withdrawals"), exports.WITHDRAWALS_HEADER, pages)
