"""The app factory: webhook, admin API, sandbox and background workers, wired in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web
from sqlalchemy import delete, func, select, text

from bot import features, webhook
from bot.api import create_api_app
from domain.config import Config
from bot.dispatcher import REPLY_DEADLINE_SECONDS, Dispatcher
from bot.menu import menu_payload
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.sandbox.platform import Platform
from bot.sandbox.views import create_sandbox_app
from bot.scheduler import job, run_scheduler
from bot.typedefs import CONFIG, DISPATCHER, ENGINE, HTTP, METRICS, OUTBOX, SESSIONMAKER, WECHAT
from bot.wechat_api import WeChatAPI, WeChatError
from storage.db import READ_ONLY, create_engine, create_sessionmaker
from storage.migrate import upgrade
from storage.models import OutboxMessage, OutboxStatus, ProcessedMessage

log = logging.getLogger(__name__)
DEDUPE_RETENTION = timedelta(days=2)


@job("prune-processed-messages", "interval", hours=1)
async def prune_processed_messages(app: web.Application) -> None:
    """Dedupe keys only matter while WeChat may retry; keep two days for the curious."""
    cutoff = datetime.now(UTC) - DEDUPE_RETENTION
    async with app[SESSIONMAKER]() as session, session.begin():
        await session.execute(delete(ProcessedMessage).where(ProcessedMessage.created_at < cutoff))


CORE_JOBS = [prune_processed_messages]


def sandbox_platform(config: Config) -> Platform:
    host = "127.0.0.1" if config.server.host in ("0.0.0.0", "::", "") else config.server.host
    return Platform(app_id=config.wechat.app_id, app_secret=config.wechat.app_secret, token=config.wechat.token,
                    encoding_aes_key=config.wechat.encoding_aes_key,
                    webhook_url=f"http://{host}:{config.server.port}/wechat")


def create_app(config: Config, *, platform: Platform | None = None, workers: bool = True,
               reply_deadline: float = REPLY_DEADLINE_SECONDS, migrate: bool = True) -> web.Application:
    """The whole service. `platform` replaces the built-in sandbox WeChat (tests run it apart);
    `workers=False` leaves out the outbox worker and the scheduler."""
    app = web.Application(middlewares=[_count_requests])
    app[CONFIG] = config
    app[METRICS] = Metrics()

    async def database(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(config.database.url)
        if migrate:
            await upgrade(engine)
        app[ENGINE] = engine
        app[SESSIONMAKER] = create_sessionmaker(engine)
        yield
        await engine.dispose()

    async def services(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            app[HTTP] = http
            wechat = app[WECHAT] = WeChatAPI(base_url=config.api_base_url, app_id=config.wechat.app_id,
                                             app_secret=config.wechat.app_secret,
                                             sessionmaker=app[SESSIONMAKER], http=http)
            outbox = app[OUTBOX] = Outbox(config, app[SESSIONMAKER], wechat, app[METRICS])
            dispatcher = app[DISPATCHER] = Dispatcher(
                config=config, sessionmaker=app[SESSIONMAKER], dispatch=features.dispatch(), wechat=wechat,
                outbox=outbox, metrics=app[METRICS], deadline=reply_deadline)
            tasks = [asyncio.create_task(dispatcher.run(), name="dispatcher")]
            if workers:
                tasks.append(asyncio.create_task(outbox.run(), name="outbox"))
                tasks.append(asyncio.create_task(run_scheduler(app, CORE_JOBS + features.jobs()), name="scheduler"))
                if config.sandbox and platform is None:
                    tasks.append(asyncio.create_task(_push_sandbox_menu(wechat), name="menu"))
            yield
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dispatcher.drain(), 5)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.extend([database, services])
    webhook.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.add_subapp("/api", create_api_app(features.api_tables()))
    for pages in features.page_tables():  # public pages of feature modules (trainings, share pages)
        app.router.add_routes(pages)
    if config.sandbox:
        app.add_subapp("/sandbox", create_sandbox_app(platform or sandbox_platform(config)))
    return app


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
        async with request.app[ENGINE].connect() as conn:  # a reader: never waits for a writer
            await (await conn.execution_options(**READ_ONLY)).execute(text("SELECT 1"))
    except Exception as e:  # any database failure means unhealthy
        return web.json_response({"status": "error", "error": type(e).__name__}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    # The depth as of this scrape (workers only update it now and then, and not at all when off).
    try:
        async with request.app[SESSIONMAKER]() as session:
            conn = await session.connection(execution_options=READ_ONLY)
            m.outbox_depth.set(await conn.scalar(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.status == OutboxStatus.PENDING)) or 0)
    except Exception:  # a scrape still answers while the database does not; /healthz tells
        log.warning("metrics: cannot read the outbox depth", exc_info=True)
    return web.Response(body=m.render(), content_type=m.content_type)


@web.middleware
async def _count_requests(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics = request.app[METRICS]
        metrics.child(metrics.requests, route, request.method, str(status)).inc()
