"""The weekly report (CONTRACT §5): 退订周报 / 订阅周报, the `weekly-report` job that queues each
active, subscribed distributor's report once a week, and the report's chart and page.

The job pages through distributors by id, BATCH at a time: a batch's figures come from a few
grouped queries (domain.figures) on a read-only connection, its messages (one each: the text with
the link to its chart, one customer-service message of the user's quota, not two) are written in
one unit through the writer, under outbox keys of the week (`weekly:<Monday>:<id>`), so a second
run in the same week, or one after a crash, queues nothing twice. Memory holds one batch,
whatever the number of distributors.

`reports.weekly = false` takes the Monday 09:00 run off the schedule; the report still goes when
asked for (POST /api/jobs/weekly-report/run). `send_weekly_reports` takes an injectable clock.

The chart is not uploaded: it is a PNG this feature renders on request at a signed URL (the
distributor and the week, HMAC-signed: nothing to look up, nothing to guess), kept briefly in a
cache; the report's link opens a page with the chart and the report.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from cachetools import TTLCache
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from kit.chat import Ctx, Incoming, active_only
from kit.feature import Feature
from kit.app_keys import CLOCK, PACKS, READER, WRITER
from kit.live_settings import live_config
from content.charts import render_weekly_chart
from content.pages import page
from content.store import PackLibrary
from domain.config import Config
from domain.figures import Sales, credited_sales, daily_totals, earnings, personal_sales, sales_by_time, team_sales
from domain.figures import teams
from domain.formats import month_of
from domain.messages import Text
from domain.outbox_rows import Queued, enqueue_many, template_data
from domain.plans import bonus_lines
from domain.team_bonus import team_sales as team_month_sales
from domain.signing import link_key, sign, verify
from domain.weekly import SCRIPT_TITLES, ReportWeek, WeekContent, WeekFigures, report_text, report_week, team_week
from domain.weekly import week_of_label
from storage.models import Distributor, DistributorStatus
from storage.tables import DISTRIBUTORS, OUTBOX

log = logging.getLogger(__name__)
feature = Feature("weekly report")

BATCH = 1000
CHART_DAYS = 14
CHART_CACHE_SECONDS = 600
CHARTS_CACHED = 256
LINK_PURPOSE = "weekly-chart"
TOKEN = r"{token:\d{1,19}-\d{8}-[0-9a-f]{32}}"  # <distributor id>-<Monday YYYYMMDD>-<signature>
NOTHING = (Sales(), Sales())


# ---- chat -------------------------------------------------------------------------------------
@feature.command("退订周报", "unsubscribe report")
@active_only
def on_unsubscribe(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    if not me.weekly_report:
        return Text("您已退订周报，每周一不会收到个人周报。想重新接收，回复“订阅周报”即可。")
    me.weekly_report = False
    return Text("已退订周报，以后每周一不再给您发送个人周报。想恢复接收，随时回复“订阅周报”即可。")


@feature.command("订阅周报", "subscribe report")
@active_only
def on_subscribe(msg: Incoming, ctx: Ctx, me: Distributor) -> Text:
    lines = ["您已订阅周报。" if me.weekly_report else "已订阅周报。",
             "每周一上午 9 点发给您上周的销售额、收益、新成员、升级进度和业绩图，附上建议。",
             "不想接收时回复“退订周报”。"]
    me.weekly_report = True
    if not ctx.config.reports.weekly:
        lines.append("（周报目前暂停发送，恢复后会按时发给您。）")
    return Text("\n".join(lines))


# ---- the figures of a batch ----------------------------------------------------------------------
Person = Row[tuple[int, str, str, str]]  # id, openid, name, rank
_PEOPLE = select(DISTRIBUTORS.c.id, DISTRIBUTORS.c.openid, DISTRIBUTORS.c.name, DISTRIBUTORS.c.rank)


def week_figures(session: Session, people: Sequence[Person], week: ReportWeek,
                 config: Config | None = None) -> dict[int, WeekFigures]:
    """Everyone's figures with five grouped queries, whatever the number of people (a sixth for
    the team bonus when `config` has tiers)."""
    ids = [p.id for p in people]
    windows = week.windows
    sales, earned = credited_sales(session, ids, windows), earnings(session, ids, windows)
    team, personal = teams(session, ids, windows), personal_sales(session, ids)
    members = team_sales(session, [i for i in ids if i in team], windows)
    rewards = config.rewards if config is not None and config.rewards.team_tiers else None
    month = month_of(week.reported[1])  # the month the report is sent in
    bonus = team_month_sales(session, [i for i in ids if i in team], month) if rewards else {}
    out = {}
    for p in people:
        (sold, sold_before), (got, got_before) = sales.get(p.id, NOTHING), earned.get(p.id, (0, 0))
        size, (joined, joined_before) = team.get(p.id, (0, [0, 0]))
        out[p.id] = WeekFigures(p.name, p.rank, (sold, sold_before), (got, got_before), (joined, joined_before),
                                personal.get(p.id, 0), team_week(size, members.get(p.id, [])) if size else None,
                                tuple(bonus_lines(bonus.get(p.id, 0), rewards)) if rewards and size else ())
    return out


def week_content(session: Session, library: PackLibrary, week: ReportWeek) -> WeekContent:
    """The newest live scripts' titles, and the pack versions that went live in the week reported."""
    titles = [s["title"] for pack in library.live(session) for s in pack.scripts]
    return WeekContent(tuple(titles[:SCRIPT_TITLES]),
                       tuple((pack.name, len(pack.posters)) for pack in library.live(session, week.reported)))


# ---- the chart link --------------------------------------------------------------------------------
def chart_token(key: bytes, distributor_id: int, week: ReportWeek) -> str:
    message = f"{distributor_id}-{week.label}"
    return f"{message}-{sign(key, message)}"


def read_token(config: Config, token: str) -> tuple[int, ReportWeek] | None:
    """The distributor and week a chart token names, when its signature holds."""
    did, label, signature = token.split("-")
    week = week_of_label(label)
    if week is None or not verify(link_key(config, LINK_PURPOSE), f"{did}-{label}", signature):
        return None
    return int(did), week


def report_urls(config: Config, week: ReportWeek) -> Callable[[int], str]:
    """The report page's URL of each distributor this week (its chart: the same + ".png")."""
    key, base = link_key(config, LINK_PURPOSE), f"{config.server.public_url}/reports/weekly/"
    return lambda distributor_id: base + chart_token(key, distributor_id, week)


def with_chart_link(text: str, url: str) -> Text:
    """The report and its chart in one message: the text, then a link to the page with the chart."""
    return Text(f'{text}\n\n<a href="{html.escape(url)}">查看近两周业绩图</a>')


# ---- the job ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    last_id: int | None  # the last distributor looked at; None: nobody left
    due: list[tuple[Person, WeekFigures]]  # those whose report this week is not queued yet


def load_batch(session: Session, week: ReportWeek, after: int, limit: int, config: Config | None = None) -> Batch:
    """The next `limit` active, subscribed distributors after id `after`, with the figures of
    those whose report this week is not queued yet."""
    d = DISTRIBUTORS.c
    people = session.execute(_PEOPLE.where(d.id > after, d.status == DistributorStatus.ACTIVE,
                                           d.weekly_report.is_(True)).order_by(d.id).limit(limit)).all()
    if not people:
        return Batch(None, [])
    done = set(session.scalars(select(OUTBOX.c.key).where(OUTBOX.c.key.in_([week.key(p.id) for p in people]))))
    todo = [p for p in people if week.key(p.id) not in done]
    figures = week_figures(session, todo, week, config) if todo else {}
    return Batch(people[-1].id, [(p, figures[p.id]) for p in todo])


def compose(config: Config, content: WeekContent, week: ReportWeek,
            due: Sequence[tuple[Person, WeekFigures]]) -> list[Queued]:
    """Each report as one message: its text with the link to its chart (the report's page). When
    the user's quota allows no customer-service message, a template message leading to that page."""
    messages, url_of = [], report_urls(config, week)
    for p, figures in due:
        text = Text(report_text(figures, config.ranks, content, week))
        url = url_of(p.id)
        messages.append(Queued(week.key(p.id), p.openid, with_chart_link(text.content, url),
                               template_data(text, "分销周报"), url))
    return messages


async def send_weekly_reports(app: web.Application, now: datetime | None = None, *, batch_size: int = BATCH) -> int:
    """Queue the week's report of every active distributor who has not unsubscribed and has not
    had it yet; how many were queued. The week is the one `now` (default: the clock) falls in.
    Per batch: the figures on a read-only connection, the texts in a thread (off the loop), the
    messages in one unit of work."""
    week = report_week(now or app[CLOCK].now())
    config, reader, writer = live_config(app), app[READER], app[WRITER]
    content = await reader.run(lambda s: week_content(s, app[PACKS], week), slow=True)
    queued, after = 0, 0
    while True:
        batch = await reader.run(functools.partial(load_batch, week=week, after=after, limit=batch_size, config=config),
                                 slow=True)
        if batch.last_id is None:
            break
        if batch.due:
            messages = await asyncio.to_thread(compose, config, content, week, batch.due)
            await writer.run(functools.partial(enqueue_many, items=messages, now=app[CLOCK].now()), slow=True)
            queued += len(batch.due)
        after = batch.last_id
    log.info("weekly reports queued", extra={"week": week.label, "queued": queued})
    return queued


async def weekly_report(app: web.Application, now: datetime | None = None) -> int:
    """The job: Monday 09:00 (Asia/Shanghai) while reports.weekly is on, and whenever asked for."""
    return await send_weekly_reports(app, now)


# Declared apart so that weekly_report stays a plain function (tests call it with their clock).
feature.job("weekly-report", "cron", day_of_week="mon", hour=9, minute=0,
            scheduled_if=lambda config: config.reports.weekly)(weekly_report)


# ---- the chart and the page ------------------------------------------------------------------------
CHARTS = web.AppKey("weekly_report_charts", TTLCache)


@feature.resource(CHARTS)
async def charts(app: web.Application) -> AsyncIterator[TTLCache[Any, bytes]]:
    yield TTLCache(maxsize=CHARTS_CACHED, ttl=CHART_CACHE_SECONDS)


def _person(session: Session, distributor_id: int) -> Person | None:
    return session.execute(_PEOPLE.where(DISTRIBUTORS.c.id == distributor_id)).first()


def chart_days(session: Session, distributor_id: int, week: ReportWeek) -> list[tuple[Any, int]] | None:
    """Daily credited sales of the two weeks, or None for an unknown distributor."""
    if _person(session, distributor_id) is None:
        return None
    rows = sales_by_time(session, distributor_id, (week.previous[0], week.monday))
    return daily_totals(rows, week.last_day, CHART_DAYS)


def _found(request: web.Request) -> tuple[int, ReportWeek]:
    found = read_token(live_config(request.config_dict), request.match_info["token"])
    if found is None:
        raise web.HTTPNotFound(text="这个链接无效。")
    return found


@feature.pages.get(f"/reports/weekly/{TOKEN}.png")
async def weekly_chart(request: web.Request) -> web.Response:
    """The report's chart, rendered on request (signed link), cached a few minutes."""
    did, week = _found(request)
    cache = request.config_dict[CHARTS]
    png = cache.get((did, week.label))
    if png is None:
        days = await request.config_dict[READER].run(lambda s: chart_days(s, did, week))
        if days is None:
            raise web.HTTPNotFound(text="这个链接无效。")
        png = cache[(did, week.label)] = await asyncio.to_thread(render_weekly_chart, days)
    return web.Response(body=png, content_type="image/png",
                        headers={"Cache-Control": f"private, max-age={CHART_CACHE_SECONDS}"})


@feature.pages.get(f"/reports/weekly/{TOKEN}")
async def weekly_page(request: web.Request) -> web.Response:
    """The report with its chart, where the article (and a template message) leads."""
    did, week = _found(request)
    config, library = live_config(request.config_dict), request.config_dict[PACKS]

    def load(session: Session) -> str | None:
        person = _person(session, did)
        if person is None:
            return None
        figures = week_figures(session, [person], week, config)[did]
        return report_text(figures, config.ranks, week_content(session, library, week), week)

    text = await request.config_dict[READER].run(load)
    if text is None:
        raise web.HTTPNotFound(text="这个链接无效。")
    token = html.escape(request.match_info["token"])
    body = f'<img src="{token}.png" alt="近两周每日销售额">' + "".join(
        f"<p>{html.escape(line)}</p>" for line in text.splitlines())
    return web.Response(text=page("分销周报", body), content_type="text/html")
