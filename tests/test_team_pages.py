"""团队 with its members, 团队订单 and 明细 in chat, ten to a page, on both databases: masked names
(a hostile one as plain text), the page split, the signs of amounts, nobody else's rows."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sandbox.platform import Platform
from tests.conftest import Harness
from tests.money_support import money_harness, pay, seed, send

RANKS = [{"key": "junior", "name": "初级推广员", "rates": [0.10, 0.03, 0.01]}]
NUMBERED = re.compile(r"^(\d+)\. ", re.M)


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    async with money_harness(db_url, platform, wechat_server, max_levels=3, freeze_days=0, ranks=RANKS) as harness:
        yield harness


def numbers(reply: str) -> list[int]:
    return [int(n) for n in NUMBERED.findall(reply)]


async def test_team_lists_members_direct_first_ten_a_page(h: Harness) -> None:
    me, me_user = await seed(h, name="赵六")
    # Two members bound for real: a poster scan (the scene) and the 推广码 typed after 注册.
    await h.register(h.user(), "13700000001", "钱七", scene=me.code)
    await h.register(h.user(), "13700000002", "孙八", code=me.code)
    direct = [(await seed(h, inviter=me, name=f"{c}某"))[0] for c in "甲乙丙丁戊己庚辛壬"]
    await seed(h, inviter=me, name="<a>坏人")
    await seed(h, inviter=direct[0], name="周一")
    await seed(h, inviter=direct[0], name="吴二")
    other, _o = await seed(h, name="郑九")
    stranger, _s = await seed(h, inviter=other, name="冯十")
    await pay(h, "TM1", 10000, direct[0])  # 甲 sold
    await pay(h, "TM2", 5000, stranger, buyer_openid=direct[1].openid)  # 乙 bought (from another team)
    await pay(h, "TM3", 3000, (await seed(h, inviter=direct[1], name="陈三"))[0])

    first = await h.say(me_user, "团队")
    assert "团队共 15 人，本月新加入 15 人" in first and "直属成员：12 人" in first and "二级成员：3 人" in first
    assert "本月团队销售额：¥130.00" in first and "本月个人销售额：¥0.00" in first  # TM2 is another team's
    assert numbers(first) == list(range(1, 11)) and first.count("【直属成员】") == 1 and "【二级成员】" not in first
    assert re.search(r"^1\. <\*\*\*\* · \d{4}-\d\d-\d\d 加入 · 尚未购买或出单$", first, re.M), first  # plain text
    assert "<a>" not in first and "冯" not in first and "郑" not in first
    assert re.search(r"^2\. 壬\* ", first, re.M) and re.search(r"^9\. 乙\* .* · 已购买$", first, re.M), first
    assert re.search(r"^10\. 甲\* .* · 已出单$", first, re.M), first
    assert "回复“团队 2”查看下一页" in first and "第 1/2 页" in first

    second = await h.say(me_user, "team 2")
    assert "团队共" not in second and numbers(second) == list(range(11, 16))
    assert re.search(r"^11\. 孙\* · .* 加入 · 推广码 · 尚未购买或出单$", second, re.M), second
    assert re.search(r"^12\. 钱\* · .* 加入 · 扫码 · ", second, re.M), second
    # The second level by the direct member they came through, newest first: 乙's, then 甲's.
    assert second.index("【直属成员】") < second.index("【二级成员】") < second.index("13. 陈*")
    assert "14. 吴*" in second and "15. 周*" in second and "冯" not in second and "已是最后一页" in second
    assert "没有第 3 页" in await h.say(me_user, "团队 3") and "页码请用数字" in await h.say(me_user, "团队 甲")
    assert "团队共 1 人" in await h.say(_o, "团队")  # the other distributor sees only their own


async def test_team_orders_any_depth_newest_first(h: Harness) -> None:
    me, me_user = await seed(h, name="赵六")
    a, a_user = await seed(h, inviter=me, name="钱七")
    c, _ = await seed(h, inviter=a, name="孙八")
    other, other_user = await seed(h, name="郑九")
    stranger, _s = await seed(h, inviter=other, name="冯十")
    for i in range(1, 6):
        await pay(h, f"A{i}", 10000, a)  # depth 1 for me: ¥3.00 each
    for i in range(1, 5):
        await pay(h, f"C{i}", 10000, c)  # depth 2: ¥1.00
    await pay(h, "M1", 10000, me, buyer_openid=a_user.openid)  # my own sale, bought by 钱七
    await pay(h, "M2", 20000, me)
    await pay(h, "X1", 10000, stranger)  # another team's
    await send(h, "A1", "refunded", amount_fen=10000)
    await send(h, "A2", "completed")
    await send(h, "A2", "refunded", amount_fen=5000)

    first = await h.say(me_user, "团队订单")
    assert first.startswith("团队订单：") and numbers(first) == list(range(1, 11)), first
    assert re.search(r"^1\. \d\d-\d\d M2 ¥200\.00 待发货 · 本人推广 · 佣金 ¥20\.00 待结算$", first, re.M), first
    assert re.search(r"^2\. .* M1 ¥100\.00 待发货 · 本人推广，买家 钱\* · 佣金 ¥10\.00 待结算$", first, re.M), first
    assert re.search(r"^3\. .* C4 ¥100\.00 待发货 · 二级 孙\* · 佣金 ¥1\.00 待结算$", first, re.M), first
    assert "X1" not in first and "冯" not in first and "A1" not in first and "回复“团队订单 2”查看下一页" in first
    second = await h.say(me_user, "推广订单 2")
    assert numbers(second) == [11] and "已是最后一页" in second
    assert re.search(r"^11\. .* A1 ¥100\.00 已退款 · 直属 钱\* · 佣金 ¥0\.00 已冲回$", second, re.M), second
    a2 = next(line for line in first.splitlines() if " A2 " in line)
    assert a2.endswith("A2 ¥100.00（已退 ¥50.00） 已完成 · 直属 钱* · 佣金 ¥1.50 可提现（已冲回 ¥1.50）"), a2
    assert "没有第 3 页" in await h.say(me_user, "team orders 3")
    theirs = await h.say(other_user, "团队订单")
    assert numbers(theirs) == [1] and "X1 ¥100.00 待发货 · 直属 冯*" in theirs and "M1" not in theirs, theirs
    assert "还没有给您带来佣金的订单" in await h.say((await seed(h, name="卫五"))[1], "团队订单")


async def test_details_signed_entries_newest_first(h: Harness) -> None:
    me, me_user = await seed(h, name="赵六")
    a, _ = await seed(h, inviter=me, name="钱七")
    other, other_user = await seed(h, name="郑九")
    status, _body = await h.api("POST", f"/distributors/{me.code}/adjustments", json={"amount_fen": 5000,
                                                                                     "reason": "活动补贴"})
    assert status == 201, _body
    for i in range(1, 9):
        await pay(h, f"D{i}", 10000 * i, a)  # + commission to me: ¥3.00 × i
    await send(h, "D1", "refunded", amount_fen=10000)  # − ¥3.00
    assert "¥12.00" in await h.say(me_user, "提现 12")
    await pay(h, "OTHER1", 10000, other)
    earnings = await h.say(me_user, "收益")
    assert earnings.splitlines()[-1] == "回复“明细”查看每一笔收支。", earnings

    first = await h.say(me_user, "明细")
    lines = first.splitlines()
    assert lines[0] == "收支明细（最新的在前）：" and len(lines) == 12, first
    assert lines[-1] == "第 1 页，回复“明细 2”查看下一页。", first
    entry = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d (\S+) ([+-]¥[\d,]+\.\d\d)(?: 订单 (\S+)| 提现单 \d+)?$")
    rows = [entry.match(line) for line in lines[1:11]]
    assert all(rows), first
    kinds = [(m.group(1), m.group(2), m.group(3)) for m in rows if m]
    assert kinds[0][:2] == ("提现", "-¥12.00") and kinds[1] == ("退款冲回", "-¥3.00", "D1"), kinds
    assert kinds[2] == ("佣金", "+¥24.00", "D8") and kinds[9] == ("佣金", "+¥3.00", "D1"), kinds
    assert "OTHER1" not in first
    second = await h.say(me_user, "details 2")
    assert re.search(r" 调整 \+¥50\.00$", second, re.M) and "已是最后一页" in second, second
    assert "没有第 3 页" in await h.say(me_user, "明细 3")
    assert "OTHER1" in await h.say(other_user, "明细") and "D1" not in await h.say(other_user, "明细")
