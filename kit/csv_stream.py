"""CSV downloads, streamed: UTF-8 with a BOM (Excel opens it as UTF-8), written a page of rows at
a time, so that an export of a large programme never sits in memory whole. Every CSV the product
writes goes through here, so a cell that a spreadsheet would run as a formula is defused here
once (CONTRACT §7)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web

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
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})
    await response.prepare(request)
    await response.write("\ufeff".encode() + _lines([header]))
    key = first_key
    while True:
        key, rows = await pages(key)
        if not rows:
            break
        await response.write(_lines(rows))
    await response.write_eof()
    return response
