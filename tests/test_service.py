"""Customer service (CONTRACT §4.7) through chat and HTTP, on both databases: 客服 opens a ticket
and promises a time, urgency (紧急, priority ranks), the admin's list, replies (through the
outbox, a template message outside the 48-hour window), closing, the sla job's reminders (once
per ticket), the /metrics gauges, and the limits against abuse."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select, update

from sandbox.platform import Platform, SimUser
from kit.app_keys import SESSIONMAKER, WRITER
from domain import tickets
from domain.formats import CHINA
from storage.models import OutboxMessage
from storage.models_engage import Ticket
from tests.conftest import Harness, make_config
from tests.money_support import seed
from tests.test_jobs import run_job
from tests.test_ops import get, sample

STAFF = ("oStaffWang", "oStaffLi")
OPENED = re.compile(r"工单 #(\d+)）")


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> AsyncIterator[Harness]:
    config = make_config(db_url, admin={"notify_openids": list(STAFF)}, service={"priority_ranks": ["gold"]})
    async with Harness(config, platform, wechat_server, reply_deadline=3.0) as harness:
        for openid in STAFF:
            staff = harness.platform.user(openid)
            staff.subscribed, staff.last_interaction = True, harness.platform.clock()
        yield harness


async def ask(h: Harness, user: SimUser, text: str) -> tuple[int, str]:
    reply = await h.say(user, text)
    m = OPENED.search(reply)
    assert m, reply
    return int(m.group(1)), reply


async def follower(h: Harness) -> SimUser:
    user = h.user()
    await h.follow(user)
    return user


def bot_texts(user: SimUser, needle: str) -> list[dict[str, Any]]:
    return [m for m in user.timeline if m.get("from") == "bot" and needle in str(m.get("content", m.get("data", "")))]


async def ticket(h: Harness, tid: int) -> dict[str, Any]:
    status, body = await h.api("GET", f"/tickets/{tid}")
    assert status == 200, body
    return body


async def set_due(h: Harness, tid: int, due: datetime) -> None:
    await h.app[WRITER].run(lambda s: s.execute(update(Ticket).where(Ticket.id == tid).values(due_at=due)))


# ---- chat ---------------------------------------------------------------------------------------------
async def test_a_question_opens_a_ticket_with_its_number_and_promised_time(h: Harness) -> None:
    d, user = await seed(h)
    before = datetime.now(UTC)
    tid, reply = await ask(h, user, "客服 佣金什么时候到账？")
    assert "4 小时内回复" in reply and "紧急" not in reply
    due = (before + timedelta(hours=4)).astimezone(CHINA)
    assert f"{due:%H:%M}" in reply or f"{due + timedelta(minutes=1):%H:%M}" in reply
    if due.date() != before.astimezone(CHINA).date():
        assert f"{due.month}月{due.day}日" in reply
    t = await ticket(h, tid)
    assert (t["distributor_code"], t["text"], t["urgent"], t["status"], t["overdue"]) == (
        d.code, "佣金什么时候到账？", False, "open", False)
    assert t["replies"] == []
    created, due_at = datetime.fromisoformat(t["created_at"]), datetime.fromisoformat(t["due_at"])
    assert due_at - created == timedelta(hours=4) and t["due_at"].endswith("+08:00")
    # English, and a follower who never registered may ask too.
    stranger = await follower(h)
    tid2, _ = await ask(h, stranger, "help how do I join?")
    t2 = await ticket(h, tid2)
    assert t2["distributor_code"] is None and t2["text"] == "how do I join?" and tid2 > tid


async def test_bare_客服_shows_help_then_takes_the_next_text(h: Harness) -> None:
    _, user = await seed(h)
    reply = await h.say(user, "客服")
    assert "分销员助手可以帮您" in reply and "请直接发送您的问题" in reply and "4 小时内回复" in reply
    assert "【客服 问题】" in reply
    tid, reply = await ask(h, user, "我的海报打不开")
    assert (await ticket(h, tid))["text"] == "我的海报打不开"
    await h.say(user, "help")
    tid, _ = await ask(h, user, "客服 还有一个问题")  # the command word again: not part of the question
    assert (await ticket(h, tid))["text"] == "还有一个问题"
    # The conversation ended with the ticket: the next text is no question.
    assert "分销员助手可以帮您" in await h.say(user, "你好")
    _, body = await h.api("GET", "/tickets")
    assert body["total"] == 2

    # The menu's HELP asks too; 取消 leaves; 帮助 stays the plain help text.
    clicked = await h.click(user, "HELP")
    assert clicked is not None and "请直接发送您的问题" in clicked["content"]
    assert "已取消" in await h.say(user, "取消")
    assert "分销员助手可以帮您" in await h.say(user, "随便说说")
    plain = await h.say(user, "帮助")
    assert "分销员助手可以帮您" in plain and "请直接发送您的问题" not in plain
    # Another bare command word leaves the conversation without opening a ticket.
    assert "请直接发送您的问题" in await h.say(user, "help")
    assert "收益" in await h.say(user, "收益")
    assert "分销员助手可以帮您" in await h.say(user, "你好")
    _, body = await h.api("GET", "/tickets")
    assert body["total"] == 2


async def test_紧急_and_priority_ranks_make_a_ticket_urgent(h: Harness) -> None:
    _, junior = await seed(h)
    tid, reply = await ask(h, junior, "客服 紧急：客户付款失败")
    assert "30 分钟内回复（紧急）" in reply
    t = await ticket(h, tid)
    assert t["urgent"] is True
    assert datetime.fromisoformat(t["due_at"]) - datetime.fromisoformat(t["created_at"]) == timedelta(minutes=30)

    _, gold = await seed(h, rank="gold", name="李四")
    assert "30 分钟内回复" in await h.say(gold, "客服")  # the promise of their rank
    tid, reply = await ask(h, gold, "想了解新品政策")
    assert "30 分钟内回复（紧急）" in reply and (await ticket(h, tid))["urgent"] is True

    # An exited distributor may still ask; their ticket keeps their code.
    exited, user = await seed(h, name="王五")
    await h.say(user, "退出")
    await h.say(user, "确认退出")
    assert "客服" in await h.say(user, "收益")
    tid, _ = await ask(h, user, "客服 提现什么时候到")
    assert (await ticket(h, tid))["distributor_code"] == exited.code


async def test_limits_too_long_and_too_many_open(h: Harness) -> None:
    _, user = await seed(h)
    reply = await h.say(user, "客服 " + "问" * (tickets.MAX_TEXT + 1))
    assert f"最多 {tickets.MAX_TEXT} 字" in reply and "工单" not in reply
    # The conversation waits for a shorter question.
    tid, _ = await ask(h, user, "问" * tickets.MAX_TEXT)
    assert len((await ticket(h, tid))["text"]) == tickets.MAX_TEXT
    for i in range(tickets.MAX_OPEN - 1):
        await ask(h, user, f"客服 问题{i}")
    reply = await h.say(user, "客服 再问一个")
    assert f"已有 {tickets.MAX_OPEN} 个问题在等待回复" in reply and "工单 #" not in reply
    _, body = await h.api("GET", "/tickets?status=open")
    assert body["total"] == tickets.MAX_OPEN
    # An answer frees a place.
    await h.api("POST", f"/tickets/{tid}/reply", json={"text": "已处理"})
    await ask(h, user, "客服 再问一个")


# ---- the admin's side -----------------------------------------------------------------------------
async def test_list_reply_close(h: Harness) -> None:
    _, user = await seed(h)
    normal, _ = await ask(h, user, "客服 普通问题")
    urgent, _ = await ask(h, user, "客服 紧急问题")
    other = await follower(h)
    later, _ = await ask(h, other, "客服 另一个普通问题")
    status, body = await h.api("GET", "/tickets?status=open")
    assert status == 200 and body["total"] == 3
    assert [t["id"] for t in body["tickets"]] == [urgent, normal, later]  # urgent first, then due
    assert set(body["tickets"][0]) >= {"id", "distributor_code", "text", "urgent", "status", "created_at",
                                       "due_at", "overdue"}
    status, page = await h.api("GET", "/tickets?status=open&limit=1&offset=1")
    assert [t["id"] for t in page["tickets"]] == [normal] and page["total"] == 3

    status, t = await h.api("POST", f"/tickets/{normal}/reply", json={"text": "  佣金在订单完成 7 天后到账。 "})
    assert status == 200 and t["status"] == "answered" and t["answered_at"]
    assert [(r["text"], r["actor"]) for r in t["replies"]] == [("佣金在订单完成 7 天后到账。", "admin")]
    item = await h.platform.wait_for(user.openid, lambda m: "佣金在订单完成 7 天后到账" in str(m.get("content")))
    assert item["via"] == "custom" and f"工单 #{normal}" in item["content"]
    status, t = await h.api("POST", f"/tickets/{normal}/reply", json={"text": "补充：节假日顺延。"})
    assert status == 200 and len(t["replies"]) == 2 and t["status"] == "answered"

    status, body = await h.api("GET", "/tickets?status=answered")
    assert [x["id"] for x in body["tickets"]] == [normal]
    _, body = await h.api("GET", "/tickets")
    assert body["total"] == 3 and [x["id"] for x in body["tickets"]] == [later, urgent, normal]  # newest first

    status, t = await h.api("POST", f"/tickets/{normal}/close")
    assert status == 200 and t["status"] == "closed" and t["closed_at"]
    status, again = await h.api("POST", f"/tickets/{normal}/close")
    assert status == 200 and again["closed_at"] == t["closed_at"]  # closing twice changes nothing
    status, err = await h.api("POST", f"/tickets/{normal}/reply", json={"text": "还有一句"})
    assert status == 409 and err["error"] == "ticket_closed"
    assert len((await ticket(h, normal))["replies"]) == 2
    status, body = await h.api("GET", "/tickets?status=closed")
    assert [x["id"] for x in body["tickets"]] == [normal]

    for method, path, kw in (("GET", "/tickets/999999", {}), ("POST", "/tickets/999999/reply", {"json": {"text": "x"}}),
                             ("POST", "/tickets/999999/close", {}), ("GET", "/tickets/abc", {})):
        status, err = await h.api(method, path, **kw)
        assert status == 404 and err["error"] == "not_found", (path, err)
    for body, code in (({}, 400), ({"text": 5}, 400), ({"text": "   "}, 422), ({"text": "x" * 601}, 422)):
        status, err = await h.api("POST", f"/tickets/{urgent}/reply", json=body)
        assert status == code, (body, err)
    status, err = await h.api("GET", "/tickets?status=pending")
    assert status == 400 and err["error"] == "bad_query"
    status, _ = await h.api("GET", "/tickets", token="wrong")
    assert status == 401


async def test_a_reply_after_48_hours_of_silence_goes_as_a_template_message(h: Harness) -> None:
    _, user = await seed(h)
    tid, _ = await ask(h, user, "客服 上周的订单怎么没有佣金")
    user.last_interaction = h.platform.clock() - 49 * 3600
    status, _ = await h.api("POST", f"/tickets/{tid}/reply", json={"text": "已为您补发佣金。\n请查看收益。"})
    assert status == 200
    item = await h.platform.wait_for(user.openid, lambda m: m.get("via") == "template")
    assert item["template_id"] == "tmpl-notice" and f"工单 #{tid}" in str(item["data"])
    assert "已为您补发佣金" in str(item["data"])
    await h.settled()  # nothing else goes out
    assert not [m for m in user.timeline if m.get("via") == "custom" and "补发" in str(m)]


# ---- the sla job ----------------------------------------------------------------------------------
async def reminders(h: Harness) -> list[str]:
    async with h.app[SESSIONMAKER]() as session:
        return sorted(await session.scalars(select(OutboxMessage.key).where(OutboxMessage.key.like("sla:%"))))


async def test_overdue_tickets_are_reminded_once_as_the_clock_moves(h: Harness) -> None:
    _, user = await seed(h)
    urgent, _ = await ask(h, user, "客服 紧急：无法登录后台")
    normal, _ = await ask(h, user, "客服 想改手机号")
    answered, _ = await ask(h, user, "客服 这个会被回复")
    await h.api("POST", f"/tickets/{answered}/reply", json={"text": "好的"})
    start = h.clock.now()

    async def remind_at(later: timedelta) -> int:
        # Time jumps only once the last reminders are out: a claim in flight would look hours old
        # (its lease long over) to a worker that looked again, and go out twice.
        await h.settled()
        h.clock.set(start + later)
        return await run_job(h, "sla")

    assert await remind_at(timedelta(minutes=10)) == 0  # nothing due yet
    assert (await ticket(h, urgent))["overdue"] is False
    assert await remind_at(timedelta(minutes=45)) == 1  # the urgent one is 15 minutes late
    assert await remind_at(timedelta(minutes=50)) == 0  # reminded once
    assert await reminders(h) == sorted(f"sla:{urgent}:{o}" for o in STAFF)
    item = await h.platform.wait_for(STAFF[0], lambda m: f"工单 #{urgent}" in str(m))
    assert "紧急" in item["content"] and "已超时 1" in item["content"] and "无法登录后台" in item["content"]
    assert (await ticket(h, urgent))["overdue"] is True

    assert await remind_at(timedelta(hours=5)) == 1  # the normal one; answered ones never
    assert await remind_at(timedelta(hours=6)) == 0
    assert await reminders(h) == sorted(f"sla:{tid}:{o}" for tid in (urgent, normal) for o in STAFF)
    for openid in STAFF:
        item = await h.platform.wait_for(openid, lambda m: f"工单 #{normal}" in str(m))
        assert "普通" in item["content"] and "想改手机号" in item["content"]
    await h.settled()  # every reminder queued is out: two each, no more
    for openid in STAFF:
        assert len(bot_texts(h.platform.users[openid], "客服工单超时")) == 2


async def test_the_sla_job_reminds_once_across_runs(h: Harness) -> None:
    _, user = await seed(h)
    tid, _ = await ask(h, user, "客服 提现一直没到账")
    assert (await ticket(h, tid))["overdue"] is False
    h.clock.move(hours=4, minutes=7)  # 7 minutes past the 4 hours promised
    t = await ticket(h, tid)
    assert t["overdue"] is True
    assert [await run_job(h, "sla") for _ in range(2)] == [1, 0]
    for openid in STAFF:
        await h.platform.wait_for(openid, lambda m: f"工单 #{tid}" in str(m))
    assert await reminders(h) == sorted(f"sla:{tid}:{o}" for o in STAFF)
    for openid in STAFF:
        assert len(bot_texts(h.platform.users[openid], f"工单 #{tid}")) == 1
    async with h.app[SESSIONMAKER]() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket).where(
            Ticket.reminded_at.is_not(None))) == 1
    status, body = await h.api("GET", "/tickets?status=open")
    assert [x["overdue"] for x in body["tickets"]] == [True]


# ---- metrics ----------------------------------------------------------------------------------------
async def test_metrics_count_open_and_overdue_tickets(h: Harness) -> None:
    _, text = (await get(h, "/metrics"))[1:]
    assert sample(text, "distbot_tickets_open") == 0 and sample(text, "distbot_tickets_overdue") == 0
    _, user = await seed(h)
    ids = [(await ask(h, user, f"客服 问题{i}"))[0] for i in range(3)]
    await set_due(h, ids[0], datetime.now(UTC) - timedelta(minutes=1))
    await set_due(h, ids[1], datetime.now(UTC) - timedelta(minutes=1))
    await h.api("POST", f"/tickets/{ids[1]}/reply", json={"text": "已回复"})  # answered: neither
    _, _, text = await get(h, "/metrics")
    assert sample(text, "distbot_tickets_open") == 2 and sample(text, "distbot_tickets_overdue") == 1
    await h.api("POST", f"/tickets/{ids[0]}/close")
    _, _, text = await get(h, "/metrics")
    assert sample(text, "distbot_tickets_open") == 1 and sample(text, "distbot_tickets_overdue") == 0


# ---- words --------------------------------------------------------------------------------------------
def test_spans_and_clock_times() -> None:
    assert [tickets.span(timedelta(minutes=m)) for m in (0, 30, 60, 240, 65, 1500, 2 * 24 * 60)] == [
        "1 分钟", "30 分钟", "1 小时", "4 小时", "1 小时 5 分钟", "1 天 1 小时", "2 天"]
    now = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # 22:00 in China
    assert tickets.clock(now + timedelta(minutes=30), now) == "22:30"
    assert tickets.clock(now + timedelta(hours=4), now) == "11月26日 02:00"


async def test_a_command_leaves_the_question_a_ticket_waits_for(harness: Harness) -> None:
    """Asked for their question, a distributor who types a command with its argument gets the
    command (提现 150 is a withdrawal, not a ticket); 客服 <question> still opens one."""
    h = harness
    user = h.user()
    await h.register(user, "13800138077", "赵六")
    assert "请直接发送您的问题" in await h.say(user, "客服")
    answer = await h.say(user, "提现 150")
    assert "工单" not in answer and "提现" in answer, answer
    status, body = await h.api("GET", "/tickets")
    assert status == 200 and body["tickets"] == [], body
    assert "请直接发送您的问题" in await h.say(user, "客服")
    assert "工单" in await h.say(user, "客服 我的佣金什么时候到账")
    status, body = await h.api("GET", "/tickets")
    assert [t["text"] for t in body["tickets"]] == ["我的佣金什么时候到账"], body
