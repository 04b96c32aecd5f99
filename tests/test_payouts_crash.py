"""A real `distbot serve` killed with kill -9 (test-only faults, DISTBOT_TEST_FAULT):

- right after WeChat Pay created a transfer bill and before its answer was stored (after-create):
  started again, the claim finds the bill by its out_bill_no, nothing is created twice, and the
  transfer is paid once;
- right after a callback was applied and before it was answered (before-answer): WeChat Pay calls
  again, the restarted process answers 204 and changes nothing more."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from sandbox.pay_emulator import PayEmulator
from sandbox.platform import Platform
from wechat.pay import EmulatorKeys, PayKeys
from domain.ledger import adjust, ledger_sums, withdraw
from storage.db import create_engine, create_sessionmaker
from storage.migrate import upgrade
from storage.tables import BALANCES, DISTRIBUTORS, OUTBOX, PAYOUT_BILLS
from tests import pay_support, payouts_support
from tests.conftest import ADMIN_TOKEN
from tests.eventually import eventually
from tests.payouts_support import claim_links, json_script, key_files
from tests.serve_support import Served

pay_keys, emulator, pay_wechat = pay_support.pay_keys, payouts_support.emulator, payouts_support.pay_wechat


def write_config(tmp_path: Path, db_url: str, wechat: TestServer, keys: PayKeys, port: int) -> Path:
    pay = key_files(keys, tmp_path / "keys")
    lines = "\n".join(f'{k} = "{v}"' for k, v in pay.items())
    p = tmp_path / "config.toml"
    p.write_text(f"""
[server]
public_url = "http://127.0.0.1:{port}"
[database]
url = "{db_url}"
[admin]
token = "{ADMIN_TOKEN}"
[wechat]
api_base_url = "{wechat.make_url('/cgi-bin/')}"
template_id = "tmpl-notice"
[distribution]
freeze_days = 0
[outbox]
rate_per_second = 100
[pay]
mode = "sandbox"
api_base_url = "{wechat.make_url('/pay/')}"
{lines}
""", encoding="utf-8")
    return p


async def seed(db_url: str, platform: Platform) -> tuple[int, int, str]:
    """A distributor with ¥50 available and a pending withdrawal of ¥12.50: (distributor, withdrawal, openid)."""
    engine = create_engine(db_url)
    now = datetime.now(UTC)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(DISTRIBUTORS.insert(), [{
                "id": 1, "code": "KPAY01", "openid": "oPayCrash0001", "phone": "13700000001", "name": "王五",
                "rank": "junior", "status": "active", "registered_at": now, "weekly_report": True}])
            await conn.execute(BALANCES.insert(), [{"distributor_id": 1, "pending_fen": 0, "available_fen": 0,
                                                    "withdrawing_fen": 0, "withdrawn_fen": 0}])
        async with create_sessionmaker(engine)() as session, session.begin():
            await session.run_sync(adjust, 1, 5000, "测试入账", "test", now)
            wid = await session.run_sync(withdraw, 1, 1250, now)
    finally:
        await engine.dispose()
    user = platform.user("oPayCrash0001")
    user.subscribed, user.last_interaction = True, platform.clock()
    return 1, wid, user.openid


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_kill_9_between_create_and_its_record_creates_nothing_twice(
        db_url: str, tmp_path: Path, platform: Platform, pay_wechat: TestServer, emulator: PayEmulator,
        pay_keys: tuple[PayKeys, EmulatorKeys]) -> None:
    did, wid, openid = await seed(db_url, platform)
    crashing = Served(Path("/dev/null"), tmp_path, env={"DISTBOT_TEST_FAULT": "after-create"})
    cfg = write_config(tmp_path, db_url, pay_wechat, pay_keys[0], crashing.port)
    crashing.config = cfg
    await crashing.start()
    served = crashing
    try:
        status, body = await crashing.api("POST", f"/withdrawals/{wid}/approve")
        assert status == 200 and body["status"] == "approved", body
        (link,) = await eventually(lambda: claim_links(platform, openid), what="a claim link")
        try:
            await get(link)
            raise AssertionError("the process answered instead of dying after the create")
        except aiohttp.ClientError:
            pass
        assert crashing.proc is not None
        assert await crashing.proc.wait() == -9
        (number,) = emulator.bills  # WeChat Pay has the bill ...
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(PAYOUT_BILLS.c.out_bill_no, PAYOUT_BILLS.c.state,
                                                  PAYOUT_BILLS.c.package_info))).all()
        finally:
            await engine.dispose()
        assert [tuple(r) for r in rows] == [(number, "CREATING", None)]  # ... and we had recorded its number only
        seen = len(emulator.calls)

        served = Served(cfg, tmp_path)
        served.port = crashing.port  # the same public_url: the same notify_url, the same bill
        await served.start()
        status, page = await get(link)
        assert status == 200, page
        assert json_script(page, "transfer")["package"] == emulator.bills[number].package_info
        assert list(emulator.bills) == [number]  # nothing created twice
        # After the restart: first a query by the number, then create with the same number and
        # fields (for the package, which only create answers), which WeChat Pay answers with the same bill.
        after = [(m, p) for m, p, _ in emulator.calls[seen:]]
        assert after[0] == ("GET", after[0][1]) and after[0][1].endswith("/out-bill-no/" + number), after
        assert [m for m, p in after[1:] if p.endswith("transfer-bills")] == ["POST"], after

        async with aiohttp.ClientSession() as http, http.post(pay_wechat.make_url("/pay/confirm"), json={
                "package": emulator.bills[number].package_info, "openid": openid}) as resp:
            assert resp.status == 200, await resp.text()
        async def paid() -> dict[str, Any] | None:
            _, w = await served.api("GET", f"/withdrawals/{wid}")
            return w if w["status"] == "paid" else None
        w = await eventually(paid, 15, what=f"withdrawal {wid} is paid")
        assert w["transfer"] == {"out_bill_no": number, "state": "SUCCESS", "fail_reason": None}
        status, d = await served.api("GET", "/distributors/KPAY01")
        assert d["balance"] == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 0, "withdrawn_fen": 1250}
    finally:
        await crashing.kill()
        await served.kill()
    engine = create_engine(db_url)
    try:
        async with create_sessionmaker(engine)() as session:
            sums: dict[int, Any] = await session.run_sync(ledger_sums, did)
    finally:
        await engine.dispose()
    assert sums[did] == {"total": 5000 - 1250, "withdrawals": -1250}


async def test_kill_9_between_the_callback_and_its_answer_pays_once(
        db_url: str, tmp_path: Path, platform: Platform, pay_wechat: TestServer, emulator: PayEmulator,
        pay_keys: tuple[PayKeys, EmulatorKeys]) -> None:
    emulator.callback_delays = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0)  # WeChat Pay calls again until answered
    emulator.probes_enabled = False
    did, wid, openid = await seed(db_url, platform)
    crashing = Served(Path("/dev/null"), tmp_path, env={"DISTBOT_TEST_FAULT": "before-answer"})
    cfg = write_config(tmp_path, db_url, pay_wechat, pay_keys[0], crashing.port)
    crashing.config = cfg
    await crashing.start()
    served = crashing
    try:
        assert (await crashing.api("POST", f"/withdrawals/{wid}/approve"))[0] == 200
        (link,) = await eventually(lambda: claim_links(platform, openid), what="a claim link")
        status, page = await get(link)
        assert status == 200, page
        async with aiohttp.ClientSession() as http, http.post(pay_wechat.make_url("/pay/confirm"), json={
                "package": json_script(page, "transfer")["package"], "openid": openid}) as resp:
            assert resp.status == 200, await resp.text()
        assert crashing.proc is not None
        assert await asyncio.wait_for(crashing.proc.wait(), 15) == -9  # applied, then killed before the 204
        served = Served(cfg, tmp_path)
        served.port = crashing.port
        await served.start()
        await emulator.settle()
        assert emulator.deliveries[0].status is None and emulator.deliveries[-1].status == 204
        status, w = await served.api("GET", f"/withdrawals/{wid}")
        assert w["status"] == "paid", w
        status, d = await served.api("GET", "/distributors/KPAY01")
        assert d["balance"] == {"pending_fen": 0, "available_fen": 3750, "withdrawing_fen": 0, "withdrawn_fen": 1250}
    finally:
        await crashing.kill()
        await served.kill()
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            notices = (await conn.execute(select(OUTBOX.c.key).where(OUTBOX.c.key.like("payout:%")))).all()
        async with create_sessionmaker(engine)() as session:
            sums: dict[int, Any] = await session.run_sync(ledger_sums, did)
    finally:
        await engine.dispose()
    assert len(notices) == 1  # one 已转入 notice
    assert sums[did] == {"total": 5000 - 1250, "withdrawals": -1250}
