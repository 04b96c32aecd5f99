"""Typed keys for the WeChat-side resources the app holds."""

from __future__ import annotations

from aiohttp import web

from wechat.client import WeChatAPI
from wechat.dispatcher import Dispatcher
from wechat.outbox import Outbox
from wechat.pay import PayClient

WECHAT = web.AppKey("wechat", WeChatAPI)
OUTBOX = web.AppKey("outbox", Outbox)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
PAY = web.AppKey("pay", PayClient)  # WeChat Pay 商家转账, when pay.mode is not "off"
