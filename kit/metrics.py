"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as _CONTENT_TYPE


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

        self._children: dict[tuple[Any, ...], Any] = {}

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
