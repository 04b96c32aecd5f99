"""The app factory: webhook, admin API, sandbox and background workers, wired in one place."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from kit import headers

from kit import jobs_api

from wechat import replays

from kit import sign_in

from wechat import inbound as webhook
from kit.api import ApiRoutes
from kit.openapi import create_api_app
from kit.auditing import audit_log
from kit.chat import ChatRouter
from kit.console import create_console_app, favicon
from wechat.dispatcher import REPLY_DEADLINE_SECONDS, Dispatcher
from kit.feature import Feature, check, install_resources
from app.features import FEATURES
from kit.menu import menu_payload
from kit.metrics import Answered, Metrics, counting_database_errors
from wechat.outbox import Outbox
from kit.scheduler import JOBS, Jobs, job_statuses, run_scheduler, runs_by_name
from kit.live_settings import SETTINGS, LiveSettings, polled
from kit.app_keys import CLOCK, CONFIG, ENGINE, HTTP, METRICS, PACKS, READER, SESSIONMAKER, WEBHOOKS, WRITER
from wechat.wechat_keys import DISPATCHER, OUTBOX, PAY, WECHAT
from wechat.client import WeChatAPI, WeChatError
from wechat.pay import EmulatorKeys, PayClient, PayKeys, sandbox_keys
from kit.webhook_sender import WebhookSender
from kit.webhook_sender import backlog as webhook_backlog
from content.store import PackLibrary
from domain import alerts, campaigns
from domain import outbox_rows as outbox_rows
from domain import webhook_events as webhook_events
from domain.clock import Clock
from domain.config import Config, ConfigError
from domain.tickets import open_and_overdue
from storage.db import create_engine, delete_chunk
from storage.migrate import upgrade
from storage.models import JobRun, OutboxMessage, OutboxStatus
from storage.tables import PROCESSED, SIGNED_QUERIES
from storage.reader import Reader
from storage.writer import Writer

if TYPE_CHECKING:  # the sandbox itself is loaded in sandbox mode only
    from sandbox.platform import Platform

log = logging.getLogger(__name__)
DEDUPE_RETENTION = timedelta(days=2)
STOP_SECONDS = 10  # how long shutdown waits for a worker that was told to stop
# What the wiring itself brings besides the features (checked against them like another feature).
CORE = Feature("core")
# What app.cleanup_ctx holds: set up, yield, clean up.
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


@CORE.job("prune-processed-messages", "interval", hours=1)
async def prune_processed_messages(app: web.Application) -> None:
    """Dedupe keys only matter while WeChat may retry: keep two days for the curious; signed
    queries while their timestamp holds. A chunk per unit (the webhook writes between them)."""
    now = app[CLOCK].now()
    cutoff, expired = now - DEDUPE_RETENTION, replays.expired_before(now)
    await _until_done(app, lambda s: delete_chunk(s, PROCESSED, PROCESSED.c.created_at < cutoff))
    await _until_done(app, lambda s: delete_chunk(s, SIGNED_QUERIES, SIGNED_QUERIES.c.key < expired))


async def _until_done(app: web.Application, work: Callable[[Session], int]) -> None:
    """`work` (a chunk of a prune) in one unit after another, until a unit finds nothing to do."""
    while await app[WRITER].run(work):
        pass


@CORE.job("prune-webhook-deliveries", "interval", hours=1)
async def prune_webhook_deliveries(app: web.Application) -> None:
    """Sent webhook deliveries older than a week, a chunk per unit."""
    cutoff = app[CLOCK].now() - webhook_events.RETENTION
    await _until_done(app, lambda s: webhook_events.prune(s, cutoff))


@CORE.job("prune-outbox", "interval", hours=1)
async def prune_outbox(app: web.Application) -> None:
    """Messages sent more than a month ago, a chunk per unit, once the campaigns they belong to
    have kept their final counts; then WeChat's mass reports as old that no message names."""
    cutoff = app[CLOCK].now() - outbox_rows.RETENTION
    await _until_done(app, lambda s: campaigns.keep_final_counts(s, cutoff))
    await _until_done(app, lambda s: outbox_rows.prune(s, cutoff))
    await _until_done(app, lambda s: campaigns.prune_mass_reports(s, cutoff))


@CORE.job("prune-sign-in-tries", "interval", hours=1)
async def prune_sign_in_tries(app: web.Application) -> None:
    """Console sign-in tries that stopped counting (kit.sign_in), a chunk per unit."""
    await _until_done(app, lambda s: sign_in.prune(s, app[CLOCK].now()))


def api_tables(features: tuple[Feature, ...] = FEATURES) -> list[ApiRoutes]:
    """Every table of /api routes: the features' and the jobs'."""
    return [*(f.api for f in (CORE, *features)), jobs_api.api]


def pay_keys(config: Config) -> tuple[PayKeys | None, EmulatorKeys | None]:
    """The merchant's WeChat Pay keys (none with pay.mode "off"): from the configured files, or in
    the sandbox without them, generated once under <data dir>/pay-sandbox with the emulator's mirror
    image. ConfigError naming the key when a file cannot be read."""
    pay = config.pay
    if not pay.on:
        return None, None
    if not pay.private_key_path:  # sandbox (live mode refuses to start without the key fields)
        return sandbox_keys(config.data_dir / "pay-sandbox", **({"mchid": pay.mchid} if pay.mchid else {}))
    try:
        return PayKeys.load(mchid=pay.mchid, merchant_serial=pay.merchant_serial,
                            private_key_path=pay.private_key_path, apiv3_key=pay.apiv3_key,
                            public_key_id=pay.public_key_id, public_key_path=pay.public_key_path), None
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"pay.private_key_path / pay.public_key_path: cannot read the WeChat Pay keys ({e})") from None


def create_app(config: Config, *, platform: Platform | None = None, workers: bool = True,
               reply_deadline: float = REPLY_DEADLINE_SECONDS, migrate: bool = True,
               features: tuple[Feature, ...] = FEATURES, clock: Clock | None = None) -> web.Application:
    """The whole service. `platform` replaces the built-in sandbox WeChat (tests run it apart);
    `workers=False` leaves out the outbox worker and the scheduler (POST /api/jobs/{name}/run
    still runs a job). FeatureConflict when two features claim the same command, menu key, event,
    state, route or job. `clock`: the app's time (tests give a `FakeClock`), real time by default."""
    check((CORE, *features))
    router = ChatRouter(features)
    merchant_keys, emulator_keys = pay_keys(config)
    # The built-in Pay emulator calls back over plain HTTP; WeChat Pay itself only over HTTPS.
    if config.pay.on and (config.pay.mode == "live" or config.pay.api_base_url) \
            and config.server.public_url.startswith("http://"):
        log.warning("pay.mode is %r but server.public_url is plain HTTP: WeChat Pay sends its callbacks "
                    "(%s/pay/notify) over HTTPS only; put a TLS proxy in front", config.pay.mode,
                    config.server.public_url)
    app = web.Application(middlewares=[_count_requests])
    headers.install(app, config)
    app[CONFIG], app[CLOCK] = config, (clock := clock or Clock())
    app[SETTINGS] = LiveSettings(config)  # the programme settings in force (kit.live_settings)
    app[JOBS] = Jobs(app, [j for f in (CORE, *features) for j in f.jobs])
    app[METRICS] = Metrics()
    app[PACKS] = PackLibrary()
    # Started in this order, stopped in reverse: features' resources may use the database and
    # the clients; the dispatcher and the workers use the features' resources.
    app.cleanup_ctx.extend([_database(migrate), polled, audit_log, _clients(merchant_keys)])
    install_resources(app, features)
    if config.sandbox:  # before the workers: the sandbox's users are saved once they stopped
        from sandbox.routes import mount  # the emulator is loaded in sandbox mode only
        mount(app, config, platform=platform, emulator_keys=emulator_keys, clock=clock)
    app.cleanup_ctx.append(_work(router, reply_deadline, workers=workers,
                                 push_menu=config.sandbox and platform is None))
    _add_routes(app, features)
    return app


def _database(migrate: bool) -> CleanupCtx:
    """The engine (migrated first unless `migrate` is false), the Writer (every write) and the Reader
    (every read)."""
    async def database(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(app[CONFIG].database.url)
        if migrate:
            await upgrade(engine)
        app[ENGINE] = engine
        # The outbox worker exists once the services start; a unit that queued a message wakes it.
        app[WRITER] = writer = Writer(engine, on_commit=lambda info: _wake_workers(app, info))
        app[READER] = reader = Reader(engine)
        app[SESSIONMAKER] = writer.sessions  # for the tests' own assertions, never read by the product
        with counting_database_errors(app[METRICS], engine.url):
            yield
        await reader.close()
        await writer.close()
        await engine.dispose()
    return database


def _clients(merchant_keys: PayKeys | None) -> CleanupCtx:
    """One HTTP session and the clients over it: WeChat's API, the outbox, the webhook sender and
    (with keys) WeChat Pay."""
    async def clients(app: web.Application) -> AsyncIterator[None]:
        config, clock = app[CONFIG], app[CLOCK]
        async with aiohttp.ClientSession() as http:
            app[HTTP] = http
            app[WECHAT] = WeChatAPI(base_url=config.api_base_url, app_id=config.wechat.app_id,
                                    app_secret=config.wechat.app_secret, writer=app[WRITER], http=http, clock=clock,
                                    metrics=app[METRICS])
            app[OUTBOX] = Outbox(config, app[READER], app[WRITER], app[WECHAT], app[METRICS], clock)
            app[WEBHOOKS] = WebhookSender(config, app[READER], app[WRITER], app[METRICS], clock)
            if merchant_keys is not None:
                app[PAY] = PayClient(merchant_keys, http, config.pay_base_url, clock=clock)
            yield
    return clients


def _work(router: ChatRouter, reply_deadline: float, *, workers: bool, push_menu: bool) -> CleanupCtx:
    """The dispatcher and (with `workers`) the background workers: the outbox, the scheduler, the
    webhook sender, and the sandbox's menu push (`push_menu`); drained and stopped at shutdown."""
    async def work(app: web.Application) -> AsyncIterator[None]:
        config, clock = app[CONFIG], app[CLOCK]
        dispatcher = app[DISPATCHER] = Dispatcher(settings=app[SETTINGS], app=app, router=router, writer=app[WRITER],
                                                  metrics=app[METRICS], deadline=reply_deadline, clock=clock)
        tasks = []
        if workers:
            tasks.append(asyncio.create_task(app[OUTBOX].run(), name="outbox"))
            tasks.append(asyncio.create_task(run_scheduler(app), name="scheduler"))
            if config.webhooks:
                tasks.append(asyncio.create_task(app[WEBHOOKS].run(), name="webhooks"))
            if push_menu:
                tasks.append(asyncio.create_task(_push_sandbox_menu(app[WECHAT]), name="menu"))
        yield
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(dispatcher.drain(), 5)
        await _stop(tasks)
        await app[JOBS].close()  # runs started by the schedule or by /api
    return work


def _add_routes(app: web.Application, features: tuple[Feature, ...]) -> None:
    """The webhook, health and metrics, /api, /admin and the features' public pages."""
    webhook.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/favicon.ico", favicon)
    app.add_subapp("/api", create_api_app(api_tables(features)))
    app.add_subapp("/admin", create_console_app(f.console for f in features))
    for f in features:  # public pages (training pages, share pages, pack pictures)
        app.router.add_routes(f.pages)

async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the workers and wait for them, a bounded time: a worker that does not stop is
    logged with where it hangs, and shutdown goes on (a deploy must not hang on it)."""
    for t in tasks:
        t.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
    for t in stuck:
        where = io.StringIO()
        t.print_stack(file=where)
        log.error("worker %s did not stop within %s s", t.get_name(), STOP_SECONDS, extra={"stack": where.getvalue()})



def _wake_workers(app: web.Application, info: dict[str, object]) -> None:
    if info.get("outbox") and OUTBOX in app:
        app[OUTBOX].wake()
    if info.get(webhook_events.WOKEN) and WEBHOOKS in app:
        app[WEBHOOKS].wake()


async def _push_sandbox_menu(wechat: WeChatAPI) -> None:
    """In sandbox mode the menu is pushed at start, as `distbot menu push` would, once we listen."""
    for _ in range(50):
        await asyncio.sleep(0.2)
        try:
            await wechat.create_menu(menu_payload())
            return
        except WeChatError:
            continue


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[READER].run(lambda session: session.execute(text("SELECT 1")))  # never waits for a writer
    except Exception as e:  # any database failure means unhealthy
        return web.json_response({"status": "error", "error": type(e).__name__}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    # Figures as of this scrape, read from the database: every process tells the database's truth
    # (the sla job runs in the leader alone). Indexed counts, (status, next_attempt_at) and
    # (status, due_at), the oldest due rows (domain.alerts.figures) and the jobs' last runs.
    now = request.app[CLOCK].now()

    def read(session: Session) -> tuple[int, int, tuple[int, int], alerts.Figures, dict[str, JobRun]]:
        return (session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.status == OutboxStatus.PENDING)) or 0, webhook_backlog(session),
            open_and_overdue(session, now), alerts.figures(session, now), runs_by_name(session))
    try:
        depth, backlog, (waiting, overdue), figures, runs = await request.app[READER].run(read)
        m.outbox_depth.set(depth)
        m.webhook_backlog.set(backlog)
        m.tickets_open.set(waiting)
        m.tickets_overdue.set(overdue)
        m.observe(figures, job_statuses(request.app[JOBS], request.app[CONFIG], runs, now))
        m.database_up.set(1)
    except Exception:  # a scrape still answers while the database does not; /healthz tells
        log.warning("metrics: cannot read the outbox depth or the tickets", exc_info=True)
        m.database_up.set(0)
    return web.Response(body=m.render(), content_type=m.content_type)


@web.middleware
async def _count_requests(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    answered = Answered()
    try:
        return await answered.by(lambda: handler(request))
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics = request.app[METRICS]
        metrics.child(metrics.requests, route, request.method, str(answered.status)).inc()
