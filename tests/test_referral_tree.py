"""The inviter tree, hammered: random sequences of registrations with random inviter choices (typed
codes, QR scenes, invalid codes, self-invitation, later scans) never make a cycle, and
storage.queries.upline agrees with a plain Python model of the tree.

Updates go the second test layer's way: raw XML parsed by the webhook's parser, then the dispatcher.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from kit.app_keys import SESSIONMAKER
from wechat.wechat_keys import DISPATCHER
from wechat.inbound import parse_xml, to_incoming
from storage.models import Distributor
from storage.queries import upline
from tests.conftest import Harness

import xmltodict


@dataclass
class Model:
    """openid -> code, code -> inviter code (None at a root)."""

    code_of: dict[str, str] = field(default_factory=dict)
    inviter: dict[str, str | None] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)  # openids, in order

    def chain(self, code: str) -> list[str]:
        out, c = [], self.inviter[code]
        while c is not None:
            out.append(c)
            c = self.inviter[c]
        return out


class Chat:
    def __init__(self, h: Harness) -> None:
        self.h = h
        self.msg_ids = itertools.count(int(time.time()) * 1000)
        self.clock = itertools.count(int(time.time()))
        self.users = itertools.count()

    async def _submit(self, fields: dict[str, Any]) -> str:
        fields = {"ToUserName": "gh_sandbox000001", "CreateTime": str(next(self.clock)), **fields}
        msg = to_incoming(parse_xml(xmltodict.unparse({"xml": fields}).encode()))
        reply = await self.h.app[DISPATCHER].submit(msg)
        return getattr(reply, "content", "")

    async def say(self, openid: str, text: str) -> str:
        return await self._submit({"FromUserName": openid, "MsgType": "text", "Content": text,
                                   "MsgId": str(next(self.msg_ids))})

    async def follow(self, openid: str, scene: str = "") -> str:
        extra = {"EventKey": "qrscene_" + scene, "Ticket": "t"} if scene else {}
        return await self._submit({"FromUserName": openid, "MsgType": "event", "Event": "subscribe", **extra})

    async def scan(self, openid: str, scene: str) -> str:
        return await self._submit({"FromUserName": openid, "MsgType": "event", "Event": "SCAN",
                                   "EventKey": scene, "Ticket": "t"})

    def new_openid(self) -> str:
        return f"oTree{next(self.users):023d}"

    async def finish(self, openid: str) -> str | None:
        """Phone and name; the new code, or None when refused."""
        n = int(openid[-9:])
        await self.say(openid, f"139{n:08d}")
        reply = await self.say(openid, "张三")
        m = re.search(r"推广码：([A-Z0-9]{6})", reply)
        return m.group(1) if m else None


STEP = st.tuples(
    st.sampled_from(["none", "typed", "scene", "scene_then_typed", "invalid", "self", "scan_after"]),
    st.integers(0, 1000), st.integers(0, 1000))


async def apply(chat: Chat, model: Model, kind: str, i: int, j: int) -> None:
    existing = model.registered
    pick = (lambda k: model.code_of[existing[k % len(existing)]]) if existing else (lambda k: None)
    openid = chat.new_openid()
    if kind == "self":
        if not existing:
            return
        me = existing[i % len(existing)]
        assert "已经是分销员" in await chat.say(me, f"注册 {model.code_of[me]}")
        await chat.scan(me, model.code_of[me])
        return
    if kind == "invalid":
        await chat.follow(openid, scene="ZZZZZ9" if i % 2 else "")
        reply = await chat.say(openid, "注册 " + ("ZZZZZ9", "0O1I", "abc")[j % 3])
        assert "不存在" in reply
        return  # refused: this follower is not registered
    inviter = None
    if kind in ("scene", "scene_then_typed") and existing:
        inviter = pick(i)
        await chat.follow(openid, scene=inviter)
    else:
        await chat.follow(openid)
    if kind in ("typed", "scene_then_typed", "scan_after") and existing:
        inviter = pick(j)
        await chat.say(openid, f"注册 {inviter.lower() if j % 2 else inviter}")
    else:
        await chat.say(openid, "注册")
    code = await chat.finish(openid)
    assert code is not None
    model.code_of[openid] = code
    model.inviter[code] = inviter
    model.registered.append(openid)
    if kind == "scan_after" and existing:
        await chat.scan(openid, pick(i))  # a later scan changes nothing


async def check(h: Harness, model: Model) -> None:
    async with h.app[SESSIONMAKER]() as session:
        rows = list(await session.scalars(select(Distributor)))
        by_id = {d.id: d for d in rows}
        assert {d.code for d in rows} == set(model.inviter)
        for d in rows:
            expected_inviter = model.inviter[d.code]
            assert (by_id[d.inviter_id].code if d.inviter_id else None) == expected_inviter
            # No cycle: following inviters from anyone ends at a root within len(rows) steps.
            seen, cur = set(), d
            while cur.inviter_id is not None:
                assert cur.id not in seen, f"cycle through {cur.code}"
                seen.add(cur.id)
                cur = by_id[cur.inviter_id]
            chain = model.chain(d.code)
            for levels in (1, 2, 3, len(rows) + 1):
                got = [u.code for u in await session.run_sync(upline, d, levels)]
                assert got == chain[:levels], (d.code, levels)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          database=None)
@given(steps=st.lists(STEP, min_size=1, max_size=7))
async def test_random_registrations_make_a_tree_that_upline_reads_right(harness: Harness,
                                                                        steps: list[tuple[str, int, int]]) -> None:
    # One app and database for all examples: the model grows with them and must keep agreeing.
    state = harness.__dict__.setdefault("_tree_state", (Chat(harness), Model()))
    chat, model = state
    for kind, i, j in steps:
        await apply(chat, model, kind, i, j)
    await check(harness, model)


async def test_a_deep_chain_is_cut_at_the_level_asked(harness: Harness) -> None:
    chat, model = Chat(harness), Model()
    for k in range(6):
        await apply(chat, model, "typed" if k else "none", 0, k - 1)
    await check(harness, model)
    async with harness.app[SESSIONMAKER]() as session:
        last = await session.scalar(select(Distributor).where(Distributor.code == model.code_of[model.registered[-1]]))
        assert len(await session.run_sync(upline, last, 3)) == 3
        assert len(await session.run_sync(upline, last, 0)) == 0


async def test_upline_stops_at_a_hand_made_cycle(harness: Harness) -> None:
    # The application never makes one; a database edited by hand must not hang the commission code.
    chat, model = Chat(harness), Model()
    await apply(chat, model, "none", 0, 0)
    await apply(chat, model, "typed", 0, 0)
    a, b = (model.code_of[o] for o in model.registered)
    async with harness.app[SESSIONMAKER]() as session, session.begin():
        da = await session.scalar(select(Distributor).where(Distributor.code == a))
        db = await session.scalar(select(Distributor).where(Distributor.code == b))
        da.inviter_id = db.id
    async with harness.app[SESSIONMAKER]() as session:
        da = await session.scalar(select(Distributor).where(Distributor.code == a))
        assert [d.code for d in await session.run_sync(upline, da, 10)] == [b]
