"""Chat routing: the incoming update, the handler context and one Router per feature module."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.menu import MenuKey
from domain.messages import Reply, Text
from storage.models import ConversationState, Distributor, DistributorRow, Follower

if TYPE_CHECKING:
    from domain.config import Config
    from bot.outbox import Outbox
    from bot.wechat_api import WeChatAPI

CANCEL_WORDS = frozenset({"取消", "cancel", "/cancel"})
STATE_TTL = timedelta(minutes=30)
MATCH_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Incoming:
    """One message or event from a follower, independent of wechatpy's classes."""

    openid: str
    account: str  # the official account's original id (ToUserName)
    kind: str  # "text", "image", "voice", ..., or "event"
    create_time: int
    msg_id: int = 0
    content: str = ""  # text messages, trimmed
    event: str = ""  # subscribe, subscribe_scan, scan, unsubscribe, click, view, ...
    event_key: str = ""  # menu key (click) or QR scene (subscribe_scan/scan, prefix stripped)

    @property
    def dedupe_key(self) -> str:
        if self.msg_id:
            return f"m:{self.msg_id}"
        return f"e:{self.openid}:{self.create_time}:{self.event}:{self.event_key}"[:160]

    @property
    def interactive(self) -> bool:
        """Whether WeChat opens the 48-hour customer-service window for this update."""
        return self.event != "unsubscribe"


@dataclass
class Ctx:
    """Everything a handler may use; one database session per update."""

    session: AsyncSession
    config: Config
    wechat: WeChatAPI
    outbox: Outbox
    now: datetime
    openid: str
    distributor: Distributor | DistributorRow | None
    state: ConversationState | None
    args: str = ""  # what follows a text command, trimmed
    followups: list[Callable[[], Awaitable[Reply | None]]] = field(default_factory=list)
    prefetched: Any = None  # this distributor's part of the command's batch prefetch, if any
    # Process-local memory for the app's lifetime, shared by all updates (namespaced keys).
    memo: dict[str, Any] = field(default_factory=dict)
    # For Later work, which runs after the update's transaction and opens its own short sessions.
    sessionmaker: async_sessionmaker[AsyncSession] | None = None

    def after_commit(self, work: Callable[[], Awaitable[Reply | None]]) -> None:
        """Run slow work (a chart, an upload) once the update has committed; what it returns is
        sent to this follower through the outbox, after the passive reply."""
        self.followups.append(work)

    def set_state(self, name: str, data: dict[str, Any] | None = None, ttl: timedelta = STATE_TTL) -> None:
        if self.state is None:
            self.state = ConversationState(openid=self.openid, state=name, data=data or {},
                                           expires_at=self.now + ttl)
            self.session.add(self.state)
        else:
            self.state.state, self.state.data, self.state.expires_at = name, dict(data or {}), self.now + ttl

    async def clear_state(self) -> None:
        if self.state is not None:
            if self.state in self.session.new:  # made earlier in this same batch
                self.session.expunge(self.state)
            else:
                await self.session.delete(self.state)
            self.state = None

    async def follower(self) -> Follower:
        """The follower's row (loaded on demand: most updates never need it)."""
        row = await self.session.get(Follower, self.openid)
        assert row is not None  # the dispatcher adds every sender before routing
        return row

    @property
    def active_distributor(self) -> Distributor | DistributorRow | None:
        d = self.distributor
        return d if d is not None and d.status == "active" else None


@dataclass(frozen=True)
class Later:
    """Slow work (rendering, WeChat uploads) done after the update's transaction commits.

    Its result is the passive reply when it is ready within the reply deadline, otherwise it is
    delivered through the outbox and the customer-service API.
    """

    work: Callable[[], Awaitable[Reply | None]]
    key: str = field(default="")


HandlerResult = Reply | Later | None
Handler = Callable[[Incoming, Ctx], Awaitable[HandlerResult]]
# (session, distributor ids, now) -> {distributor id: what the handler needs}
Prefetch = Callable[[AsyncSession, list[int], datetime], Awaitable[dict[int, Any]]]


@dataclass
class Router:
    """A feature module's ways in: text commands, menu keys, events and conversation states."""

    name: str
    commands: list[tuple[tuple[str, ...], Handler]] = field(default_factory=list)
    menu_keys: dict[str, Handler] = field(default_factory=dict)
    events: dict[str, Handler] = field(default_factory=dict)
    states: dict[str, Handler] = field(default_factory=dict)
    fallback_handler: Handler | None = None
    prefetchers: dict[Handler, Prefetch] = field(default_factory=dict)

    def command(self, *words: str, menu: MenuKey | None = None,
                prefetch: Prefetch | None = None) -> Callable[[Handler], Handler]:
        """A text command (and its menu key). `prefetch` loads, once for a whole group commit,
        what the handler needs for every distributor in it; the handler finds its part in
        ctx.prefetched (None when the handler runs without it)."""
        def register(fn: Handler) -> Handler:
            self.commands.append((tuple(w.lower() for w in words), fn))
            if menu is not None:
                self.menu_keys[menu.value] = fn
            if prefetch is not None:
                self.prefetchers[fn] = prefetch
            return fn
        return register

    def event(self, *names: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for n in names:
                self.events[n] = fn
            return fn
        return register

    def state(self, *names: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for n in names:
                self.states[n] = fn
            return fn
        return register

    def fallback(self, fn: Handler) -> Handler:
        self.fallback_handler = fn
        return fn


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
class Route:
    """What an update will run: the handler, the command's arguments, whether it leaves the
    follower's conversation state."""

    handler: Handler
    args: str = ""
    leaves_state: bool = False


async def _on_cancel(msg: Incoming, ctx: Ctx) -> Text:
    return Text("已取消。需要帮助请回复“帮助”。")


async def _ignore(msg: Incoming, ctx: Ctx) -> None:
    return None


class Dispatch:
    """Routes an update through the routers, in the explicit order they were given."""

    def __init__(self, routers: Iterable[Router]):
        self.routers = list(routers)
        self._commands = [(words, fn) for r in self.routers for words, fn in r.commands]
        self._menu = {k: fn for r in self.routers for k, fn in r.menu_keys.items()}
        self._events = {k: fn for r in self.routers for k, fn in r.events.items()}
        self._states = {k: fn for r in self.routers for k, fn in r.states.items()}
        self.prefetchers = {fn: pf for r in self.routers for fn, pf in r.prefetchers.items()}
        fallbacks = [r.fallback_handler for r in self.routers if r.fallback_handler]
        if len(fallbacks) != 1:
            raise ValueError("exactly one router must define the fallback handler")
        self._fallback = fallbacks[0]
        self._matched: dict[str, tuple[Handler, str] | None] = {}

    def match_command(self, text: str) -> tuple[Handler, str] | None:
        # The same few texts (收益, 帮助, ...) arrive again and again: remember their match.
        if text in self._matched:
            return self._matched[text]
        found = None
        for words, fn in self._commands:
            args = split_command(text, words)
            if args is not None:
                found = fn, args
                break
        if len(self._matched) >= MATCH_CACHE_SIZE:
            self._matched.clear()
        self._matched[text] = found
        return found

    def resolve(self, msg: Incoming, state: str | None) -> Route:
        """The route for an update, given the follower's live conversation state (no I/O)."""
        if msg.kind == "event":
            if msg.event == "click" and msg.event_key in self._menu:
                return Route(self._menu[msg.event_key], leaves_state=True)
            return Route(self._events.get(msg.event, _ignore))
        if msg.kind == "text":
            if state is not None and msg.content.lower() in CANCEL_WORDS:
                return Route(_on_cancel, leaves_state=True)
            matched = self.match_command(msg.content)
            in_state = state in self._states
            # Inside a conversation only a bare command word leaves it: "Top Lee" is a name.
            if matched is not None and not (in_state and matched[1]):
                return Route(matched[0], matched[1], leaves_state=True)
            if in_state:
                assert state is not None
                return Route(self._states[state])
        return Route(self._fallback)

    @staticmethod
    def live_state(ctx: Ctx) -> str | None:
        return ctx.state.state if ctx.state is not None and ctx.state.expires_at > ctx.now else None

    async def route(self, msg: Incoming, ctx: Ctx, route: Route | None = None) -> HandlerResult:
        if ctx.state is not None and ctx.state.expires_at <= ctx.now:
            await ctx.clear_state()
        route = route or self.resolve(msg, self.live_state(ctx))
        if route.leaves_state:
            await ctx.clear_state()
        ctx.args = route.args
        return await route.handler(msg, ctx)
