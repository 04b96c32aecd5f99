"""CSV downloads, streamed: UTF-8 with a BOM (Excel opens it as UTF-8), written a page of rows at
a time, so that an export of a large programme never sits in memory whole. Every CSV the product
writes goes through here, so a cell that a spreadsheet would run as a formula is defused here
once (CONTRACT §7)."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web

log = logging.getLogger(__name__)

# Rows after a key, at most a page of them: (the last row's key, the rows as CSV cells) or an
# empty page at the end. Keyset paging: each page is an indexed range read, however deep.
Pages = Callable[[Any], Awaitable[tuple[Any, list[Sequence[Any]]]]]


# What Excel, LibreOffice and Google Sheets read as the start of a formula (or, for tab and CR, of
# a cell that becomes one after their clean-up): an order number =HYPERLINK(...) would be a live link.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


def cell(value: Any) -> Any:
    """A value as a CSV cell: text that would start a formula gets a leading ', numbers (-12.50
    among them) stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def _lines(rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([cell(v) for v in row] for row in rows)
    return buf.getvalue().encode()


async def stream_csv(request: web.Request, filename: str, header: Sequence[str], pages: Pages,
                     first_key: Any = 0) -> web.StreamResponse:
    """The first page is read before anything is sent, so that a failure there is a whole JSON
    error; one later cuts the connection, so that the client sees a broken download, never a
    second answer inside the first."""
    key, rows = await pages(first_key)
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})
    await response.prepare(request)
    await response.write("\ufeff".encode() + _lines([header]))
    try:
        while rows:
            await response.write(_lines(rows))
            key, rows = await pages(key)
    except Exception:
        log.exception("CSV download cut short", extra={"path": request.path})
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
