"""A feature is one object that declares everything it brings: chat commands and menu keys,
events, conversation states (an enum), /api routes, public pages, jobs, and the resources it
needs. app.features lists them; the app factory installs the list (install).

    feature = Feature("orders", scope="shop")   # who may use its /api routes and console pages

    @feature.command("订单", "orders", menu=MenuKey.ORDERS)
    @active_only
    def on_orders(msg, ctx, me): ...

    @feature.api.get("/orders/{order_no}", summary="...")
    async def get_order(request): ...

    @feature.job("unfreeze", "interval", minutes=1)
    async def unfreeze(app): ...

    @feature.resource(ORDER_EVENTS)            # ORDER_EVENTS = web.AppKey("order_events", ...)
    async def order_events(app): yield GroupCommit(...)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from enum import StrEnum
from typing import Any

from aiohttp import web

from kit.api import ApiRoutes
from kit.chat import Command, Handler, Keeps, Preload
from kit.menu import MenuKey
from kit.scheduler import Job
from kit.scopes import ConsolePages, ScopeSpec
from domain.config import Config
from domain.jobs import JobRef

ResourceFactory = Callable[[web.Application], AsyncIterator[Any]]


class FeatureConflict(Exception):
    """Two features claim the same command word, menu key, event, state, route or job."""


class Feature:
    def __init__(self, name: str, *, states: type[StrEnum] | None = None, scope: ScopeSpec = None):
        """`scope`: the scope (or scopes) that may use this feature's /api routes and console pages,
        unless a route says otherwise with its own `scope=` (kit.scopes)."""
        self.name = name
        self.states = states
        self.commands: list[Command] = []
        self.menu: dict[str, Handler] = {}
        self.events: dict[str, Handler] = {}
        self.state_handlers: dict[str, Handler] = {}
        self.state_keeps: dict[str, Keeps] = {}
        self.states_left_by_commands: set[str] = set()
        self.fallback_handler: Handler | None = None
        self.api = ApiRoutes(name, scope)
        self.pages = web.RouteTableDef()
        self.console = ConsolePages(scope)  # admin console pages, paths under /admin (kit.console)
        self.jobs: list[Job] = []
        self.resources: list[tuple[web.AppKey[Any], ResourceFactory]] = []

    # ---- chat -------------------------------------------------------------------------------
    def command(self, *words: str, menu: MenuKey | None = None,
                preload: Preload | None = None) -> Callable[[Handler], Handler]:
        """A text command (its words, Chinese and English) and the menu key that runs it too.
        `preload` loads what the handler needs for all who ask in one group commit at once; the
        handler reads its part with ctx.load(preload, distributor id)."""
        def register(fn: Handler) -> Handler:
            self.commands.append(Command(tuple(w.lower() for w in words), fn, preload))
            if menu is not None:
                self._claim(self.menu, menu.value, fn, "menu key")
            return fn
        return register

    def event(self, *names: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for n in names:
                self._claim(self.events, n, fn, "event")
            return fn
        return register

    def state(self, *states: StrEnum, keeps: Keeps | None = None,
              commands_leave: bool = False) -> Callable[[Handler], Handler]:
        """What a text does while the follower is in one of this feature's conversation states.
        `keeps`: the texts the state answers (a confirmation's "1", a numbered pick's number);
        any other text leaves the conversation and is read as usual. `commands_leave`: a command
        with its argument (提现 150) leaves it too, not only a bare command word (a free-text
        question; a name step keeps "Top Lee")."""
        def register(fn: Handler) -> Handler:
            for s in states:
                if self.states is None or not isinstance(s, self.states):
                    raise FeatureConflict(f"feature {self.name!r}: state {s!r} is not one of its states enum")
                self._claim(self.state_handlers, s.value, fn, "state")
                if keeps is not None:
                    self.state_keeps[s.value] = keeps
                if commands_leave:
                    self.states_left_by_commands.add(s.value)
            return fn
        return register

    def fallback(self, fn: Handler) -> Handler:
        """What every update that no feature claims gets (one feature has it)."""
        self.fallback_handler = fn
        return fn

    # ---- jobs and resources -------------------------------------------------------------------
    def job(self, id: str | JobRef, trigger: str, *, scheduled_if: Callable[[Config], bool] | None = None,
            trigger_from: Callable[[Config], dict[str, Any]] | None = None, **trigger_args: Any) -> Callable[[Callable[[web.Application], Any]], Job]:
        """A periodic job: `async def job(app)`, safe to run twice, named `id` in GET /api/jobs and
        POST /api/jobs/{id}/run. `trigger` is "cron" or "interval" with APScheduler's arguments,
        in Asia/Shanghai time: ("cron", day_of_week="mon", hour=9), ("interval", minutes=1)
        (kit.scheduler). `scheduled_if(config)` false: only run when asked for (POST .../run).
        `trigger_from(config)`: the trigger's arguments come from the config (a schedule it sets).
        The decorated name is the job's handle for `app[JOBS].start`; a job another feature starts
        too is declared with its `JobRef` (domain.jobs)."""
        name = id.id if isinstance(id, JobRef) else id

        def register(fn: Callable[[web.Application], Any]) -> Job:
            j = Job(name, fn, trigger, tuple(trigger_args.items()), scheduled_if, trigger_from)
            self.jobs.append(j)
            return j
        return register

    def resource(self, key: web.AppKey[Any]) -> Callable[[ResourceFactory], ResourceFactory]:
        """A resource started and stopped by the app factory: an async generator of `app` that
        yields the value (stored under `key`) and cleans up after the yield, as cleanup_ctx."""
        def register(fn: ResourceFactory) -> ResourceFactory:
            self.resources.append((key, fn))
            return fn
        return register

    def _claim(self, table: dict[str, Handler], key: str, fn: Handler, what: str) -> None:
        if key in table:
            raise FeatureConflict(f"feature {self.name!r} declares the {what} {key!r} twice")
        table[key] = fn


def check(features: Iterable[Feature]) -> None:
    """Stop start-up when two features claim the same command word, menu key, event, state,
    /api route, page, job or resource."""
    owners: dict[tuple[str, str], str] = {}

    def claim(kind: str, key: str, feature: Feature) -> None:
        other = owners.setdefault((kind, key), feature.name)
        if other != feature.name:
            raise FeatureConflict(f"features {other!r} and {feature.name!r} both declare the {kind} {key!r}")

    for f in features:
        for word in {w for c in f.commands for w in c.words}:
            claim("command", word, f)
        for kind, keys in (("menu key", f.menu), ("event", f.events), ("state", f.state_handlers)):
            for key in keys:
                claim(kind, key, f)
        for r in f.api.routes:
            claim("/api route", f"{r.method} {r.path}", f)
        for page in f.pages:
            if isinstance(page, web.RouteDef):
                claim("page", f"{page.method} {page.path}", f)
        for page in f.console:
            if isinstance(page, web.RouteDef):
                claim("console page", f"{page.method} {page.path}", f)
        for j in f.jobs:
            claim("job", j.id, f)
        for key, _ in f.resources:
            claim("resource", repr(key), f)
        if f.fallback_handler is not None:
            claim("fallback", "", f)


def install_resources(app: web.Application, features: Iterable[Feature]) -> None:
    """Each feature's resources in the app's cleanup_ctx, stored under their typed keys."""
    for f in features:
        for key, factory in f.resources:
            app.cleanup_ctx.append(_keep(key, factory))


def _keep(key: web.AppKey[Any], factory: ResourceFactory) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gen = factory(app)
        app[key] = await anext(gen)
        yield
        async for _ in gen:  # the cleanup after the factory's yield
            pass
    return ctx
