"""Typed keys for the resources the app holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain.clock import Clock

if TYPE_CHECKING:
    from domain.config import Config
    from bot.dispatcher import Dispatcher
    from bot.metrics import Metrics
    from bot.outbox import Outbox
    from bot.webhooks import WebhookSender
    from bot.wechat_api import WeChatAPI
    from bot.wechat_pay import PayClient
    from content.store import PackLibrary
    from storage.reader import Reader
    from storage.writer import Writer

CONFIG = web.AppKey("config", "Config")
ENGINE = web.AppKey("engine", AsyncEngine)
# The tests' own look at the database; the product reads through READER and writes through WRITER.
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
HTTP = web.AppKey("http", aiohttp.ClientSession)
WECHAT = web.AppKey("wechat", "WeChatAPI")
OUTBOX = web.AppKey("outbox", "Outbox")
WEBHOOKS = web.AppKey("webhooks", "WebhookSender")
DISPATCHER = web.AppKey("dispatcher", "Dispatcher")
METRICS = web.AppKey("metrics", "Metrics")
WRITER = web.AppKey("writer", "Writer")  # every write goes through it (storage.writer)
READER = web.AppKey("reader", "Reader")  # every read goes through it (storage.reader)
PACKS = web.AppKey("packs", "PackLibrary")  # the content packs, parsed once per process
PAY = web.AppKey("pay", "PayClient")  # WeChat Pay 商家转账, when pay.mode is not "off"
CLOCK = web.AppKey("clock", Clock)  # the one clock (domain.clock); tests give a FakeClock
