"""Rights by rank beyond rates: posters and scripts a pack keeps for some ranks, trainings by
rank, priority service, and 等级 saying what a rank unlocks (CONTRACT §3, §6)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sandbox.platform import Platform
from tests.conftest import ON_SQLITE, Harness, make_config
from tests.money_support import seed
from tests.test_packs_support import demo, upload

pytestmark = ON_SQLITE  # the protocol or pages rendered: see tests/conftest.py


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    config = make_config(db_url, service={"priority_ranks": ["gold"], "urgent_minutes": 20})
    async with Harness(config, platform, wechat_server, reply_deadline=3.0) as harness:
        assert (await upload(harness, demo()))[0] == 201
        yield harness


async def test_scripts_and_posters_kept_for_gold(h: Harness) -> None:
    junior, juser = await seed(h, name="林一")
    gold, guser = await seed(h, rank="gold", name="林二")
    assert "没有找到海报" in await h.say(juser, "海报 gold")
    assert "黄金合伙人专属海报" not in await h.say(juser, "海报 列表")
    assert "黄金合伙人专属海报" in await h.say(guser, "海报 列表")
    assert "找到 5 条话术" in (mine := await h.say(juser, "话术")) and "黄金合伙人" not in mine
    assert "找到 6 条话术" in (theirs := await h.say(guser, "话术")) and "团队招募与带教话术" in theirs
    for user in (juser, guser):
        await h.say(user, "取消")
    assert "没有找到" in await h.say(juser, "话术 团队招募")
    filled = await h.say(guser, "话术 团队招募")
    assert "林二" in filled and gold.code in filled


async def test_rank_says_what_gold_unlocks(h: Harness) -> None:
    _, guser = await seed(h, rank="gold")
    reply = await h.say(guser, "等级")
    assert "客服优先" in reply and "20 分钟内响应" in reply
    assert "专属培训：黄金合伙人进阶：带好你的团队" in reply
    assert "专属海报：黄金合伙人专属海报" in reply and "专属话术：黄金合伙人·团队招募与带教话术" in reply
    _, juser = await seed(h)
    reply = await h.say(juser, "等级")
    assert "客服优先" not in reply and "专属海报" not in reply
