"""Alerts (CONTRACT §9): the figures that tell an operator something is wrong, read from the
database so that every process tells the same (the /metrics gauges that deploy/prometheus/alerts.yml
watches), and the built-in alerts for a pilot without Prometheus: the conditions those figures and
the jobs' runs meet under [alerts], each told to admin.notify_openids (a template message through
the outbox, its text with 告警) and to [[webhooks]] subscribed to `alert.raised` when it is found,
again every repeat_s while it holds, and once with 恢复 (`alert.resolved`) when it clears. The
state lives in `alerts` (storage.models_alerts), so a restart neither repeats nor forgets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from domain.config import Config
from domain.config_sections import AlertsConfig, WebhookEvent
from domain.formats import CHINA, china_time
from domain.messages import Text
from domain.outbox_rows import Queued, enqueue_many, template_data
from domain.payouts import OVERDUE
from domain.tickets import span
from domain.webhook_events import emit
from storage.models import OutboxStatus
from storage.models_risk import FlagStatus
from storage.tables import ALERTS, DAILY_TOTALS, OUTBOX, PAYOUT_BILLS, RISK_FLAGS, WEBHOOK_DELIVERIES

# A risk flag open longer than this is one nobody is looking at.
FLAG_AGE = timedelta(days=1)
MAX_ERROR_CHARS = 120  # of a failed job's error, in a message staff read on a phone
# The template messages' titles: an alert's says 告警, a resolution's 恢复 and never 告警.
TITLE, RESOLVED_TITLE = "系统告警", "系统恢复"


@dataclass(frozen=True)
class Figures:
    """What the database says, as of `now` (the /metrics gauges and the built-in alerts)."""

    outbox_oldest_s: float  # how long the oldest due, unsent outbox message has waited (0: none)
    webhook_oldest_s: float  # the age of the oldest undelivered webhook (0: none)
    risk_flags_stale: int  # risk flags open for more than a day
    payouts_failed: int  # payout bills WeChat Pay failed for good (not the ones that expired unclaimed)
    # Today's money (China time), as the console's 概览 counts it (domain.dashboard): the dashboard's money flows.
    sales_today_fen: int = 0
    orders_today: int = 0
    commission_today_fen: int = 0


@dataclass(frozen=True)
class JobStatus:
    """A scheduled job as its recorded runs show it (kit.scheduler.job_statuses)."""

    name: str
    overdue_s: float  # how long past a fire time it has not run for (0: on time)
    ran: bool  # it has a recorded run
    error: str | None  # its last run's error, None when it succeeded (or never ran)


@dataclass(frozen=True)
class Condition:
    key: str  # stable: "outbox", "webhooks", "job-late:<job>", "job-failed:<job>"
    text: str  # what is wrong, in Chinese


def figures(session: Session, now: datetime) -> Figures:
    """Five indexed reads: (status, next_attempt_at) of the outbox and of the webhook deliveries
    (their undelivered rows are few), the open risk flags, the payout bills by state and today's
    row of daily_totals."""
    o, w, f, p, d = OUTBOX.c, WEBHOOK_DELIVERIES.c, RISK_FLAGS.c, PAYOUT_BILLS.c, DAILY_TOTALS.c
    due = session.scalar(select(func.min(o.next_attempt_at)).where(o.status == OutboxStatus.PENDING,
                                                                    o.next_attempt_at <= now))
    hook = session.scalar(select(func.min(w.created_at)).where(
        w.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING))))
    stale = session.scalar(select(func.count()).select_from(RISK_FLAGS).where(
        f.status == FlagStatus.OPEN, f.created_at < now - FLAG_AGE))
    failed = session.scalar(select(func.count()).select_from(PAYOUT_BILLS).where(
        p.state == "FAIL", or_(p.fail_reason.is_(None), p.fail_reason != OVERDUE)))
    today = session.execute(select(d.sales_fen, d.orders, d.commission_fen).where(
        d.day == now.astimezone(CHINA).date())).first() or (0, 0, 0)
    return Figures(_age(due, now), _age(hook, now), stale or 0, failed or 0, *today)


def _age(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else max((now - since).total_seconds(), 0.0)


def conditions(fig: Figures, jobs: Sequence[JobStatus], limits: AlertsConfig) -> list[Condition]:
    """What is wrong under the [alerts] limits, each condition under its stable key."""
    found = []
    if fig.outbox_oldest_s > limits.outbox_oldest_s:
        found.append(Condition("outbox", f"消息发送积压：最早一条待发消息已等待 {_span(fig.outbox_oldest_s)}"
                                         f"（上限 {_span(limits.outbox_oldest_s)}）"))
    if fig.webhook_oldest_s > limits.webhook_oldest_s:
        found.append(Condition("webhooks", f"Webhook 投递积压：最早一个未送达的事件已等待 "
                                           f"{_span(fig.webhook_oldest_s)}（上限 {_span(limits.webhook_oldest_s)}）"))
    for job in jobs:
        if job.overdue_s > limits.job_late_s:
            found.append(Condition(f"job-late:{job.name}", f"定时任务 {job.name} 已超过计划时间 "
                                                           f"{_span(job.overdue_s)} 未运行"))
        if job.error is not None:
            found.append(Condition(f"job-failed:{job.name}",
                                   f"定时任务 {job.name} 上次运行失败：{job.error[:MAX_ERROR_CHARS]}"))
    return found


def _span(seconds: float) -> str:
    return span(timedelta(seconds=seconds))


@dataclass(frozen=True)
class Told:
    raised: int = 0
    repeated: int = 0
    resolved: int = 0


def settle(session: Session, config: Config, found: Sequence[Condition], now: datetime) -> Told:
    """Compare what is wrong now with the alerts raised before: raise the new ones, repeat those
    told more than repeat_s ago, resolve those that cleared; each told as it goes."""
    a = ALERTS.c
    keys = [c.key for c in found]
    stmt = select(a.id, a.key, a.text, a.raised_at, a.last_sent_at, a.sends, a.resolved_at).where(
        or_(a.resolved_at.is_(None), a.key.in_(keys)))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()  # a run asked for through /api beside the leader's: one tells
    rows = {r.key: r for r in session.execute(stmt)}
    repeat = timedelta(seconds=config.alerts.repeat_s)
    raised = repeated = resolved = 0
    for c in found:
        row = rows.get(c.key)
        if row is None or row.resolved_at is not None:
            alert_id = _raise(session, c, row, now)
            _tell(session, config, alert_id, row.sends + 1 if row else 1, _raised_text(c, now), now, TITLE)
            _hook(session, config, WebhookEvent.ALERT_RAISED, {"alert": c.key, "text": c.text,
                                                               "raised_at": china_time(now)}, now)
            raised += 1
        elif now - row.last_sent_at >= repeat:
            session.execute(update(ALERTS).where(a.id == row.id).values(text=c.text, last_sent_at=now,
                                                                        sends=row.sends + 1))
            _tell(session, config, row.id, row.sends + 1, _repeated_text(c, row.raised_at, now), now, TITLE)
            repeated += 1
    for row in rows.values():
        if row.resolved_at is None and row.key not in keys:
            session.execute(update(ALERTS).where(a.id == row.id).values(resolved_at=now, last_sent_at=now,
                                                                        sends=row.sends + 1))
            _tell(session, config, row.id, row.sends + 1, _resolved_text(row.text, row.raised_at, now), now,
                  RESOLVED_TITLE)
            _hook(session, config, WebhookEvent.ALERT_RESOLVED, {
                "alert": row.key, "text": row.text, "raised_at": china_time(row.raised_at),
                "resolved_at": china_time(now)}, now)
            resolved += 1
    return Told(raised, repeated, resolved)


def _raise(session: Session, c: Condition, row: Any, now: datetime) -> int:
    """The alert's row, new or raised again; its id."""
    values = {"text": c.text, "raised_at": now, "last_sent_at": now, "resolved_at": None}
    if row is None:
        return int(session.execute(ALERTS.insert().values(key=c.key, sends=1, **values)
                                   .returning(ALERTS.c.id)).scalar_one())
    session.execute(update(ALERTS).where(ALERTS.c.id == row.id).values(sends=row.sends + 1, **values))
    return int(row.id)


def _tell(session: Session, config: Config, alert_id: int, send: int, text: Text, now: datetime,
          title: str) -> None:
    """One message to each of admin.notify_openids, keyed by the alert and its send: a unit run
    twice queues it once. Staff rarely write to the account, so it mostly goes as a template."""
    enqueue_many(session, [Queued(f"alert:{alert_id}:{send}:{openid}", openid, text, template_data(text, title))
                           for openid in config.admin.notify_openids], now=now)


def _hook(session: Session, config: Config, type_: WebhookEvent, data: dict[str, Any], now: datetime) -> None:
    emit(session, config, type_, [(None, data)], now)


def _raised_text(c: Condition, now: datetime) -> Text:
    return Text(f"【系统告警】{c.text}\n发现于 {china_time(now)}（北京时间）。处理好后会另行通知。")


def _repeated_text(c: Condition, raised_at: datetime, now: datetime) -> Text:
    return Text(f"【系统告警】仍未解决（已持续 {span(now - raised_at)}）：{c.text}")


def _resolved_text(text: str, raised_at: datetime, now: datetime) -> Text:
    return Text(f"【已恢复】{text}\n该问题已恢复正常，持续 {span(now - raised_at)}。")
