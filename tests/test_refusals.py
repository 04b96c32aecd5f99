"""One refusal type (domain.refusals.Refusal), translated once per surface: every code has its
status and a Chinese sentence, and a refusal raised deep beneath a route, a form or a chat
command comes out as /api's JSON, the console's flash and chat's reply, its unit rolled back."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kit.chat import Ctx, Incoming
from kit.feature import Feature
from kit.console import returns_to
from app.features import FEATURES
from sandbox.platform import Platform
from kit.app_keys import READER, WRITER
from domain.formats import AmountError
from domain.refusals import CODES, FAMILIES, Refusal, kind_of
from storage.tables import PROCESSED, STATES
from tests.conftest import REPLY_DEADLINE_SECONDS, Harness, make_config
from tests.console_support import csrf_of, post_sign_in

ROOT = Path(__file__).resolve().parent.parent
CHINESE = re.compile(r"[\u4e00-\u9fff]")

# ---- a feature whose refusals come from two calls down, after a write ---------------------------
probe = Feature("probe")
SENTENCE = "申请 7 已经处理过（approved）。"


def _rule(number: int) -> None:
    raise Refusal("already_decided", f"Probe {number} was already approved.", sentence=SENTENCE,
                  details={"status": "approved"})


def _write_then_refuse(session: Session, openid: str) -> None:
    """A unit of work that writes, then meets a rule that refuses: nothing of it may stay."""
    session.execute(STATES.insert().values(openid=openid, state="probe", data={},
                                           expires_at=datetime.now(UTC) + timedelta(hours=1)))
    _rule(7)


@probe.command("拒绝测试")
def on_probe(msg: Incoming, ctx: Ctx) -> None:
    _write_then_refuse(ctx.session, ctx.openid)


@probe.api.post("/probe", summary="Refuses, deep down", errors=(409,))
async def refuse_by_api(request: web.Request) -> web.Response:
    await request.config_dict[WRITER].run(lambda s: _write_then_refuse(s, "probe-api"))
    raise AssertionError("not reached")


@probe.console.post("/probe")
async def refuse_by_form(request: web.Request) -> web.Response:
    returns_to(request, "/withdrawals?status=pending")
    await request.config_dict[WRITER].run(lambda s: _write_then_refuse(s, "probe-console"))
    raise AssertionError("not reached")


@pytest.fixture
async def h(db_url: str, platform: Platform, wechat_server: TestServer) -> Any:
    config = make_config(db_url, distribution={"min_withdraw_fen": 1000})
    async with Harness(config, platform, wechat_server, reply_deadline=REPLY_DEADLINE_SECONDS,
                       features=(*FEATURES, probe)) as harness:
        yield harness


async def states(h: Harness) -> int:
    return await h.app[READER].run(lambda s: s.scalar(select(func.count()).select_from(STATES)))


# ---- the vocabulary ------------------------------------------------------------------------------
def test_every_code_has_a_status_and_a_chinese_sentence() -> None:
    for code, (status, sentence) in {**CODES, **FAMILIES}.items():
        assert 400 <= status < 500, code
        assert CHINESE.search(sentence) and sentence.endswith("。"), (code, sentence)
    with pytest.raises(KeyError, match="declare it"):
        Refusal("no_such_code", "?")
    refusal = AmountError("金额格式不对。")
    assert (refusal.code, refusal.status, str(refusal)) == ("invalid_amount", 422, "金额格式不对。")


def _raised_codes() -> list[str]:
    """The code of every Refusal(...) written in the product: a literal, or an f-string's prefix."""
    codes = []
    for path in [*ROOT.glob("app/*.py"), *ROOT.glob("kit/*.py"), *ROOT.glob("wechat/*.py"), *ROOT.glob("handlers/*.py"), *ROOT.glob("domain/*.py"),
                 *ROOT.glob("content/*.py")]:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Refusal" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    codes.append(first.value)
                elif isinstance(first, ast.JoinedStr) and isinstance(first.values[0], ast.Constant):
                    codes.append(first.values[0].value + "x")
    return codes


def test_every_code_raised_is_declared() -> None:
    codes = _raised_codes()
    assert len(codes) > 40
    for code in codes:
        kind_of(code)  # KeyError names an undeclared one


# ---- once per surface ----------------------------------------------------------------------------
async def test_api_answers_a_refusal_as_its_json(h: Harness) -> None:
    status, body = await h.api("POST", "/probe")
    assert status == 409, body
    assert body == {"error": "already_decided", "message": "Probe 7 was already approved.",
                    "details": {"status": "approved"}}
    status, body = await h.api("POST", "/withdrawals/999999/approve")  # domain.withdrawal_rules
    assert (status, body["error"], body["message"]) == (404, "not_found", "No withdrawal 999999.")
    assert await states(h) == 0


async def test_console_sends_a_refused_form_back_with_its_sentence(h: Harness) -> None:
    assert h.http is not None
    cookie = (await post_sign_in(h.http, h.url)).cookie
    assert cookie
    cookies = {"distbot_admin": cookie}
    async with h.http.get(h.url + "/admin/withdrawals", cookies=cookies) as resp:
        csrf = csrf_of(await resp.text())

    async def post(path: str, **form: str) -> tuple[str, str]:
        async with h.http.post(h.url + "/admin" + path, data={"csrf_token": csrf, **form}, cookies=cookies,
                               allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            return resp.headers["Location"], unquote(resp.cookies["distbot_flash"].value)

    assert await post("/probe") == ("/admin/withdrawals?status=pending", "!" + SENTENCE)
    # Without returns_to: the section's page (a real refusal, from domain.withdrawal_rules).
    assert await post("/withdrawals/999999", decision="approve") == ("/admin/withdrawals",
                                                                     "!没有申请号为 999999 的提现。")
    assert await states(h) == 0


async def test_chat_answers_a_refusal_with_its_sentence(h: Harness) -> None:
    user = h.user()
    assert await h.say(user, "拒绝测试") == SENTENCE
    assert await states(h) == 0  # the update's SAVEPOINT rolled back what the handler wrote
    assert "注册" in await h.say(user, "提现 5")  # the guard first; the rules' refusals below


async def test_a_refused_update_keeps_its_reply_for_wechats_retry(h: Harness) -> None:
    """The refusal is the update's stored reply: a retry (same MsgId) is answered from the store."""
    assert h.http is not None
    user = h.user()
    fields = h.platform.message_fields(user, "text", content="拒绝测试")
    replies = []
    for _ in range(2):
        query, body = h.platform.envelope(fields)
        async with h.http.post(h.url + "/wechat", params=query, data=body) as resp:
            replies.append(h.platform.open_reply(await resp.read()))
    assert [r["content"] for r in replies if r is not None] == [SENTENCE, SENTENCE]
    key = f"m:{fields['MsgId']}:{user.openid}"
    stored = await h.app[READER].run(lambda s: s.scalar(select(PROCESSED.c.reply).where(
        PROCESSED.c.key == key)))
    assert stored is not None and SENTENCE in str(stored)


async def test_chat_meets_the_withdrawal_limits_in_the_domain(h: Harness) -> None:
    user = h.user()
    await h.register(user, "13800000002", "王五")
    assert "单笔提现至少 ¥10.00，您申请的是 ¥5.00" in await h.say(user, "提现 5")
    assert "可提现余额不足" in await h.say(user, "提现 10")
    assert "金额格式不对" in await h.say(user, "提现 abc")


@pytest.mark.parametrize("noun", ["contest", "campaign"])
def test_a_body_family_code_takes_its_family_status(noun: str) -> None:
    assert Refusal(f"invalid_{noun}").status == 422
    assert Refusal(f"malformed_{noun}").status == 400
