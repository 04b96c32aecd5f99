"""A hypothesis state machine fires random order events (duplicates, partial refunds, cancels),
unfreezes, withdrawals in chat, admin decisions and exits at the running bot over HTTP and the
webhook, on SQLite and PostgreSQL, and checks the ledger's promises after every step.

Hypothesis drives from a worker thread; each step runs on the test's event loop, where the bot
serves, through run_coroutine_threadsafe.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from sandbox.platform import Platform
from kit.app_keys import CONFIG, WRITER
from handlers.earnings import unfreeze_due
from domain.withdrawal_rules import CONFIRM_ABOVE_FEN
from tests.money_support import balance, check_invariants, event, money_harness, post_event, seed

RATES = {"junior": (Decimal("0.10"), Decimal("0.03"), Decimal("0.01")), "gold": (Decimal("0.15"), Decimal("0.05"))}
# Gold out of reach: the model's ranks never change (promotion has its own tests).
RANKS = [{"key": k, "name": k, "rates": [str(r) for r in v], "min_sales_fen": 0 if k == "junior" else 10**12}
         for k, v in RATES.items()]
MIN_WITHDRAW = 500
_orders = itertools.count(1)


def floor_rate(amount: int, rate: Decimal) -> int:
    f = Fraction(rate)
    return amount * f.numerator // f.denominator


class LedgerMachine(RuleBasedStateMachine):
    harness: Any = None
    loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    @initialize()
    def people(self) -> None:
        h = self.harness
        # a ← b ← c (a invited b, b invited c), d on its own, gold.
        self.dist: list[Any] = []
        self.users: list[Any] = []
        self.inviter: list[int | None] = [None, 0, 1, None]
        self.rank = ["junior", "junior", "junior", "gold"]
        self.exited = [False] * 4
        for i in range(4):
            inv = self.dist[self.inviter[i]] if self.inviter[i] is not None else None
            d, u = self.run(seed(h, inviter=inv, rank=self.rank[i]))
            self.dist.append(d)
            self.users.append(u)
        self.orders: dict[str, dict[str, Any]] = {}
        self.sent: list[tuple[dict[str, Any], dict[str, Any]]] = []

    # ---- the model ------------------------------------------------------------------------------
    def expected_shares(self, who: int, amount: int, buyer_self: bool) -> list[tuple[str, int, int]]:
        out, person, depth = [], who, 0
        while person is not None and depth < 3:
            rates = RATES[self.rank[person]]
            if not self.exited[person] and not (depth == 0 and buyer_self) and depth < len(rates):
                fen = floor_rate(amount, rates[depth])
                if fen:
                    out.append((self.dist[person].code, depth, fen))
            person, depth = self.inviter[person], depth + 1
        return out

    def post(self, body: dict[str, Any]) -> tuple[int, Any]:
        status, answer = self.run(post_event(self.harness, body))
        if status == 200:
            self.sent.append((body, answer))
        return status, answer

    def check_reversals(self, o: dict[str, Any], answer: dict[str, Any]) -> None:
        for c in answer["commissions"]:
            a, r = o["amount"], o["refunded"]
            want = c["amount_fen"] if o["status"] == "cancelled" or r == a else c["amount_fen"] * r // a
            assert c["reversed_fen"] == want, (o, c)

    # ---- rules ------------------------------------------------------------------------------------
    @rule(who=st.integers(0, 3), amount=st.integers(1, 2_000_000), buyer_self=st.booleans())
    def pay(self, who: int, amount: int, buyer_self: bool) -> None:
        no = f"HS{next(_orders)}"
        body = event(no, "paid", amount_fen=amount, distributor_code=self.dist[who].code,
                     buyer_openid=self.users[who].openid if buyer_self else "o-stranger")
        status, answer = self.post(body)
        assert status == 200, answer
        got = [(c["distributor_code"], c["depth"], c["amount_fen"]) for c in answer["commissions"]]
        assert got == self.expected_shares(who, amount, buyer_self)
        self.orders[no] = {"amount": amount, "refunded": 0, "status": "paid"}

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), kind=st.sampled_from(["shipped", "completed", "cancelled", "refunded", "paid"]),
          share=st.integers(1, 100))
    def follow_up(self, data: st.DataObject, kind: str, share: int) -> None:
        no = data.draw(st.sampled_from(sorted(self.orders)))
        o = self.orders[no]
        left = o["amount"] - o["refunded"]
        amount = max(left * share // 100, 1) if kind == "refunded" else None
        if kind == "refunded" and share == 100:
            amount = left + 1 if left and data.draw(st.booleans()) else left  # sometimes too much
        extra = {"amount_fen": amount} if amount is not None else {}
        if kind == "paid":
            extra = {"amount_fen": 100, "distributor_code": self.dist[0].code}
        status, answer = self.post(event(no, kind, **extra))
        allowed = {"shipped": {"paid"}, "completed": {"paid", "shipped"}, "cancelled": {"paid", "shipped", "completed"},
                   "refunded": {"paid", "shipped", "completed"}, "paid": set()}[kind]
        if kind == "paid":
            assert status == 409, answer
            return
        if o["status"] not in allowed or (kind == "refunded" and (amount or 0) > left):
            assert status == 422, (o, kind, amount, answer)
            return
        assert status == 200, (o, kind, amount, answer)
        if kind == "refunded":
            o["refunded"] += amount
            if o["refunded"] == o["amount"]:
                o["status"] = "refunded"
        else:
            o["status"] = kind
        assert answer["status"] == o["status"]
        self.check_reversals(o, answer)

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        body, first = data.draw(st.sampled_from(self.sent))
        status, again = self.run(post_event(self.harness, body))
        assert status == 200 and again == {**first, "duplicate": True}

    @rule()
    def unfreeze(self) -> None:
        app, now = self.harness.app, self.harness.clock.now()
        self.run(unfreeze_due(app[WRITER], app[CONFIG], now, until=now + timedelta(days=8)))

    @rule(who=st.integers(0, 3), fen=st.integers(1, 300_000))
    def withdraw(self, who: int, fen: int) -> None:
        before = self.run(balance(self.harness, self.dist[who]))
        yuan = f"{fen // 100}.{fen % 100:02d}"
        reply = self.run(self.harness.say(self.users[who], f"提现 {yuan}"))
        if self.exited[who]:
            assert "已退出" in reply
        elif fen < MIN_WITHDRAW:
            assert "至少" in reply, reply
        elif fen > before["available_fen"]:
            assert "不足" in reply, reply
        else:
            if fen > CONFIRM_ABOVE_FEN:  # a large amount is confirmed first
                assert "确认提现" in reply, reply
                reply = self.run(self.harness.say(self.users[who], "1"))
            assert "已提交" in reply, (reply, before)

    @rule(approve=st.booleans(), data=st.data())
    def decide(self, approve: bool, data: st.DataObject) -> None:
        status, body = self.run(self.harness.api("GET", "/withdrawals?status=pending"))
        mine = {d.code for d in self.dist}
        pending = [w for w in body["withdrawals"] if w["distributor_code"] in mine]
        if not pending:
            return
        w = data.draw(st.sampled_from(pending))
        path = f"/withdrawals/{w['id']}/" + ("approve" if approve else "reject")
        status, decided = self.run(self.harness.api("POST", path, json={"reason": "测试"}))
        assert status == 200 and decided["status"] == ("approved" if approve else "rejected")
        status, _ = self.run(self.harness.api("POST", path, json={"reason": "测试"}))
        assert status == 409

    @precondition(lambda self: sum(self.exited) < 2)
    @rule(who=st.integers(0, 3))
    def leave(self, who: int) -> None:
        if self.exited[who]:
            return
        self.run(self.harness.say(self.users[who], "退出"))
        assert "已退出" in self.run(self.harness.say(self.users[who], "确认退出"))
        self.exited[who] = True
        for i, inv in enumerate(self.inviter):
            if inv == who:
                self.inviter[i] = self.inviter[who]

    @invariant()
    def ledger_holds(self) -> None:
        if getattr(self, "dist", None):
            self.run(check_invariants(self.harness))


async def test_ledger_state_machine(db_url: str, platform: Platform, wechat_server: TestServer) -> None:
    async with money_harness(db_url, platform, wechat_server, freeze_days=7, max_levels=3,
                             min_withdraw_fen=MIN_WITHDRAW, ranks=RANKS) as h:
        LedgerMachine.harness, LedgerMachine.loop = h, asyncio.get_running_loop()
        # The same rules run on both: PostgreSQL's half checks its statements with fewer examples.
        examples = 25 if db_url.startswith("sqlite") else 10
        config = settings(max_examples=examples, stateful_step_count=15, deadline=None,
                          suppress_health_check=list(HealthCheck))
        await asyncio.to_thread(run_state_machine_as_test, LedgerMachine, settings=config)
