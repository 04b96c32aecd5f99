"""CSV downloads, streamed: UTF-8 with a BOM (Excel opens it as UTF-8), written a page of rows at
a time, so that an export of a large programme never sits in memory whole."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web

# Rows after a key, at most a page of them: (the last row's key, the rows as CSV cells) or an
# empty page at the end. Keyset paging: each page is an indexed range read, however deep.
Pages = Callable[[Any], Awaitable[tuple[Any, list[Sequence[Any]]]]]


def _lines(rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
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
