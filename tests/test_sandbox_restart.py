"""The sandbox's simulated users survive a restart of the app (`make run` again): the simulator's
API lists the same users with their chats and quota, and their next message continues as the
registered distributor."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.console_support import serve

CODE = re.compile(r"推广码：([A-Z0-9]{6})")


@asynccontextmanager
async def serving(db_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """The whole app as `make run` serves it (the built-in sandbox, its workers), until the block
    ends; the simulator's API."""
    async with serve(tmp_path, db_url=db_url, workers=True) as (base, _):
        yield base + "/sandbox/sim"


async def say(http: aiohttp.ClientSession, sim: str, openid: str, kind: str, **kw: Any) -> str:
    async with http.post(f"{sim}/send", json={"openid": openid, "type": kind, **kw}) as r:
        assert r.status == 200, await r.text()
        reply = (await r.json())["reply"]
    return reply["content"] if reply and reply.get("type") == "text" else ""


async def state(http: aiohttp.ClientSession, sim: str) -> list[dict[str, Any]]:
    async with http.get(f"{sim}/state") as r:
        return (await r.json())["users"]


async def timeline(http: aiohttp.ClientSession, sim: str, openid: str) -> list[dict[str, Any]]:
    async with http.get(f"{sim}/messages", params={"openid": openid}) as r:
        return (await r.json())["messages"]


async def test_simulated_users_and_their_chats_survive_a_restart(db_url: str, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        async with serving(db_url, tmp_path) as sim:
            async with http.post(f"{sim}/users", json={"nickname": "小<b>王</b>"}) as r:
                me = (await r.json())["openid"]
            async with http.post(f"{sim}/users", json={}) as r:
                other = (await r.json())["openid"]
            assert "欢迎" in await say(http, sim, me, "subscribe")
            assert "注册" in await say(http, sim, me, "click", key="EARNINGS")  # not yet a distributor
            await say(http, sim, me, "text", content="注册")
            await say(http, sim, me, "text", content="13800138000")
            code = CODE.search(await say(http, sim, me, "text", content="王小明"))
            assert code, "no code in the registration reply"
            assert "今日：¥0.00" in await say(http, sim, me, "text", content="收益")
            before = await timeline(http, sim, me)
            users_before = await state(http, sim)
        assert [u["openid"] for u in users_before] == [me, other]
        assert len(before) >= 10 and before[-1]["from"] == "bot"

        async with serving(db_url, tmp_path) as sim:  # the same database, a new process's app
            users = await state(http, sim)
            # who, in what order, following or not, the customer-service quota left
            assert [{**u, "quota": u["quota"]["left"]} for u in users] == [
                {**u, "quota": u["quota"]["left"]} for u in users_before]
            assert users[0]["quota"]["left"] == 5 and users[0]["quota"]["seconds"] > 47 * 3600
            assert users[0]["nickname"] == "小<b>王</b>" and users[0]["subscribed"] and not users[1]["subscribed"]
            assert await timeline(http, sim, me) == before
            assert await timeline(http, sim, other) == []
            # They continue where they left off: the bot knows the distributor, the page their chat.
            reply = await say(http, sim, me, "text", content="收益")
            assert "王小明的收益" in reply and "今日：¥0.00" in reply, reply
            after = await timeline(http, sim, me)
            assert after[:len(before)] == before and after[len(before)]["id"] > before[-1]["id"]
            assert [m.get("content") for m in after[len(before):]] == ["收益", reply]
