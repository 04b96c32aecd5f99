"""Prometheus metrics, one registry per app (tests build many apps in one process).
deploy/prometheus/alerts.yml and deploy/grafana/distbot.json name them (tests/test_prometheus_rules.py
checks each name they use is exported here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, ExceptionContext

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as _CONTENT_TYPE

from domain.alerts import Figures, JobStatus


class Metrics:
    content_type = _CONTENT_TYPE.split(";")[0]

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("distbot_http_requests", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)
        self.handler_latency = Histogram(
            "distbot_handler_seconds", "Time from webhook receipt to reply, by outcome", ["outcome"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 4, 10), registry=r)
        self.updates = Counter("distbot_updates", "WeChat updates processed, by kind", ["kind"], registry=r)
        self.dedupe_hits = Counter("distbot_dedupe_hits", "Retried WeChat deliveries answered from the store",
                                   registry=r)
        self.late_replies = Counter("distbot_late_replies", "Replies sent later through the outbox", registry=r)
        self.outbox_depth = Gauge("distbot_outbox_depth", "Pending outbox messages", registry=r)
        self.tickets_open = Gauge("distbot_tickets_open", "Customer-service tickets waiting for an answer",
                                  registry=r)
        self.tickets_overdue = Gauge("distbot_tickets_overdue", "Open tickets past their promised answer time",
                                     registry=r)
        self.outbox_sent = Counter("distbot_outbox_sent", "Outbox messages sent, by channel", ["channel"],
                                   registry=r)
        self.outbox_outcomes = Counter(
            "distbot_outbox_outcomes", "What became of outbox messages within WeChat's customer-service quota: "
            "sent as custom, template or mass; kept for the user's next message; dropped (a broadcast nobody can "
            "receive now); 45047 or 45015 (WeChat refused a customer-service message our record allowed)",
            ["outcome"], registry=r)
        self.outbox_failed = Counter("distbot_outbox_failures", "Outbox send failures, by errcode", ["errcode"],
                                     registry=r)
        self.campaign_sends = Counter("distbot_campaign_sends", "Campaign sends by channel (custom, template, mass) and result (sent, retry, failed)",
                                      ["channel", "result"], registry=r)
        self.batch_size = Histogram("distbot_batch_updates", "Updates committed per group commit",
                                    buckets=(1, 2, 5, 10, 20, 50, 100, 200), registry=r)
        self.webhook_deliveries = Counter("distbot_webhook_deliveries", "Webhook delivery attempts, by result (ok, error)",
                                          ["result"], registry=r)
        self.webhook_backlog = Gauge("distbot_webhook_backlog", "Webhook deliveries not yet sent", registry=r)
        self.job_runs = Counter("distbot_job_runs", "Job runs, by job and status (ok, error)", ["job", "status"],
                                registry=r)
        self.job_seconds = Histogram("distbot_job_seconds", "How long job runs take, by job", ["job"],
                                     buckets=(0.01, 0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600), registry=r)
        # A failed backup is a failed run of the `backup` job (distbot_job_runs{job="backup",status="error"}).
        self.backup_last_success = Gauge(
            "distbot_backup_last_success_timestamp_seconds", "When the newest verified backup in [backup] dir "
            "was finished (Unix time; 0: none yet)", registry=r)
        self.backup_bytes = Gauge("distbot_backup_bytes", "The newest verified backup's size", registry=r)

        self._figures(r)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _figures(self, r: CollectorRegistry) -> None:
        """What /metrics reads from the database at each scrape (the same in every process), and
        the failures counted where they happen: WeChat's token, the database."""
        self.outbox_oldest = Gauge("distbot_outbox_oldest_pending_seconds",
                                   "How long the oldest due, unsent outbox message has waited", registry=r)
        self.webhook_oldest = Gauge("distbot_webhook_oldest_pending_seconds",
                                    "Age of the oldest webhook delivery not yet accepted", registry=r)
        self.risk_flags_stale = Gauge("distbot_risk_flags_stale", "Risk flags open for more than a day", registry=r)
        self.payouts_failed = Gauge("distbot_payouts_failed",
                                    "Payout bills WeChat Pay failed for good (all time; alert on its increase)",
                                    registry=r)
        self.sales_today = Gauge("distbot_sales_today_fen", "Sales today (China time), paid less refunded, in fen",
                                 registry=r)
        self.orders_today = Gauge("distbot_orders_today", "Orders paid today (China time)", registry=r)
        self.commission_today = Gauge("distbot_commission_today_fen",
                                      "Commission booked today (China time) less reversals, in fen", registry=r)
        self.job_overdue = Gauge("distbot_job_overdue_seconds",
                                 "How long a scheduled job is past a fire time it has not run for (0: on time)",
                                 ["job"], registry=r)
        self.job_last_ok = Gauge("distbot_job_last_run_ok", "Whether a job's last recorded run succeeded (1) or failed (0)",
                                 ["job"], registry=r)
        self.database_up = Gauge("distbot_database_up", "Whether this scrape could read the database (1) or not (0)",
                                 registry=r)
        self.database_errors = Counter("distbot_database_errors", "Errors the database driver raised, by kind",
                                       ["kind"], registry=r)
        self.token_refreshes = Counter("distbot_wechat_token_refreshes",
                                       "Refreshes of WeChat's access token and jsapi ticket, by result (ok, error)",
                                       ["result"], registry=r)

    def observe(self, fig: Figures, jobs: Sequence[JobStatus]) -> None:
        """Set the gauges read from the database at a scrape."""
        self.outbox_oldest.set(fig.outbox_oldest_s)
        self.webhook_oldest.set(fig.webhook_oldest_s)
        self.risk_flags_stale.set(fig.risk_flags_stale)
        self.payouts_failed.set(fig.payouts_failed)
        self.sales_today.set(fig.sales_today_fen)
        self.orders_today.set(fig.orders_today)
        self.commission_today.set(fig.commission_today_fen)
        for job in jobs:
            self.child(self.job_overdue, job.name).set(job.overdue_s)
            if job.ran:
                self.child(self.job_last_ok, job.name).set(0 if job.error else 1)

    def child(self, metric: Any, *labels: str) -> Any:
        """metric.labels(*labels), remembered: the lookup is a measurable cost per request."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Answered:
    """The status a request was answered with: its response's, an HTTPException's, else 500."""

    def __init__(self) -> None:
        self.status = 500

    async def by(self, answer: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            response = await answer()
            self.status = response.status
            return response
        except web.HTTPException as e:
            self.status = e.status
            raise


@contextmanager
def counting_database_errors(metrics: Metrics, url: URL) -> Iterator[None]:
    """Count every error the driver raises on the database at `url` (distbot_database_errors_total),
    on any engine of this process that reaches it: the app's and, on SQLite, the Writer's and the
    Reader's own. A listener on the Engine class, so it is removed when the app stops."""
    where = _place(url)

    def count(ctx: ExceptionContext) -> None:
        if ctx.engine is not None and _place(ctx.engine.url) == where:
            kind = "disconnect" if ctx.is_disconnect else type(ctx.sqlalchemy_exception or ctx.original_exception).__name__
            metrics.child(metrics.database_errors, kind).inc()

    event.listen(Engine, "handle_error", count)
    try:
        yield
    finally:
        event.remove(Engine, "handle_error", count)


def _place(url: URL) -> tuple[Any, ...]:
    return url.get_backend_name(), url.host, url.port, url.database
