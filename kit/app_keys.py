"""Typed keys for the resources the app holds that features build on (WeChat's are wechat.wechat_keys)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from content.store import PackLibrary
from domain.clock import Clock
from domain.config import Config
from kit.metrics import Metrics
from kit.webhook_sender import WebhookSender
from storage.reader import Reader
from storage.writer import Writer

CONFIG = web.AppKey("config", Config)
ENGINE = web.AppKey("engine", AsyncEngine)
# The tests' own look at the database; the product reads through READER and writes through WRITER.
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
HTTP = web.AppKey("http", aiohttp.ClientSession)
WEBHOOKS = web.AppKey("webhooks", WebhookSender)
METRICS = web.AppKey("metrics", Metrics)
WRITER = web.AppKey("writer", Writer)  # every write goes through it (storage.writer)
READER = web.AppKey("reader", Reader)  # every read goes through it (storage.reader)
CLOCK = web.AppKey("clock", Clock)  # the one clock (domain.clock); tests give a FakeClock
PACKS = web.AppKey("packs", PackLibrary)  # the content packs, parsed once per process
