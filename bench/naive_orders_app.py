"""The yardstick for bench/orders.py: order events the way a straightforward SQLAlchemy app applies them.

POST /api/orders/events with the shop's JSON and the bearer token, on the tables distbot migrated
(reflected at start: orders, commissions, ledger_entries, balances, order_events, distributors).
One AsyncSession and one transaction per event, no batching: the event_id looked up (a repeat
gets its first answer again); `paid`: the distributor by code and its inviter, the order, two
levels of commission (10% and 5%), their ledger entries and the balances' upserts; `completed`:
the order and its commissions updated (with a freeze, the commissions unfreeze later, as distbot's
bench config has it; without one, pending moves to available); then the event row with its answer.
Reasonable, not slowed: SQLite in WAL with synchronous=NORMAL (as distbot) and one pooled
connection (SQLite has one writer; more connections would only wait in the busy handler);
PostgreSQL through an asyncpg pool of 10 + 10, balances locked in one order (no deadlocks).

    python bench/naive_orders_app.py --port 8092 --token T --db-url sqlite+aiosqlite:///x.db [--freeze-days 7]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import MetaData, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

RATES = (("0.10", 10), ("0.05", 5))  # (stored rate, percent) by depth
TABLES = ("distributors", "orders", "commissions", "ledger_entries", "balances", "order_events")
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
META = web.AppKey("meta", MetaData)


class Refused(Exception):
    def __init__(self, status: int, error: str):
        super().__init__(error)
        self.status, self.error = status, error


def engine_for(url: str) -> Any:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=1, max_overflow=0)

        @event.listens_for(engine.sync_engine, "connect")
        def pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10)


async def pay(s: AsyncSession, t: MetaData, body: dict[str, Any], now: datetime) -> dict[str, Any]:
    d = t.tables["distributors"]
    seller = (await s.execute(select(d.c.id, d.c.code, d.c.inviter_id).where(
        d.c.code == body.get("distributor_code")))).first()
    if seller is None:
        raise Refused(422, "unknown_distributor")
    chain = [seller]
    if seller.inviter_id is not None:
        chain += (await s.execute(select(d.c.id, d.c.code, d.c.inviter_id).where(d.c.id == seller.inviter_id))).all()
    orders = t.tables["orders"]
    if await s.scalar(select(orders.c.order_no).where(orders.c.order_no == body["order_no"])) is not None:
        raise Refused(409, "order_exists")
    amount = int(body["amount_fen"])
    await s.execute(orders.insert().values(
        order_no=body["order_no"], distributor_id=seller.id, amount_fen=amount, refunded_fen=0, status="paid",
        paid_at=now, updated_at=now))
    comms = [{"order_no": body["order_no"], "distributor_id": p.id, "depth": depth + 1, "rate": rate,
              "amount_fen": amount * percent // 100, "reversed_fen": 0, "state": "pending", "created_at": now}
             for depth, (p, (rate, percent)) in enumerate(zip(chain, RATES))]
    await s.execute(t.tables["commissions"].insert(), comms)
    await s.execute(t.tables["ledger_entries"].insert(), [
        {"distributor_id": c["distributor_id"], "kind": "commission", "amount_fen": c["amount_fen"],
         "ref": body["order_no"], "order_no": body["order_no"], "created_at": now, "counted_at": now} for c in comms])
    for c in sorted(comms, key=lambda c: c["distributor_id"]):  # one locking order for every transaction
        await add_to_balance(s, t, c["distributor_id"], pending=c["amount_fen"])
    codes = {p.id: p.code for p in chain}
    return answer(body["order_no"], "paid", amount, [{**c, "code": codes[c["distributor_id"]]} for c in comms])


async def complete(s: AsyncSession, t: MetaData, body: dict[str, Any], now: datetime,
                   freeze_days: int) -> dict[str, Any]:
    orders, comms, d = t.tables["orders"], t.tables["commissions"], t.tables["distributors"]
    find = select(orders).where(orders.c.order_no == body["order_no"])
    order = (await s.execute(find.with_for_update() if s.bind.dialect.name == "postgresql" else find)).first()
    if order is None:
        raise Refused(422, "unknown_order")
    if order.status not in ("paid", "shipped"):
        raise Refused(422, "bad_transition")
    await s.execute(orders.update().where(orders.c.order_no == order.order_no).values(
        status="completed", completed_at=now, updated_at=now))
    rows = (await s.execute(select(comms, d.c.code).join(d, d.c.id == comms.c.distributor_id)
                            .where(comms.c.order_no == order.order_no).order_by(comms.c.depth))).mappings().all()
    state = "available" if freeze_days == 0 else "pending"
    await s.execute(comms.update().where(comms.c.order_no == order.order_no).values(
        state=state, unfreeze_at=now + timedelta(days=freeze_days)))
    if freeze_days == 0:
        for c in sorted(rows, key=lambda c: c["distributor_id"]):
            rest = c["amount_fen"] - c["reversed_fen"]
            await add_to_balance(s, t, c["distributor_id"], pending=-rest, available=rest)
    return answer(order.order_no, "completed", order.amount_fen, [{**c, "state": state} for c in rows])


async def add_to_balance(s: AsyncSession, t: MetaData, distributor_id: int, pending: int = 0,
                         available: int = 0) -> None:
    b = t.tables["balances"]
    insert = (pg_insert if s.bind.dialect.name == "postgresql" else sqlite_insert)(b)
    await s.execute(insert.values(distributor_id=distributor_id, pending_fen=pending, available_fen=available,
                                  withdrawing_fen=0, withdrawn_fen=0).on_conflict_do_update(
        index_elements=[b.c.distributor_id],
        set_={"pending_fen": b.c.pending_fen + pending, "available_fen": b.c.available_fen + available}))


def answer(order_no: str, status: str, amount: int, comms: list[Any]) -> dict[str, Any]:
    return {"order_no": order_no, "status": status, "duplicate": False, "amount_fen": amount, "refunded_fen": 0,
            "commissions": [{"distributor_code": c["code"], "depth": c["depth"], "amount_fen": c["amount_fen"],
                             "reversed_fen": c["reversed_fen"], "state": c["state"]} for c in comms]}


def create_app(db_url: str, token: str, freeze_days: int) -> web.Application:
    async def post_event(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        if body.get("type") not in ("paid", "completed") or not body.get("event_id") or not body.get("order_no"):
            return web.json_response({"error": "bad_request"}, status=400)
        t, now = request.app[META], datetime.now(UTC)
        events = t.tables["order_events"]
        try:
            async with request.app[SESSIONS]() as s, s.begin():
                stored = await s.scalar(select(events.c.answer).where(events.c.event_id == body["event_id"]))
                if stored is not None:
                    return web.json_response({**stored, "duplicate": True})
                done = (await pay(s, t, body, now) if body["type"] == "paid"
                        else await complete(s, t, body, now, freeze_days))
                await s.execute(events.insert().values(
                    event_id=body["event_id"], order_no=body["order_no"], type=body["type"],
                    amount_fen=body.get("amount_fen"), status=done["status"], received_at=now, answer=done))
        except Refused as e:
            return web.json_response({"error": e.error}, status=e.status)
        return web.json_response(done)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def database(app: web.Application) -> Any:
        engine = engine_for(db_url)
        meta = MetaData()
        async with engine.connect() as conn:
            await conn.run_sync(lambda sync: meta.reflect(sync, only=TABLES))
        app[META], app[SESSIONS] = meta, async_sessionmaker(engine, expire_on_commit=False)
        yield
        await engine.dispose()

    app = web.Application()
    app.cleanup_ctx.append(database)
    app.router.add_post("/api/orders/events", post_event)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--db-url", required=True, help="a database distbot migrated (sqlite+aiosqlite or +asyncpg)")
    p.add_argument("--freeze-days", type=int, default=7)
    args = p.parse_args()
    web.run_app(create_app(args.db_url, args.token, args.freeze_days), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
