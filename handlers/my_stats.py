"""我的推广 / my stats: this week's scans of the distributor's QR code, follows through it,
registrations bound to them and their members' first orders (domain.my_stats; the scans are
recorded by the follow and scan events, handlers/registration.py)."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from kit.app_keys import CLOCK, WRITER
from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from domain.messages import Text
from domain.my_stats import promotion_week
from storage.db import delete_chunk
from storage.models import Distributor
from storage.tables import QR_SCANS

feature = Feature("my_stats")
SCANS_KEPT = timedelta(weeks=5)  # 我的推广 reads this week's; a month more for the curious


@feature.command("我的推广", "my stats")
@active_only
def on_my_stats(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    week = promotion_week(ctx.session, me.id, me.code, me.openid, ctx.now)
    lines = [f"我的推广（本周，{week.since.month}月{week.since.day}日周一起）", f"推广码：{me.code}",
             f"二维码被扫：{week.scans} 次", f"扫码关注：{week.follows} 人",
             f"注册加入您团队：{week.registrations} 人", f"成员首单：{week.first_orders} 人"]
    if not week.scans and not week.registrations:
        lines.append("本周还没有人扫您的码。回复“海报”领取专属海报，分享给朋友扫码关注。")
    return Text("\n".join(lines))


@feature.job("prune-qr-scans", "interval", hours=6)
async def prune_qr_scans(app: web.Application) -> None:
    """Scans older than SCANS_KEPT, a chunk per unit (the webhook records new ones between them)."""
    cutoff = app[CLOCK].now() - SCANS_KEPT
    while await app[WRITER].run(lambda s: delete_chunk(s, QR_SCANS, QR_SCANS.c.scanned_at < cutoff)):
        pass
