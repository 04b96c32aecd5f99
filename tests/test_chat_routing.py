"""Chat routing without a database or a server: split_command, ChatRouter over features, and
handlers called with a fake ctx (the first of the three test layers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import pytest
import wechatpy
import xmltodict
from sqlalchemy import Delete

from kit.chat import CANCEL_WORDS, ChatRouter, Ctx, Incoming, split_command
from kit.feature import Feature, FeatureConflict, check
from kit.menu import MENU, MenuKey, menu_payload
from wechat.passive_xml import passive_reply_xml as render
from domain.messages import Article, Image, News, Text, from_json, to_json
from domain.quota import GrantKind, granted_by
from handlers import help_text as help_handlers
from handlers import registration
from storage.models import ConversationState, Distributor, Follower
from tests.conftest import make_config

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
AT = NOW.timestamp()  # a passive reply's CreateTime


class FakeSession:
    """Records adds and the tables rows are deleted from; any query is a test failure unless
    answers were queued."""

    def __init__(self, *answers: Any) -> None:
        self.added: list[Any] = []
        self.deleted: list[str] = []
        self.answers = list(answers)
        self.follower: Follower | None = None

    def add(self, obj: Any) -> None:
        self.added.append(obj)

    def flush(self) -> None:
        pass

    def __contains__(self, obj: Any) -> bool:
        return obj in self.added

    def expunge(self, obj: Any) -> None:
        self.added.remove(obj)

    def execute(self, stmt: Any) -> None:
        if not isinstance(stmt, Delete):
            raise AssertionError(f"unexpected statement: {stmt}")
        self.deleted.append(stmt.table.name)

    def get(self, model: Any, key: Any) -> Any:
        if model is Follower and key == self.follower.openid:
            return self.follower
        raise AssertionError(f"unexpected get: {model} {key}")

    def scalar(self, stmt: Any) -> Any:
        if not self.answers:
            raise AssertionError(f"unexpected query: {stmt}")
        return self.answers.pop(0)


def make_ctx(*, session: FakeSession | None = None, distributor: Distributor | None = None,
             state: ConversationState | None = None, args: str = "", scene: str | None = None) -> Ctx:
    session = session or FakeSession()
    session.follower = Follower(openid="oUser", subscribed=True, created_at=NOW, scene=scene)
    return Ctx(session=session, app={}, config=make_config("sqlite+aiosqlite:///:memory:"),  # type: ignore[arg-type]
               now=NOW, openid="oUser", distributor=distributor, state=state, args=args)


def text(content: str, msg_id: int = 1) -> Incoming:
    return Incoming(openid="oUser", account="gh", kind="text", create_time=1, msg_id=msg_id, content=content)


def event(name: str, key: str = "") -> Incoming:
    return Incoming(openid="oUser", account="gh", kind="event", create_time=1, event=name, event_key=key)


def distributor(status: str = "active") -> Distributor:
    return Distributor(id=1, code="K7QF2M", openid="oUser", phone="13800138000", name="张三", rank="junior",
                       status=status, registered_at=NOW)


# ---- split_command -------------------------------------------------------------------------------
@pytest.mark.parametrize("text_,words,expected", [
    ("注册", ("注册", "register"), ""),
    ("注册 K7QF2M", ("注册", "register"), "K7QF2M"),
    ("注册K7QF2M", ("注册", "register"), "K7QF2M"),
    ("  注册   K7QF2M  ", ("注册", "register"), "K7QF2M"),
    ("register K7QF2M", ("注册", "register"), "K7QF2M"),
    ("REGISTER k7qf2m", ("注册", "register"), "k7qf2m"),
    ("/register", ("注册", "register"), ""),
    ("/注册", ("注册", "register"), ""),
    ("registerK7QF2M", ("注册", "register"), None),  # English words need a space
    ("registered", ("注册", "register"), None),
    ("提现 12.50", ("提现", "withdraw"), "12.50"),
    ("withdraw\t12.50", ("提现", "withdraw"), "12.50"),
    ("我要注册", ("注册", "register"), None),
    ("", ("注册", "register"), None),
    ("/", ("注册", "register"), None),
])
def test_split_command(text_: str, words: tuple[str, ...], expected: str | None) -> None:
    assert split_command(text_, words) == expected


# ---- ChatRouter ----------------------------------------------------------------------------------
class Step(StrEnum):
    STEP = "step"
    A = "a"
    B = "b"


def routers(log: list[str]) -> list[Feature]:
    first, second, last = Feature("first"), Feature("second", states=Step), Feature("last")

    @first.command("海报", "poster", menu=MenuKey.POSTER)
    def on_poster(msg: Incoming, ctx: Ctx) -> Text:
        log.append("first.poster:" + ctx.args)
        return Text("poster")

    @second.command("海报", "poster")
    def shadowed(msg: Incoming, ctx: Ctx) -> Text:
        log.append("second.poster")
        return Text("never")

    @second.command("注册", "register")
    def on_register(msg: Incoming, ctx: Ctx) -> Text:
        log.append("register")
        ctx.set_state(Step.STEP, {"n": 1})
        return Text("step 1")

    @second.state(Step.STEP)
    def on_step(msg: Incoming, ctx: Ctx) -> Text:
        log.append("step:" + msg.content)
        return Text("step 2")

    @second.event("subscribe", "subscribe_scan")
    def on_follow(msg: Incoming, ctx: Ctx) -> Text:
        log.append("follow:" + msg.event_key)
        return Text("welcome")

    @last.fallback
    def fallback(msg: Incoming, ctx: Ctx) -> Text | None:
        log.append("fallback:" + msg.kind)
        return None if msg.kind == "event" else Text("help")

    return [first, second, last]


def state(name: str = "step", expires_in: timedelta = timedelta(minutes=10)) -> ConversationState:
    return ConversationState(openid="oUser", state=name, data={}, expires_at=NOW + expires_in)


def test_the_router_needs_exactly_one_fallback() -> None:
    with pytest.raises(ValueError):
        ChatRouter([Feature("a")])
    a, b = Feature("a"), Feature("b")
    a.fallback(help_handlers.on_anything_else)
    b.fallback(help_handlers.on_anything_else)
    with pytest.raises(FeatureConflict):
        check([a, b])
    with pytest.raises(ValueError):
        ChatRouter([a, b])


def _claiming(name: str, **claims: Any) -> Feature:
    f = Feature(name)
    if "word" in claims:
        f.command(claims["word"])(help_handlers.on_help)
    if "menu" in claims:
        f.command(name + "-only", menu=claims["menu"])(help_handlers.on_help)
    if "route" in claims:
        f.api.get(claims["route"], summary="x")(lambda request: None)
    if "job" in claims:
        f.job(claims["job"], "interval", minutes=1)(lambda app: None)
    return f


@pytest.mark.parametrize("claim", [{"word": "海报"}, {"menu": MenuKey.POSTER}, {"route": "/things"}, {"job": "tidy"}])
def test_two_features_claiming_the_same_thing_stop_start_up_with_a_message(claim: dict[str, Any]) -> None:
    with pytest.raises(FeatureConflict) as e:
        check([_claiming("one", **claim), _claiming("two", **claim)])
    assert "'one'" in str(e.value) and "'two'" in str(e.value)
    check([_claiming("one", **claim)])  # alone it is fine


def test_create_app_refuses_conflicting_features() -> None:
    from app.factory import create_app
    with pytest.raises(FeatureConflict):
        create_app(make_config("sqlite+aiosqlite:///:memory:"),
                   features=(_claiming("one", word="收益"), _claiming("two", word="收益"), help_handlers.feature))


def test_a_state_must_belong_to_the_feature() -> None:
    f = Feature("f", states=Step)

    class Other(StrEnum):
        X = "x"
    with pytest.raises(FeatureConflict):
        f.state(Other.X)(help_handlers.on_help)  # type: ignore[arg-type]


async def test_the_first_router_with_a_word_wins_and_gets_the_arguments() -> None:
    log: list[str] = []
    d = ChatRouter(routers(log))
    assert d.route(text("海报 SKU-1"), make_ctx()) == Text("poster")
    assert log == ["first.poster:SKU-1"]


async def test_a_menu_click_routes_by_key_and_leaves_any_conversation() -> None:
    log: list[str] = []
    d = ChatRouter(routers(log))
    s = state()
    session = FakeSession()
    ctx = make_ctx(session=session, state=s)
    assert d.route(event("click", "POSTER"), ctx) == Text("poster")
    assert ctx.state is None and session.deleted == ["conversation_states"]


async def test_an_unknown_click_gets_no_answer() -> None:
    log: list[str] = []
    assert ChatRouter(routers(log)).route(event("click", "NOPE"), make_ctx()) is None
    assert log == []  # no "click" event handler: nothing answers, nothing runs


async def test_events_route_by_name() -> None:
    log: list[str] = []
    d = ChatRouter(routers(log))
    assert d.route(event("subscribe_scan", "K7QF2M"), make_ctx()) == Text("welcome")
    assert d.route(event("view", "http://x"), make_ctx()) is None
    assert log == ["follow:K7QF2M"]


async def test_a_conversation_state_takes_plain_text() -> None:
    log: list[str] = []
    d = ChatRouter(routers(log))
    ctx = make_ctx()
    assert d.route(text("注册"), ctx) == Text("step 1")
    assert ctx.state is not None and ctx.state.state == "step"
    assert d.route(text("13800138000"), ctx) == Text("step 2")
    assert log == ["register", "step:13800138000"]


@pytest.mark.parametrize("word", sorted(CANCEL_WORDS) + ["取消 ", "CANCEL"])
async def test_cancel_leaves_any_state(word: str) -> None:
    log: list[str] = []
    d = ChatRouter(routers(log))
    s = state()
    session = FakeSession()
    ctx = make_ctx(session=session, state=s)
    reply = d.route(text(word.strip()), ctx)
    assert isinstance(reply, Text) and "已取消" in reply.content
    assert ctx.state is None and session.deleted == ["conversation_states"]
    assert log == []


async def test_cancel_without_state_is_just_text() -> None:
    log: list[str] = []
    assert ChatRouter(routers(log)).route(text("取消"), make_ctx()) == Text("help")
    assert log == ["fallback:text"]


async def test_a_command_in_the_middle_of_a_conversation_leaves_it() -> None:
    log: list[str] = []
    s = state()
    ctx = make_ctx(state=s)
    assert ChatRouter(routers(log)).route(text("poster"), ctx) == Text("poster")
    assert ctx.state is None


async def test_an_expired_state_is_forgotten() -> None:
    log: list[str] = []
    s = state(expires_in=-timedelta(seconds=1))
    session = FakeSession()
    ctx = make_ctx(session=session, state=s)
    assert ChatRouter(routers(log)).route(text("13800138000"), ctx) == Text("help")
    assert ctx.state is None and session.deleted == ["conversation_states"]
    assert log == ["fallback:text"]


async def test_set_state_creates_then_updates_one_row() -> None:
    session = FakeSession()
    ctx = make_ctx(session=session)
    ctx.set_state(Step.A, {"x": 1})
    first = ctx.state
    ctx.set_state(Step.B, {"y": 2}, ttl=timedelta(minutes=5))
    assert ctx.state is first and len(session.added) == 1
    assert (first.state, first.data, first.expires_at) == ("b", {"y": 2}, NOW + timedelta(minutes=5))


def test_dedupe_keys() -> None:
    # A MsgId is unique per sender only (CONTRACT §5): the same one from two users is two messages.
    assert text("x", msg_id=42).dedupe_key == "m:42:oUser"
    other = Incoming(openid="oOther", account="gh", kind="text", create_time=1, msg_id=42, content="x")
    assert other.dedupe_key != text("x", msg_id=42).dedupe_key
    e = event("subscribe_scan", "K7QF2M")
    assert e.dedupe_key == "e:oUser:1:subscribe_scan:K7QF2M"
    assert event("subscribe").dedupe_key != event("unsubscribe").dedupe_key
    assert len(event("click", "K" * 500).dedupe_key) <= 160
    # Which updates open WeChat's customer-service quota (domain.quota): not an unfollow.
    assert granted_by("event", "unsubscribe") is None and granted_by("text", "") == GrantKind.MESSAGE


# ---- handlers with a fake ctx --------------------------------------------------------------------
async def test_help_handler() -> None:
    reply = help_handlers.on_help(text("帮助"), make_ctx())
    assert reply == Text(help_handlers.HELP)
    for word in ("注册", "海报", "提现", "我的推广"):
        assert word in reply.content
    assert "register" not in reply.content and "withdraw" not in reply.content  # Chinese only (CONTRACT §5)


async def test_fallback_answers_text_and_other_messages_but_not_events() -> None:
    assert help_handlers.on_anything_else(text("你好"), make_ctx()) == Text(help_handlers.HELP)
    image = Incoming(openid="oUser", account="gh", kind="image", create_time=1, msg_id=2)
    reply = help_handlers.on_anything_else(image, make_ctx())
    assert isinstance(reply, Text) and "文字" in reply.content
    assert help_handlers.on_anything_else(event("view", "http://x"), make_ctx()) is None


async def test_register_handler_for_a_distributor() -> None:
    reply = registration.on_register(text("注册"), make_ctx(distributor=distributor()))
    assert "已经是分销员" in reply.content and "K7QF2M" in reply.content
    reply = registration.on_register(text("注册"), make_ctx(distributor=distributor("exited")))
    assert "已退出" in reply.content


@pytest.mark.parametrize("typed", ["abc", "ABCDE0", "TOOLONGCODE", "K7QF2"])
async def test_register_handler_refuses_a_malformed_code_without_a_query(typed: str) -> None:
    ctx = make_ctx(args=typed)
    reply = registration.on_register(text("注册 " + typed), ctx)
    assert "不存在" in reply.content
    assert ctx.state is None


async def test_register_handler_without_code_asks_for_the_phone() -> None:
    session = FakeSession()
    ctx = make_ctx(session=session)
    reply = registration.on_register(text("注册"), ctx)
    assert "手机号" in reply.content and "邀请人：无" in reply.content
    assert ctx.state is not None and ctx.state.state == registration.Registering.PHONE
    assert ctx.state.data == {"inviter": None}


async def test_register_handler_uses_the_scene_and_masks_the_inviter() -> None:
    inviter = Distributor(id=7, code="ABCDEF", openid="oA", phone="13900139000", name="欧阳娜娜",
                          rank="junior", status="active", registered_at=NOW)
    session = FakeSession(inviter)
    ctx = make_ctx(session=session, scene="ABCDEF")
    reply = registration.on_register(text("注册"), ctx)
    assert "欧***（ABCDEF）" in reply.content and "娜娜" not in reply.content
    assert ctx.state.data == {"inviter": "ABCDEF"}


@pytest.mark.parametrize("content", ["12345", "1380013800", "10800138000", "phone"])
async def test_phone_step_refuses_malformed_numbers_without_a_query(content: str) -> None:
    ctx = make_ctx(state=state(registration.Registering.PHONE))
    reply = registration.on_phone(text(content), ctx)
    assert "格式不对" in reply.content
    assert ctx.state.state == registration.Registering.PHONE


async def test_phone_step_moves_on_to_the_name() -> None:
    s = state(registration.Registering.PHONE)
    s.data = {"inviter": None}
    ctx = make_ctx(session=FakeSession(None), state=s)
    reply = registration.on_phone(text("+86 138-0013-8000"), ctx)
    assert "姓名" in reply.content and "13800138000" not in reply.content
    assert ctx.state.state == registration.Registering.NAME
    assert ctx.state.data == {"inviter": None, "phone": "13800138000"}


@pytest.mark.parametrize("name", ["张", "张" * 21, "123", "张三!"])
async def test_name_step_refuses_without_a_query(name: str) -> None:
    ctx = make_ctx(state=state(registration.Registering.NAME))
    reply = registration.on_name(text(name), ctx)
    assert "姓名需为" in reply.content


# ---- replies and the menu ------------------------------------------------------------------------
@pytest.mark.parametrize("reply", [Text("你好 ¥1,234.56"), Image("media-1"),
                                   News((Article("标题", "描述", "http://x", "http://y.jpg"), Article("二")))])
def test_replies_round_trip_through_json(reply: Any) -> None:
    assert from_json(to_json(reply)) == reply


@pytest.mark.parametrize("reply", [Text("收益 ¥1.00\n<b>&amp; a]]>b ]]]]> 末"), Image("media]]>1"),
                                   News((Article("标题]]>", "描述 <&>", "http://x/?a=1&b=2", "http://y.jpg"),))])
def test_rendered_replies_read_back_with_wechatpy(reply: Any) -> None:
    message = wechatpy.parse_message(render(reply, account="gh_acct", openid="oUser]]>", at=AT))
    assert message.source == "gh_acct" and message.target == "oUser]]>"
    assert message.create_time.timestamp() == int(AT)
    match reply:
        case Text(content):
            assert message.type == "text" and message.content == content
        case Image(media_id):
            fields = xmltodict.parse(render(reply, account="gh", openid="o", at=AT))["xml"]
            assert fields["MsgType"] == "image" and fields["Image"]["MediaId"] == media_id
        case News(articles):
            fields = xmltodict.parse(render(reply, account="gh", openid="o", at=AT))["xml"]
            item = fields["Articles"]["item"]
            a = articles[0]
            assert (item["Title"], item["Description"], item["Url"], item["PicUrl"]) == (
                a.title, a.description, a.url, a.image)


def test_render_drops_characters_xml_cannot_hold() -> None:
    message = wechatpy.parse_message(render(Text("a\x00b\x07c\td"), account="gh", openid="o", at=AT))
    assert message.content == "abc\td"


def test_render_shows_a_single_article_and_says_success_for_nothing() -> None:
    assert render(None, account="gh", openid="o", at=AT) == "success"
    xml = render(News((Article("一"), Article("二"))), account="gh", openid="oUser", at=AT)
    fields = xmltodict.parse(xml)["xml"]
    assert fields["ArticleCount"] == "1" and fields["ToUserName"] == "oUser" and fields["FromUserName"] == "gh"


def test_menu_uses_every_key_once_within_wechat_limits() -> None:
    payload = menu_payload()
    assert 1 <= len(payload["button"]) <= 3
    keys = [s["key"] for b in payload["button"] for s in b["sub_button"]]
    assert all(1 <= len(b["sub_button"]) <= 5 for b in payload["button"])
    assert sorted(keys) == sorted(k.value for k in MenuKey)
    assert len(MENU) == len(payload["button"])
