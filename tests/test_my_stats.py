"""我的推广 (this week's scans, follows, registrations and first orders, not last week's), 海报 列表
then a number, and one word for the code: no reply or help text says 邀请码 or speaks English.
Over the webhook, on both databases."""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import func, select

from domain.formats import week_start
from handlers.my_stats import prune_qr_scans
from kit.app_keys import READER
from kit.menu import MenuKey
from storage.tables import QR_SCANS
from tests.conftest import Harness
from tests.money_support import pay
from tests.test_packs_support import demo, upload
from tests.test_posters import decode_qr

ENGLISH = re.compile(r"[A-Za-z]{2,}(?:[\s,、/]+[A-Za-z]{2,}){2,}")  # three English words in a row


async def test_my_stats_counts_this_week_and_a_number_picks_a_listed_poster(harness: Harness) -> None:
    h, p = harness, harness.platform
    monday = week_start(h.clock.now()) + timedelta(days=7)  # next week's Monday, 00:00 China time
    h.clock.set(monday - timedelta(days=2))  # last week (Saturday)
    alice, bob, carol, dave, erin = (h.user() for _ in range(5))
    code = await h.register(alice, "13800138000", "张三丰")
    await h.send(bob, "scan", scene=code)
    carol_code = await h.register(carol, "13800138001", "李四", scene=code)
    await pay(h, "SO-LAST-1", 10_000, SimpleNamespace(code=carol_code))  # carol's first order: last week

    h.clock.set(monday + timedelta(hours=10))
    assert "二维码被扫：0 次" in await h.say(alice, "我的推广")  # last week's are not this week's
    await h.send(dave, "scan", scene=code)
    await h.send(alice, "scan", scene=code)  # their own scan is not counted
    follow = p.message_fields(erin, "subscribe", scene=code)
    for _ in range(2):  # WeChat's retry of the follow: one scan
        await p.post(h.http, follow)
    erin_code = await h.register(erin, "13800138002", "王五")
    await pay(h, "SO-NEW-1", 10_000, SimpleNamespace(code=erin_code))  # erin's first order
    await pay(h, "SO-LAST-2", 10_000, SimpleNamespace(code=carol_code))  # carol's second: not a first
    stats = await h.say(alice, "my stats")
    for line in (f"推广码：{code}", "二维码被扫：2 次", "扫码关注：1 人", "注册加入您团队：1 人", "成员首单：1 人"):
        assert line in stats, stats

    # 海报 列表 numbers the posters their rank may use; a number alone picks one.
    assert (await upload(h, demo()))[0] == 201
    listing = await h.say(alice, "海报 列表")
    assert "1. 冬季好物推荐海报" in listing and "2. 红枣礼盒单品海报" in listing and "黄金" not in listing, listing
    reply = await h.send(alice, "text", content="2")
    assert reply is not None and reply["type"] == "image", reply
    [ticket] = [t for t in p.tickets.values() if t.scene == code]
    assert decode_qr(p.media[reply["media_id"]][0]) == [ticket.url]  # the poster carries their code
    assert "分销员助手可以帮您" in await h.say(alice, "2")  # the pick is spent
    await h.say(alice, "海报 列表")
    assert "请回复 1–2 的序号" in await h.say(alice, "7")
    assert "二维码被扫：2 次" in await h.say(alice, "我的推广")  # any other text leaves the list
    h.clock.move(weeks=5, hours=-10)
    await prune_qr_scans.run(h.app)
    assert await h.app[READER].run(lambda s: s.scalar(select(func.count()).select_from(QR_SCANS))) == 3  # this week's (also her own)
    h.clock.move(hours=11)
    await prune_qr_scans.run(h.app)
    assert await h.app[READER].run(lambda s: s.scalar(select(func.count()).select_from(QR_SCANS))) == 0


async def test_no_reply_says_invite_code_or_speaks_english(harness: Harness) -> None:
    h = harness
    alice, bob = h.user(), h.user()
    replies = [await h.follow(alice), await h.say(alice, "注册 ZZZZZZ"), await h.say(alice, "帮助")]
    code = await h.register(alice, "13800138000", "张三丰")
    replies += [await h.follow(bob, scene=code), await h.say(bob, "注册"), await h.say(bob, "取消")]
    for text in ("帮助", "help", "收益", "团队", "订单", "等级", "排行", "培训", "话术", "海报", "海报 列表",
                 "我的推广", "提现", "提现 全部", "提现 abc", "提现记录", "你好", "注册"):
        replies.append(await h.say(alice, text))
    for key in MenuKey:
        reply = await h.click(alice, key.value)
        replies.append((reply or {}).get("content", ""))
    assert "推广码" in replies[1] and f"推广码是 {code}" in await h.follow(alice)
    for reply in replies:
        assert "邀请码" not in reply and "推荐码" not in reply, reply
        assert not ENGLISH.search(reply), reply
