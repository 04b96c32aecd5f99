"""The 注册 conversation through chat (real HTTP, the sandbox WeChat platform), QR scenes, and the
rules around it: invite codes, phone numbers, names, 取消, code shape, inviter fixed for good."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from sandbox.platform import SimUser
from kit.app_keys import SESSIONMAKER
from kit.menu import MenuKey
from handlers.registration import CODE_ALPHABET, new_code
from storage.db import create_engine, create_sessionmaker
from storage.migrate import upgrade
from storage.models import ConversationState, Distributor
from tests.conftest import ON_SQLITE, Harness

CODE = re.compile(r"^[A-HJ-NP-Z2-9]{6}$")  # no 0/O/1/I


async def distributors(h: Harness) -> list[Distributor]:
    async with h.app[SESSIONMAKER]() as session:
        return list(await session.scalars(select(Distributor).order_by(Distributor.id)))


async def state_of(h: Harness, user: SimUser) -> str | None:
    async with h.app[SESSIONMAKER]() as session:
        s = await session.get(ConversationState, user.openid)
        return s.state if s else None


async def inviter_code(h: Harness, code: str) -> Any:
    status, body = await h.api("GET", f"/distributors/{code}")
    assert status == 200, body
    return body["inviter_code"]


def code_in(reply: str) -> str:
    m = re.search(r"推广码：([A-Z0-9]{6})", reply)
    assert m, reply
    return m.group(1)


# ---- invite codes and scenes ------------------------------------------------------------------
@pytest.mark.parametrize("template", ["注册 {code}", "注册{code}", "register {lower}", "/register {code}",
                                      "  注册   {code}  "])
async def test_register_with_the_invite_code_typed_after_it(harness: Harness, template: str) -> None:
    alice, bob = harness.user(), harness.user()
    code_a = await harness.register(alice, "13800138000", "张三")
    await harness.follow(bob)
    first = await harness.say(bob, template.format(code=code_a, lower=code_a.lower()))
    assert "张*" in first and code_a in first and "手机号" in first
    await harness.say(bob, "13900139000")
    done = await harness.say(bob, "李四")
    assert "注册成功" in done
    assert await inviter_code(harness, code_in(done)) == code_a


async def test_register_with_the_scene_of_a_qr_follow(harness: Harness) -> None:
    alice, bob = harness.user(), harness.user()
    code_a = await harness.register(alice, "13800138000", "张三")
    code_b = await harness.register(bob, "13900139000", "李四", scene=code_a)
    assert await inviter_code(harness, code_b) == code_a


async def test_register_without_any_code_has_no_inviter(harness: Harness) -> None:
    code = await harness.register(harness.user(), "13800138000", "张三")
    assert await inviter_code(harness, code) is None


@ON_SQLITE
@pytest.mark.parametrize("typed", ["ABCDEF", "K7QF2M", "abc!", "0O1I00", "这不是邀请码"])
async def test_an_invalid_invite_code_is_refused_and_nothing_starts(harness: Harness, typed: str) -> None:
    user = harness.user()
    await harness.follow(user)
    reply = await harness.say(user, f"注册 {typed}")
    assert "不存在" in reply and typed[:20] in reply
    assert await state_of(harness, user) is None
    # The phone number that follows is not taken as a registration step.
    assert "分销员助手" in await harness.say(user, "13800138000")
    assert await distributors(harness) == []


@ON_SQLITE
async def test_an_exited_inviters_code_is_refused(harness: Harness) -> None:
    alice, bob = harness.user(), harness.user()
    code_a = await harness.register(alice, "13800138000", "张三")
    async with harness.app[SESSIONMAKER]() as session, session.begin():
        d = await session.scalar(select(Distributor).where(Distributor.code == code_a))
        d.status = "exited"
    await harness.follow(bob)
    assert "不存在" in await harness.say(bob, f"注册 {code_a}")


@ON_SQLITE
async def test_the_latest_scene_before_registration_wins(harness: Harness) -> None:
    a, c, bob = harness.user(), harness.user(), harness.user()
    code_a = await harness.register(a, "13800138000", "张三")
    code_c = await harness.register(c, "13800138001", "赵六")
    await harness.follow(bob, scene=code_a)
    await harness.send(bob, "scan", scene=code_c)
    await harness.say(bob, "注册")
    await harness.say(bob, "13900139000")
    code_b = code_in(await harness.say(bob, "李四"))
    assert await inviter_code(harness, code_b) == code_c


@ON_SQLITE
async def test_inviter_is_fixed_at_registration(harness: Harness) -> None:
    a, c, bob = harness.user(), harness.user(), harness.user()
    code_a = await harness.register(a, "13800138000", "张三")
    code_c = await harness.register(c, "13800138001", "赵六")
    code_b = await harness.register(bob, "13900139000", "李四", scene=code_a)
    reply = await harness.send(bob, "scan", scene=code_c)
    assert reply is not None and code_b in reply["content"]
    await harness.send(bob, "unsubscribe")
    await harness.follow(bob, scene=code_c)
    assert "已经是分销员" in await harness.say(bob, f"注册 {code_c}")
    assert await inviter_code(harness, code_b) == code_a


@ON_SQLITE
async def test_nobody_can_invite_themselves(harness: Harness) -> None:
    alice = harness.user()
    code_a = await harness.register(alice, "13800138000", "张三")
    assert "已经是分销员" in await harness.say(alice, f"注册 {code_a}")
    await harness.send(alice, "scan", scene=code_a)
    assert await inviter_code(harness, code_a) is None
    [d] = await distributors(harness)
    assert d.inviter_id is None


@ON_SQLITE
async def test_registering_again_repeats_the_code(harness: Harness) -> None:
    alice = harness.user()
    code_a = await harness.register(alice, "13800138000", "张三")
    reply = await harness.say(alice, "注册")
    assert "已经是分销员" in reply and code_a in reply
    assert await state_of(harness, alice) is None
    assert len(await distributors(harness)) == 1


@ON_SQLITE
async def test_menu_click_register_starts_the_conversation(harness: Harness) -> None:
    user = harness.user()
    await harness.follow(user)
    reply = await harness.click(user, "REGISTER")
    assert reply is not None and "手机号" in reply["content"]
    await harness.say(user, "13800138000")
    assert "注册成功" in await harness.say(user, "张三")


# ---- phone and name -----------------------------------------------------------------------------
@ON_SQLITE
@pytest.mark.parametrize("phone", ["12800138000", "1380013800", "138001380001", "23800138000", "abc",
                                   "1380013800a", "١٣٨٠٠١٣٨٠٠٠", "13800138000\n1", ""])
async def test_a_malformed_phone_is_asked_again(harness: Harness, phone: str) -> None:
    user = harness.user()
    await harness.follow(user)
    await harness.say(user, "注册")
    reply = await harness.say(user, phone or " ")
    assert "手机号格式不对" in reply
    assert await state_of(harness, user) == "register.phone"
    await harness.say(user, "13800138000")
    assert "注册成功" in await harness.say(user, "张三")
    [d] = await distributors(harness)
    assert d.phone == "13800138000"


@ON_SQLITE
@pytest.mark.parametrize("spelling", ["138 0013 8000", "138-0013-8000", "+86 13800138000", "+8613800138000",
                                      "１３８００１３８０００"])
async def test_phone_spellings_are_stored_as_eleven_ascii_digits(harness: Harness, spelling: str) -> None:
    user = harness.user()
    await harness.follow(user)
    await harness.say(user, "注册")
    await harness.say(user, spelling)
    assert "注册成功" in await harness.say(user, "张三")
    [d] = await distributors(harness)
    assert d.phone == "13800138000"


@pytest.mark.parametrize("spelling", ["13800138000", "138 0013 8000", "１３８００１３８０００", "13８00138000"])
async def test_a_phone_number_registers_only_once(harness: Harness, spelling: str) -> None:
    alice, bob = harness.user(), harness.user()
    await harness.register(alice, "13800138000", "张三")
    await harness.follow(bob)
    await harness.say(bob, "注册")
    reply = await harness.say(bob, spelling)
    assert "这个手机号已经注册过" in reply
    assert await state_of(harness, bob) == "register.phone"
    await harness.say(bob, "13900139000")
    assert "注册成功" in await harness.say(bob, "李四")
    assert [d.phone for d in await distributors(harness)] == ["13800138000", "13900139000"]


async def test_two_followers_racing_for_one_phone(harness: Harness) -> None:
    alice, bob = harness.user(), harness.user()
    for u in (alice, bob):
        await harness.follow(u)
        await harness.say(u, "注册")
        await harness.say(u, "13800138000")
    assert "注册成功" in await harness.say(alice, "张三")
    reply = await harness.say(bob, "李四")
    assert "已被注册" in reply
    assert await state_of(harness, bob) is None
    assert len(await distributors(harness)) == 1


@pytest.mark.parametrize("name,ok", [("张", False), ("张三", True), ("欧阳娜娜", True), ("张" * 20, True),
                                     ("张" * 21, False), ("张3", False), ("Li Lei", True), ("A", False),
                                     ("张三<script>", False)])
@ON_SQLITE
async def test_real_name_is_two_to_twenty_characters(harness: Harness, name: str, ok: bool) -> None:
    user = harness.user()
    await harness.follow(user)
    await harness.say(user, "注册")
    await harness.say(user, "13800138000")
    reply = await harness.say(user, name)
    if ok:
        assert "注册成功" in reply
        [d] = await distributors(harness)
        assert d.name == name
    else:
        assert "姓名需为" in reply
        assert await state_of(harness, user) == "register.name"
        assert await distributors(harness) == []


@ON_SQLITE
async def test_name_spaces_are_collapsed(harness: Harness) -> None:
    user = harness.user()
    await harness.follow(user)
    await harness.say(user, "注册")
    await harness.say(user, "13800138000")
    assert "注册成功" in await harness.say(user, "  Li    Lei ")
    [d] = await distributors(harness)
    assert d.name == "Li Lei"


@ON_SQLITE
@pytest.mark.parametrize("name", ["Top Lee", "Rank Li", "Help Wang"])
async def test_an_english_name_that_starts_with_a_command_word_is_a_name(harness: Harness, name: str) -> None:
    user = harness.user()
    await harness.follow(user)
    await harness.say(user, "注册")
    await harness.say(user, "13800138000")
    assert "注册成功" in await harness.say(user, name)
    [d] = await distributors(harness)
    assert d.name == name


@ON_SQLITE
async def test_a_bare_command_word_leaves_the_conversation(harness: Harness) -> None:
    user = harness.user()
    await harness.follow(user)
    await harness.say(user, "注册")
    assert "分销员助手可以帮您" in await harness.say(user, "帮助")
    assert await state_of(harness, user) is None


# ---- 取消 -----------------------------------------------------------------------------------------
@ON_SQLITE
@pytest.mark.parametrize("word", ["取消", "cancel", " 取消 "])
@pytest.mark.parametrize("steps", [["注册"], ["注册", "13800138000"], ["注册", "12"]],
                         ids=["at-phone", "at-name", "after-a-bad-phone"])
async def test_cancel_at_each_step(harness: Harness, steps: list[str], word: str) -> None:
    user = harness.user()
    await harness.follow(user)
    for s in steps:
        await harness.say(user, s)
    assert await state_of(harness, user) is not None
    assert "已取消" in await harness.say(user, word)
    assert await state_of(harness, user) is None
    # What would have been the next step is now just text.
    assert "分销员助手" in await harness.say(user, "张三")
    assert await distributors(harness) == []


@ON_SQLITE
async def test_cancel_outside_a_conversation_gets_help(harness: Harness) -> None:
    user = harness.user()
    await harness.follow(user)
    assert "分销员助手" in await harness.say(user, "取消")


# ---- codes ----------------------------------------------------------------------------------------
def test_new_codes_have_the_six_character_shape() -> None:
    assert not set("0O1I") & set(CODE_ALPHABET)
    for _ in range(3000):
        assert CODE.match(new_code())


async def test_registered_codes_have_the_shape_and_differ(harness: Harness) -> None:
    codes = [await harness.register(harness.user(), f"1380013800{i}", "张三") for i in range(5)]
    assert all(CODE.match(c) for c in codes)
    assert len(set(codes)) == 5


# ---- everything else -----------------------------------------------------------------------------
@ON_SQLITE
@pytest.mark.parametrize("text", ["你好", "13800138000", "???", "hello"])
async def test_unknown_text_gets_the_help_text(harness: Harness, text: str) -> None:
    user = harness.user()
    await harness.follow(user)
    reply = await harness.say(user, text)
    assert "分销员助手可以帮您" in reply and "注册" in reply


@ON_SQLITE
async def test_follow_without_scene_is_welcomed(harness: Harness) -> None:
    assert "欢迎关注" in await harness.follow(harness.user())


@ON_SQLITE
async def test_unfollow_deletes_nothing(harness: Harness) -> None:
    alice = harness.user()
    code = await harness.register(alice, "13800138000", "张三")
    assert await harness.send(alice, "unsubscribe") is None
    status, body = await harness.api("GET", f"/distributors/{code}")
    assert status == 200 and body["status"] == "active"


@pytest.mark.parametrize("zh,en,key", [("等级", "rank", MenuKey.RANK), ("排行", "top", MenuKey.TOP)],
                         ids=["rank", "top"])
@ON_SQLITE
async def test_distributor_commands_ask_a_follower_to_register(harness: Harness, zh: str, en: str,
                                                               key: Any) -> None:
    """Nothing says "coming" any more: a follower who has not registered is asked to."""
    user = harness.user()
    await harness.follow(user)
    for text in (zh, en):
        reply = await harness.say(user, text)
        assert "注册" in reply and "即将上线" not in reply, (text, reply)
    clicked = await harness.click(user, key.value)
    assert clicked is not None and "注册" in clicked["content"]


# ---- phone numbers stay out of logs and chat -------------------------------------------------------
@ON_SQLITE
async def test_phone_numbers_appear_in_no_log_and_no_chat_reply(harness: Harness,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    # INFO is what `distbot serve` logs at (third-party DEBUG tracing, aiosqlite's included, echoes SQL).
    caplog.set_level(logging.INFO)
    alice, bob = harness.user(), harness.user()
    code = await harness.register(alice, "13812345678", "张三")
    await harness.follow(bob, scene=code)
    await harness.say(bob, "注册")
    await harness.say(bob, "13812345678")  # refused: taken
    await harness.say(bob, "13987654321")
    await harness.say(bob, "李四")
    assert len(await distributors(harness)) == 2
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for phone in ("13812345678", "13987654321"):
        assert phone not in logged
        for u in (alice, bob):
            assert not any(phone in str(item.get("content", "")) for item in u.timeline if item["from"] == "bot")


async def test_database_errors_do_not_carry_phone_numbers(db_url: str) -> None:
    # Exceptions get logged; SQLAlchemy puts the statement's parameters into their text.
    from datetime import UTC, datetime
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        sessions = create_sessionmaker(engine)
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            session.add(Distributor(code="AAAAAA", openid="o1", phone="13812345678", name="张三", rank="junior",
                                    status="active", registered_at=now))
        with pytest.raises(IntegrityError) as err:
            async with sessions() as session, session.begin():
                session.add(Distributor(code="BBBBBB", openid="o2", phone="13812345678", name="李四",
                                        rank="junior", status="active", registered_at=now))
        assert "13812345678" not in str(err.value)
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Distributor)) == 1
    finally:
        await engine.dispose()
