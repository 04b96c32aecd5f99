"""GET /api/exports/ledger.csv and /api/exports/withdrawals.csv (CONTRACT §4.11) over HTTP on both
databases: UTF-8 with a BOM, money in yuan, China-time day filters, refusals; and 100,000 ledger
rows streamed in memory far smaller than the file."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kit.csv_stream import cell as as_cell
from kit.csv_stream import stream_csv
from sandbox.platform import Platform
from kit.app_keys import WRITER
from domain.formats import CHINA
from domain.ledger import withdraw
from storage.tables import ENTRIES
from tests.conftest import ADMIN_TOKEN
from tests.test_audit import console
from tests.money_support import money_harness, pay, seed, send


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0) as harness:
        yield harness


async def download(h: Any, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with h.http.get(h.url + "/api/exports/" + path, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), (await resp.read()).decode("utf-8")


def rows(body: str) -> list[list[str]]:
    assert body.startswith("\ufeff"), body[:20]  # Excel reads the BOM as "this is UTF-8"
    return list(csv.reader(io.StringIO(body[1:])))


async def test_the_ledger_as_csv_with_its_days(h: Any) -> None:
    a, _ = await seed(h, name="钱多多")
    b, _ = await seed(h, inviter=a, name="李小明")
    await pay(h, "EX1", 12900, b)
    await send(h, "EX1", "completed")
    await send(h, "EX1", "refunded", amount_fen=2900)
    status, kind, body = await download(h, "ledger.csv")
    assert status == 200 and kind.startswith("text/csv")
    header, *lines = rows(body)
    assert header == ["流水号", "时间", "推广码", "姓名", "类型", "金额（元）", "订单号", "提现申请号"]
    got = sorted((r[2], r[4], r[5], r[6]) for r in lines)
    # 10% and 3% of ¥129.00, then a refund of ¥29.00 reverses floor(c × 2900 / 12900) of each.
    assert got == sorted([(b.code, "佣金", "12.90", "EX1"), (a.code, "佣金", "3.87", "EX1"),
                          (b.code, "退款冲回", "-2.90", "EX1"), (a.code, "退款冲回", "-0.87", "EX1")])
    today = datetime.now(UTC).astimezone(CHINA).date()
    assert rows((await download(h, f"ledger.csv?from={today}&to={today}"))[2])[1:] == lines
    tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)
    assert rows((await download(h, f"ledger.csv?from={tomorrow}"))[2]) == [header]
    assert rows((await download(h, f"ledger.csv?to={yesterday}"))[2]) == [header]
    # The calendar's edges have no UTC instant on the far side: read as the first and last days.
    assert rows((await download(h, "ledger.csv?from=0001-01-01&to=9999-12-31"))[2])[1:] == lines


async def test_withdrawals_as_csv(h: Any) -> None:
    a, _ = await seed(h, name="钱多多")
    await pay(h, "EXW", 50000, a)
    await send(h, "EXW", "completed")
    now = datetime.now(UTC)
    wid = await h.app[WRITER].run(lambda s: withdraw(s, a.id, 1250, now))
    status, _, body = await download(h, "withdrawals.csv")
    assert status == 200
    header, *lines = rows(body)
    assert header[:5] == ["申请号", "推广码", "姓名", "金额（元）", "状态"]
    assert [line[:5] for line in lines] == [[str(wid), a.code, "钱多多", "12.50", "待审核"]]
    tomorrow = (now.astimezone(CHINA) + timedelta(days=1)).date()
    assert rows((await download(h, f"withdrawals.csv?from={tomorrow}"))[2]) == [header]
    assert rows((await download(h, "withdrawals.csv?from=0001-01-01&to=9999-12-31"))[2])[1:] == lines


FORMULA = '=HYPERLINK("http://x","y")'


async def test_a_cell_that_would_be_a_formula_is_text(h: Any) -> None:
    """An order number or a reason that Excel would run as a formula gets a leading ' in every
    CSV the product writes (the API's two and the console's 提现 download); amounts stay numbers."""
    a, _ = await seed(h, name="钱多多")
    await pay(h, FORMULA, 12900, a)
    await send(h, FORMULA, "completed")
    await send(h, FORMULA, "refunded", amount_fen=2900)
    _, _, body = await download(h, "ledger.csv")
    got = sorted((r[4], r[5], r[6]) for r in rows(body)[1:])
    assert got == [("佣金", "12.90", "'" + FORMULA), ("退款冲回", "-2.90", "'" + FORMULA)]

    now = datetime.now(UTC)
    reasons = ["@SUM(1+1)*cmd|' /C calc'!A0", "+86 138", "-2+3", "=1+1"]
    for reason in reasons:
        wid = await h.app[WRITER].run(lambda s: withdraw(s, a.id, 100, now))
        status, answer = await h.api("POST", f"/withdrawals/{wid}/reject", json={"reason": reason})
        assert status == 200 and answer["reason"] == reason, answer
    defused = ["'" + r for r in reasons]
    _, _, body = await download(h, "withdrawals.csv")
    assert [(r[3], r[6]) for r in rows(body)[1:]] == [("1.00", r) for r in defused]
    http = await console(h, ADMIN_TOKEN)
    try:
        async with http.get(h.url + "/admin/withdrawals.csv") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
            body = (await resp.read()).decode("utf-8")
    finally:
        await http.close()
    assert [(r[3], r[6]) for r in rows(body)[1:]] == [("1.00", r) for r in defused]


@pytest.mark.parametrize("value,cell", [("-12.50", "-12.50"), ("+5", "+5"), ("-.5", "-.5"), (-3, -3),
                                        ("-", "'-"), ("-1e5", "'-1e5"), ("@x", "'@x"), ("1=1", "1=1"),
                                        ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("", "")])
def test_numbers_stay_numbers(value: Any, cell: Any) -> None:
    assert as_cell(value) == cell


@pytest.mark.parametrize("query,status,code", [
    ("from=2026-13-01", 400, "bad_query"), ("from=yesterday", 400, "bad_query"), ("to=0", 400, "bad_query"),
    ("from=2026-12-02&to=2026-12-01", 422, "invalid_query")])
async def test_bad_days_are_refused(h: Any, query: str, status: int, code: str) -> None:
    for what in ("ledger.csv", "withdrawals.csv"):
        got, kind, body = await download(h, f"{what}?{query}")
        assert got == status and kind.startswith("application/json") and f'"{code}"' in body, body


async def test_exports_need_the_admin_token(h: Any) -> None:
    assert (await download(h, "ledger.csv", token=None))[0] == 401
    assert (await download(h, "withdrawals.csv", token="wrong"))[0] == 401


async def test_a_large_ledger_streams_in_little_memory(h: Any) -> None:
    """100,000 entries: the file is many megabytes, the memory it takes stays a page's worth."""
    a, _ = await seed(h, name="钱多多")
    start = datetime.now(UTC) - timedelta(days=30)
    count = 100_000

    def fill(session: Any) -> None:
        session.execute(ENTRIES.insert(), [
            {"distributor_id": a.id, "kind": "adjustment", "amount_fen": 100 + i % 900, "ref": f"bulk-{i}",
             "created_at": start + timedelta(seconds=i * 20)} for i in range(count)])
    await h.app[WRITER].run(fill)
    tracemalloc.start()
    try:
        size, lines = 0, 0
        async with h.http.get(h.url + "/api/exports/ledger.csv",
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(65536):
                size += len(chunk)
                lines += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == count + 1
    assert size > 5_000_000
    assert peak < size / 2, (peak, size)  # never the whole file, let alone its rows, at once


async def test_a_download_that_fails_is_an_error_before_its_first_row_and_cut_after(aiohttp_client: Any) -> None:
    """Never a second answer written inside the first (the fuzz test once read "HTTP/1.1 500" as a chunk)."""
    async def pages(key: int) -> tuple[int, list[list[str]]]:
        if key == 0:
            return 1, [["第一行"]]
        raise RuntimeError("the database went away")

    async def failing_at_once(key: int) -> tuple[int, list[list[str]]]:
        raise RuntimeError("the database went away")

    async def late(request: web.Request) -> web.StreamResponse:
        return await stream_csv(request, "x.csv", ["列"], pages)

    async def early(request: web.Request) -> web.StreamResponse:
        return await stream_csv(request, "x.csv", ["列"], failing_at_once)

    app = web.Application()
    app.router.add_get("/late", late)
    app.router.add_get("/early", early)
    client = await aiohttp_client(app)
    async with client.get("/early") as resp:
        assert resp.status == 500 and not resp.headers.get("Content-Disposition")
    async with client.get("/late") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
