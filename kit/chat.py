"""Chat: the incoming update, the handler context, the one guard, and the router that sends an
update to the handler a feature declared for it.

A handler is a plain function `on_x(msg, ctx) -> Reply | Later | None`: it runs inside the update's
unit of work (storage.writer) with a synchronous session, and returns its reply. Slow I/O
(rendering, uploads) is never done there: the handler returns it as Later work. A handler (or
the domain beneath it) may raise a domain.refusals.Refusal: the update's SAVEPOINT rolls back and
the refusal's sentence is the reply (`ChatRouter.refused`), stored for WeChat's retries like any.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from sqlalchemy import delete
from sqlalchemy.orm import Session

from domain.config import Config
from domain.messages import Reply, Text
from domain.refusals import Refusal
from domain.suspension import suspended_text
from storage.models import ConversationState, Distributor, DistributorStatus, Follower

CANCEL_WORDS = frozenset({"取消", "cancel", "/cancel"})
STATE_TTL = timedelta(minutes=30)
MATCH_CACHE_SIZE = 4096
T = TypeVar("T")
# Loads what a command needs for many distributors at once: (session, distributor ids, now) ->
# {distributor id: value}. Declared on the command (Feature.command(preload=...)); the
# dispatcher calls it once for all the distributors asking that command in a group commit.
Preload = Callable[[Session, list[int], datetime], dict[int, Any]]

NOT_REGISTERED = "您还不是分销员。回复“注册”即可加入，注册后就能使用这个功能。"
EXITED = "您已退出分销计划，不能再使用这个功能。如需帮助请回复“客服”。"


# The events whose sender becomes a follower (CONTRACT §7), as a message's sender does. WeChat's job
# reports and verification notices come from no follower; an unfollow, a link click or a location
# report records nobody new either.
_FOLLOWER_EVENTS = frozenset({"subscribe", "subscribe_scan", "scan", "click"})


@dataclass(frozen=True)
class Incoming:
    """One message or event from a follower, independent of wechatpy's classes."""

    openid: str
    account: str  # the official account's original id (ToUserName)
    kind: str  # "text", "image", "voice", ..., or "event"
    create_time: int
    msg_id: int = 0  # MsgId (or MsgID): every message; events only where WeChat gives one (job reports)
    content: str = ""  # text messages, trimmed
    event: str = ""  # subscribe, subscribe_scan, scan, unsubscribe, click, view, ...
    event_key: str = ""  # menu key (click) or QR scene (subscribe_scan/scan, prefix stripped)
    # An event's other fields as sent (e.g. MASSSENDJOBFINISH's MsgID and counts).
    fields: tuple[tuple[str, str], ...] = ()

    def field(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.fields if k == name), default)

    @functools.cached_property  # read about ten times per update on its way through the dispatcher
    def dedupe_key(self) -> str:
        """What WeChat's retries of this update share: sender and MsgId (a MsgId is unique per
        sender only), for events sender, time and event. MsgId first: it grows, so the keys of
        new messages land at the end of the key index, not on random pages (bench/webhook.py)."""
        if self.kind != "event":
            return f"m:{self.msg_id}:{self.openid}"
        # WeChat's own reports (MASSSENDJOBFINISH) come from one sender: their MsgID tells them apart.
        key = f"e:{self.openid}:{self.create_time}:{self.event}:{self.event_key}"
        return (f"{key}:{self.msg_id}" if self.msg_id else key)[:160]

    @property
    def makes_follower(self) -> bool:
        """Whether the sender gets a follower row (if they have none): a message or a follow, QR scan
        or menu click."""
        return self.kind != "event" or self.event in _FOLLOWER_EVENTS


@dataclass(frozen=True)
class Later:
    """Slow work (rendering, WeChat uploads), run after the update's transaction commits.

    Without `first`, the work's result is the passive reply when it is ready within the reply
    deadline, else it goes out through the outbox. With `first`, `first` is the passive reply at
    once and the work's result always follows through the outbox (a chart after a text)."""

    work: Callable[[], Awaitable[Reply | None]]
    first: Reply | None = None


@dataclass
class Ctx:
    """Everything a handler may use: the update's session (its own SAVEPOINT), the app's
    resources by their typed keys, the follower, their distributor row and conversation."""

    session: Session
    app: Mapping[Any, Any]  # the aiohttp app: ctx.app[SOME_KEY] is a resource a feature declared
    config: Config
    now: datetime
    openid: str
    distributor: Distributor | None
    state: ConversationState | None
    args: str = ""  # what follows a text command, trimmed
    preloaded: Mapping[Preload, dict[int, Any]] = field(default_factory=dict)

    def load(self, preload: Callable[[Session, list[int], datetime], dict[int, T]], distributor_id: int) -> T:
        """What `preload` gives for this distributor: from the group commit's one load when the
        dispatcher made it, else loaded now for this distributor alone."""
        found = self.preloaded.get(preload)
        if found is not None and distributor_id in found:
            return found[distributor_id]
        return preload(self.session, [distributor_id], self.now)[distributor_id]

    def set_state(self, name: StrEnum, data: dict[str, Any] | None = None, ttl: timedelta = STATE_TTL) -> None:
        if self.state is None:
            self.state = ConversationState(openid=self.openid, state=name.value, data=dict(data or {}),
                                           expires_at=self.now + ttl)
            self.session.add(self.state)
        else:
            self.state.state, self.state.data, self.state.expires_at = name.value, dict(data or {}), self.now + ttl

    def clear_state(self) -> None:
        if self.state is not None:
            if self.state in self.session:
                self.session.expunge(self.state)
            self.session.execute(delete(ConversationState).where(ConversationState.openid == self.openid))
            self.state = None

    def follower(self) -> Follower:
        """The follower's row (loaded on demand: most updates never need it)."""
        row = self.session.get(Follower, self.openid)
        assert row is not None  # the dispatcher adds the sender of each update that makes_follower
        return row

    @property
    def live_state(self) -> str | None:
        return live_state(self.state, self.now)


def live_state(state: ConversationState | None, now: datetime) -> str | None:
    """The conversation a follower is in, unless it has expired."""
    return state.state if state is not None and state.expires_at > now else None


HandlerResult = Reply | Later | None
Handler = Callable[[Incoming, Ctx], HandlerResult]


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    handler: Handler
    preload: Preload | None = None


# Which texts a conversation state answers (Feature.state(keeps=...)); any other text leaves it.
Keeps = Callable[[str], bool]


class ChatTable(Protocol):
    """What the router reads of a feature (kit.feature.Feature is one)."""
    commands: list[Command]
    menu: dict[str, Handler]
    events: dict[str, Handler]
    state_handlers: dict[str, Handler]
    state_keeps: dict[str, Keeps]
    states_left_by_commands: set[str]
    fallback_handler: Handler | None


def active_only(handler: Callable[[Incoming, Ctx, Distributor], HandlerResult]) -> Handler:
    """The one guard for distributor commands: whoever is not an active distributor gets the same
    refusal everywhere (an exited distributor is told so, a suspended one why: CONTRACT §4.12);
    the handler gets the distributor."""
    @functools.wraps(handler)
    def guarded(msg: Incoming, ctx: Ctx) -> HandlerResult:
        me = ctx.distributor
        if me is None:
            return Text(NOT_REGISTERED)
        if me.status == DistributorStatus.SUSPENDED:
            return Text(suspended_text(ctx.session, me.id))
        if me.status != DistributorStatus.ACTIVE:
            return Text(EXITED)
        return handler(msg, ctx, me)
    return guarded


def a_number(text: str) -> bool:
    """A number alone: the only text a numbered pick keeps (Feature.state(keeps=a_number))."""
    return text.strip().isdigit()


def offer(ctx: Ctx, state: StrEnum, choices: Iterable[Any]) -> None:
    """A numbered list to pick from: its choices (JSON values, in the order shown from 1) kept in
    the follower's conversation `state`, whose handler reads the pick with `picked`."""
    ctx.set_state(state, {"choices": list(choices)})


def offered(ctx: Ctx) -> int:
    """How many choices the list offered had."""
    return len(ctx.state.data.get("choices", [])) if ctx.state is not None else 0


def picked(msg: Incoming, ctx: Ctx) -> Any | None:
    """The choice a number alone picks from the list offered (the conversation then left), or
    None when the text picks none (the conversation stays)."""
    typed = msg.content.strip()
    if not (typed.isdigit() and 1 <= int(typed) <= offered(ctx)):
        return None
    assert ctx.state is not None
    choice = ctx.state.data["choices"][int(typed) - 1]
    ctx.clear_state()
    return choice


def refusal_reply(error: BaseException) -> Text | None:
    """The one translation of a refusal for chat: a Refusal's sentence (None for anything else)."""
    return Text(error.sentence) if isinstance(error, Refusal) else None


def split_command(text: str, words: Iterable[str]) -> str | None:
    """The arguments after a command word, or None when the text is not that command.

    "注册 K7QF2M", "注册K7QF2M", "register K7QF2M" and "/register K7QF2M" all match 注册/register.
    """
    t = text.strip()
    if t.startswith("/"):
        t = t[1:]
    low = t.lower()
    for w in words:
        if low == w:
            return ""
        if low.startswith(w):
            rest = t[len(w):]
            if rest[:1].isspace() or not w.isascii():
                return rest.strip()
    return None


@dataclass(frozen=True)
class ChatRoute:
    """What an update will run: the handler, the command's arguments, whether it leaves the
    follower's conversation state."""

    handler: Handler
    args: str = ""
    leaves_state: bool = False


def _on_cancel(msg: Incoming, ctx: Ctx) -> Text:
    return Text("已取消。需要帮助请回复“帮助”。")


def _ignore(msg: Incoming, ctx: Ctx) -> None:
    return None


class ChatRouter:
    """Routes an update to the handler a feature declared, features in their listed order
    (app.features checks at start-up that no two claim the same word, key, event or state)."""

    def __init__(self, features: Iterable[ChatTable]):
        features = list(features)
        self._commands = [(c.words, c.handler) for f in features for c in f.commands]
        self.preloads = {c.handler: c.preload for f in features for c in f.commands if c.preload is not None}
        self._menu = {k: h for f in features for k, h in f.menu.items()}
        self._events = {e: h for f in features for e, h in f.events.items()}
        self._states = {s: h for f in features for s, h in f.state_handlers.items()}
        self._keeps = {s: k for f in features for s, k in f.state_keeps.items()}
        self._left_by_commands = {s for f in features for s in f.states_left_by_commands}
        fallbacks = [f.fallback_handler for f in features if f.fallback_handler is not None]
        if len(fallbacks) != 1:
            raise ValueError("exactly one feature must declare the fallback handler")
        self._fallback = fallbacks[0]
        # The same few texts (收益, 帮助, ...) arrive again and again: remember their match.
        self.match_command = functools.lru_cache(maxsize=MATCH_CACHE_SIZE)(self._match_command)

    def _match_command(self, text: str) -> tuple[Handler, str] | None:
        for words, handler in self._commands:
            args = split_command(text, words)
            if args is not None:
                return handler, args
        return None

    def resolve(self, msg: Incoming, state: str | None) -> ChatRoute:
        """The route for an update, given the follower's live conversation state (no I/O)."""
        if msg.kind == "event":
            if msg.event == "click" and msg.event_key in self._menu:
                return ChatRoute(self._menu[msg.event_key], leaves_state=True)
            return ChatRoute(self._events.get(msg.event, _ignore))
        if msg.kind == "text":
            if state is not None and msg.content.lower() in CANCEL_WORDS:
                return ChatRoute(_on_cancel, leaves_state=True)
            matched = self.match_command(msg.content)
            in_state = state in self._states
            # A state that answers only some texts (a confirmation, a numbered pick) is left by any
            # other, which is then read as if there had been no conversation.
            leaving = in_state and state in self._keeps and not self._keeps[state](msg.content)
            in_state = in_state and not leaving
            # Inside a conversation only a bare command word leaves it: "Top Lee" is a name; unless
            # the state is left by any command (a question: "提现 150" is a withdrawal).
            if matched is not None and not (in_state and matched[1] and state not in self._left_by_commands):
                return ChatRoute(matched[0], matched[1], leaves_state=True)
            if in_state:
                assert state is not None
                return ChatRoute(self._states[state])
            return ChatRoute(self._fallback, leaves_state=leaving)
        return ChatRoute(self._fallback)

    def _enter(self, msg: Incoming, ctx: Ctx) -> ChatRoute:
        """The update's route, the follower's conversation left where the route leaves it."""
        if ctx.state is not None and ctx.state.expires_at <= ctx.now:
            ctx.clear_state()
        route = self.resolve(msg, ctx.live_state)
        if route.leaves_state:
            ctx.clear_state()
        return route

    def route(self, msg: Incoming, ctx: Ctx) -> HandlerResult:
        route = self._enter(msg, ctx)
        ctx.args = route.args
        return route.handler(msg, ctx)

    def refused(self, msg: Incoming, ctx: Ctx, error: Exception) -> HandlerResult:
        """The answer to an update whose handler raised a refusal, run again after its SAVEPOINT
        rolled back: the conversation left as the route leaves it, the refusal's sentence."""
        self._enter(msg, ctx)
        return refusal_reply(error)
