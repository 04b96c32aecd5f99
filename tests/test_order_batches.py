"""Order events a batch at a time (domain.orders.apply_events): a batch costs a constant number
of statements whatever its size, and two processes given the same events on one database store
each once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from datetime import UTC, datetime

from aiohttp.test_utils import TestServer
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from domain import dashboard
from domain.contests import SaleChange
from domain.notices import credit_notice, window_end
from domain.orders import EventIn, apply_events
from domain.outbox_rows import Merge, merge_notices
from kit.app_keys import CLOCK, CONFIG, SESSIONMAKER, WRITER
from sandbox.platform import Platform
from storage.db import create_engine, create_sessionmaker
from storage.models import Distributor, OutboxMessage
from storage.models_ledger import Order, OrderEvent
from tests.conftest import Harness, make_config, require_pg
from tests.db_support import pg_database
from tests.eventually import eventually
from tests.money_support import check_invariants, event, money_harness, post_event, seed

# A batch reads what it needs (stored answers, orders, chains, the month's commission), writes one
# statement per table (orders, commissions, entries, events, balances, notices, daily totals) and
# runs the per-batch rules (contests, promotion, risk): about 18, whatever its size.
MAX_STATEMENTS = 20


async def statements(h: Harness, events: list[EventIn]) -> tuple[int, list[Any]]:
    """The statements one batch of `events` sends (counted on its own connection), and its answers."""
    config, now = h.app[CONFIG], h.app[CLOCK].now()

    def unit(session: Session) -> tuple[int, list[Any]]:
        conn, sent = session.connection(), []
        count: Callable[..., None] = lambda *args: sent.append(args[2])  # noqa: E731
        sa_event.listen(conn, "before_cursor_execute", count)
        try:
            answers = apply_events(session, config, events, now)
        finally:
            sa_event.remove(conn, "before_cursor_execute", count)
        return len(sent), answers
    return await h.app[WRITER].run(unit)


async def sellers(h: Harness, n: int) -> list[Distributor]:
    """`n` sellers, each invited by a distributor of their own (two levels of commission)."""
    out = []
    for _ in range(n):
        inviter, _ = await seed(h)
        out.append((await seed(h, inviter=inviter))[0])
    return out


def paid(prefix: str, n: int, team: list[Distributor]) -> list[EventIn]:
    return [EventIn(f"{prefix}-{i}-paid", f"{prefix}-{i}", "paid", 10_000 + i, team[i % len(team)].code,
                    buyer_openid=f"o-buyer-{i}") for i in range(n)]


def later(prefix: str, n: int) -> list[EventIn]:
    """Each order completed, then the even ones partly refunded, every fifth one cancelled."""
    out = []
    for i in range(n):
        if i % 5 == 4:
            out.append(EventIn(f"{prefix}-{i}-cancelled", f"{prefix}-{i}", "cancelled"))
            continue
        out.append(EventIn(f"{prefix}-{i}-completed", f"{prefix}-{i}", "completed"))
        if i % 2 == 0:
            out.append(EventIn(f"{prefix}-{i}-refunded", f"{prefix}-{i}", "refunded", 1_000))
    return out


async def test_a_batch_costs_the_same_statements_whatever_its_size(
        db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, freeze_days=0, monthly_cap_fen=10**9) as h:
        team = await sellers(h, 12)
        small_paid, small_answers = await statements(h, paid("S", 20, team))
        large_paid, large_answers = await statements(h, paid("L", 200, team))
        assert all(a["status"] == "paid" and len(a["commissions"]) == 2 for a in small_answers + large_answers)
        assert small_paid <= MAX_STATEMENTS and large_paid <= MAX_STATEMENTS, (small_paid, large_paid)
        small_later, _ = await statements(h, later("S", 20)[:20])
        large_later, answers = await statements(h, later("L", 200)[:200])
        assert {a["status"] for a in answers} == {"completed", "cancelled"}
        assert small_later <= MAX_STATEMENTS and large_later <= MAX_STATEMENTS, (small_later, large_later)
        # Only the branches taken differ (the outbox's merge inserts new notices, updates open ones, or both).
        assert abs(large_paid - small_paid) <= 1 and abs(large_later - small_later) <= 1
        await check_invariants(h)


async def test_refused_events_in_a_batch_change_nothing_and_the_rest_go_through(
        db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server) as h:
        team = await sellers(h, 2)
        events = [*paid("R", 4, team), EventIn("R-x", "R-404", "completed"),  # an unknown order
                  EventIn("R-0-again", "R-0", "paid", 500, team[0].code),  # paid twice
                  EventIn("R-1-refund", "R-1", "refunded", 10**9),  # more than the order
                  EventIn("R-2-completed", "R-2", "completed"), EventIn("R-2-paid-late", "R-2", "shipped")]
        _, answers = await statements(h, events)
        codes = [getattr(a, "error", None) for a in answers]
        assert [c.code if c is not None else None for c in codes] == [
            None, None, None, None, "unknown_order", "order_exists", "refund_too_large", None, "invalid_transition"]
        async with h.app[SESSIONMAKER]() as session:
            stored = set((await session.scalars(select(OrderEvent.event_id))).all())
        assert stored == {"R-0-paid", "R-1-paid", "R-2-paid", "R-3-paid", "R-2-completed"}
        await check_invariants(h)


async def test_two_processes_given_the_same_events_store_each_once(
        db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server) as h:
        other = Harness(make_config(db_url), platform, wechat_server, reply_deadline=3.0)
        await other.start()
        try:
            team = await sellers(h, 3)
            bodies = [event(f"TWO-{i}", "paid", amount_fen=5_000, distributor_code=team[i % 3].code)
                      for i in range(30)]
            # The shop retries each event on the other process while the first is at it.
            both = await asyncio.gather(*(post_event(h, b) for b in bodies),
                                        *(post_event(other, b) for b in bodies[::-1]))
            assert all(status == 200 for status, _ in both), both
            firsts, seconds = both[:len(bodies)], both[len(bodies):][::-1]
            for (_, a), (_, b) in zip(firsts, seconds, strict=True):
                assert sorted([a["duplicate"], b["duplicate"]]) == [False, True]
                assert {**a, "duplicate": None} == {**b, "duplicate": None}
            # The same order under another event id, on both at once: paid once.
            racing = [event("TWO-RACE", "paid", amount_fen=7_000, distributor_code=team[0].code) for _ in range(2)]
            (s1, _), (s2, _) = await asyncio.gather(post_event(h, racing[0]), post_event(other, racing[1]))
            assert sorted([s1, s2]) == [200, 409]
            async with h.app[SESSIONMAKER]() as session:
                assert await session.scalar(select(func.count()).select_from(Order)) == 31
                assert await session.scalar(select(func.count()).select_from(OrderEvent)) == 31
            await check_invariants(h)
        finally:
            await other.close()


async def test_postgresql_two_transactions_adding_one_notice_share_its_row(pg_server_url: str | None) -> None:
    """Two batches (two processes) crediting one receiver in a new window both find no row; the
    second's insert waits for the first's commit, adds nothing, and folds its counts into that
    row: no batch fails, no count is lost."""
    async with pg_database(require_pg(pg_server_url)) as url:
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        now = datetime.now(UTC)
        index, due = window_end(now)

        def credit(n: int) -> Callable[[Session], None]:
            notice = Merge(f"credit:1:{index}", "o-race", {"n": n, "fen": 100 * n}, credit_notice(7), due)
            return lambda s: merge_notices(s, [notice], now)

        async def waiting() -> bool:
            async with engine.connect() as look:
                return bool((await look.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"))).scalar())
        try:
            async with sessions() as first, sessions() as second:
                await first.run_sync(credit(1))
                racing = asyncio.create_task(second.run_sync(credit(2)))
                await eventually(waiting, what="the second insert waiting for the first's commit")
                await first.commit()
                await asyncio.wait_for(racing, 10)
                await second.commit()
            async with engine.connect() as look:
                rows = (await look.execute(select(OutboxMessage.key, OutboxMessage.payload))).all()
            assert [(key, payload["merge"]) for key, payload in rows] == [(f"credit:1:{index}", {"n": 3, "fen": 300})]
            assert "3 笔订单" in rows[0][1]["content"]
        finally:
            await engine.dispose()


async def test_postgresql_a_first_sale_marked_does_not_hold_up_rows_that_refer_to_the_seller(
        pg_server_url: str | None) -> None:
    """A batch marking a seller's first sale locks their row as an UPDATE would (FOR NO KEY
    UPDATE); another process's batch inserting a row that refers to them (its foreign key check
    takes FOR KEY SHARE) goes on at once. With FOR UPDATE the two batches deadlocked under two
    processes (bench/orders.py --processes 2)."""
    async with pg_database(require_pg(pg_server_url)) as url:
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        now = datetime.now(UTC)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(
                    "INSERT INTO distributors (id, code, openid, phone, name, rank, status, registered_at) "
                    "VALUES (1, 'LOCK01', 'o-lock', '13800000001', '张三', 'junior', 'active', :now)"), {"now": now})
            async with sessions() as first, sessions() as second:
                marked = await first.run_sync(lambda s: dashboard._first_sales(s, [SaleChange(1, now, None, 100, 1)]))
                assert marked == [now]
                await second.execute(text("SET LOCAL lock_timeout = '3s'"))
                await second.execute(text("INSERT INTO balances (distributor_id, pending_fen, available_fen, "
                                          "withdrawing_fen, withdrawn_fen) VALUES (1, 100, 0, 0, 0)"))
                await second.commit()
                await first.commit()
            async with engine.connect() as look:
                assert (await look.execute(text("SELECT first_sale_at IS NOT NULL FROM distributors"))).scalar()
                assert (await look.execute(text("SELECT pending_fen FROM balances"))).scalar() == 100
        finally:
            await engine.dispose()
