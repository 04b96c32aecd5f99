"""The sections of the configuration, one class per TOML table ([server], [wechat], ...,
[[webhooks]]), each checking its own keys; domain.config puts them together into Config and
checks what spans several."""

from __future__ import annotations

import base64
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator, model_validator

from domain.jobs import crontab_fields

DEFAULT_ADMIN_TOKEN = "change-me"
# The sandbox's WeChat defaults: anyone who reads this file knows them, so live mode refuses them.
SANDBOX_APP_ID = "wxsandbox0000000000"
SANDBOX_APP_SECRET = "sandbox-secret"
SANDBOX_TOKEN = "sandbox-token"
AES_KEY_LENGTH = 43
DEMO_TOKEN_PREFIX = "demo-"  # the demo config's scoped tokens: refused in live mode
LEGAL_MAX_LEVELS = 3
MIN_TRANSFER_FEN = 10  # WeChat Pay's smallest transfer, ¥0.10
# WeChat Pay's transfer scenes and the report fields each requires (transfer_scene_report_infos).
TRANSFER_SCENES: dict[str, tuple[tuple[str, str], ...]] = {
    "1005": (("岗位类型", "推广员"), ("报酬说明", "推广佣金")),  # 佣金报酬
    "1000": (("活动名称", "分销推广"), ("奖励说明", "推广佣金")),  # 现金营销
}
# Scoped tokens (CONTRACT §4.11): shop (order events and reads), finance (withdrawals, adjustments,
# ledgers, exports, payouts), ops (content, campaigns, contests, tickets, jobs), admin (everything).
ADMIN = "admin"
SCOPES: tuple[str, ...] = ("shop", "finance", "ops", ADMIN)
Scope = Literal["shop", "finance", "ops", "admin"]
PAY_KEY_FIELDS = ("mchid", "merchant_serial", "private_key_path", "apiv3_key", "public_key_id", "public_key_path")



class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    # Proxies (addresses or CIDR networks) whose X-Forwarded-For names the client (kit.sign_in).
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class WechatConfig(_Section):
    mode: Literal["sandbox", "live"] = "sandbox"
    app_id: str = SANDBOX_APP_ID
    app_secret: str = SANDBOX_APP_SECRET
    token: str = SANDBOX_TOKEN
    encoding_aes_key: str = ""
    api_base_url: str = ""
    template_id: str = ""

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key(cls, v: str) -> str:
        if v and len(v) != AES_KEY_LENGTH:
            raise ValueError("must be 43 characters (safe mode) or empty (plain mode)")
        if v:
            # Refused here rather than failing on every message at run time.
            try:
                base64.b64decode(v + "=", validate=True)
            except ValueError:
                raise ValueError("must be base64 (letters, digits, + and /) as shown in the WeChat console") from None
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        if not v:
            raise ValueError("must not be empty")
        return v

    @property
    def safe_mode(self) -> bool:
        return bool(self.encoding_aes_key)


class DatabaseConfig(_Section):
    url: str = "sqlite+aiosqlite:///data/distbot.db"

    @field_validator("url")
    @classmethod
    def _driver(cls, v: str) -> str:
        if not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v


class AdminToken(_Section):
    """A named token with some scopes ([[admin.tokens]]); admin.token is "admin" with all of them."""

    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    token: str = Field(min_length=16, max_length=256, pattern=r"^[!-~]+$")  # printable ASCII, no spaces
    scopes: tuple[Scope, ...] = Field(min_length=1)


class AdminConfig(_Section):
    token: str = DEFAULT_ADMIN_TOKEN
    tokens: tuple[AdminToken, ...] = ()  # besides `token`, which has every scope
    notify_openids: tuple[str, ...] = ()  # staff reminded of overdue tickets and risk

    @model_validator(mode="after")
    def _distinct_tokens(self) -> AdminConfig:
        names = [ADMIN] + [t.name for t in self.tokens]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"admin.tokens: the name {dup!r} is used twice (\"admin\" is admin.token's)")
        secrets = [self.token] + [t.token for t in self.tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("admin.tokens: every token must differ from the others and from admin.token")
        return self


class ServiceConfig(_Section):
    urgent_minutes: int = Field(30, ge=1)
    normal_minutes: int = Field(240, ge=1)
    priority_ranks: tuple[str, ...] = ()


class ReportsConfig(_Section):
    weekly: bool = True  # the weekly personal report, Monday 09:00 Asia/Shanghai


class ContestsConfig(_Section):
    monthly_star_prizes_fen: tuple[int, ...] = ()

    @field_validator("monthly_star_prizes_fen")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(p <= 0 for p in v):
            raise ValueError("every prize must be a positive number of fen")
        return v


class DistributionConfig(_Section):
    max_levels: int = Field(2, ge=1)
    freeze_days: int = Field(7, ge=0)
    min_withdraw_fen: int = Field(1000, ge=1)
    monthly_cap_fen: int = Field(0, ge=0)
    self_purchase: bool = False

    @field_validator("max_levels")
    @classmethod
    def _legal_limit(cls, v: int) -> int:
        if v > LEGAL_MAX_LEVELS:
            raise ValueError(f"must be at most {LEGAL_MAX_LEVELS}, the legal limit of commission levels")
        return v


class RankConfig(_Section):
    key: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1)
    rates: tuple[Decimal, ...] = Field(min_length=1, max_length=LEGAL_MAX_LEVELS)
    min_sales_fen: int = Field(0, ge=0)
    min_team_size: int = Field(0, ge=0)

    @field_validator("rates", mode="before")
    @classmethod
    def _exact_rates(cls, v: Any) -> Any:
        # Rates come from TOML as binary floats; take their shortest decimal spelling so that
        # floor(amount * rate) is exact (100 * 0.29 must be 29, not 28).
        if isinstance(v, (list, tuple)):
            return [Decimal(str(r)) if not isinstance(r, str) else Decimal(r) for r in v]
        return v

    @field_validator("rates")
    @classmethod
    def _rate_range(cls, v: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        for r in v:
            if not (Decimal(0) <= r < Decimal(1)):
                raise ValueError("every rate must be at least 0 and below 1")
        return v


class OutboxConfig(_Section):
    rate_per_second: float = Field(100.0, gt=0)
    batch_size: int = Field(50, ge=1, le=1000)
    max_attempts: int = Field(8, ge=1)
    lease_seconds: int = Field(60, ge=5)


class PayConfig(_Section):
    """WeChat Pay 商家转账 (CONTRACT §4.10): how approved withdrawals are paid out."""

    mode: Literal["off", "sandbox", "live"] = "off"
    mchid: str = ""
    merchant_serial: str = ""
    private_key_path: str = ""
    apiv3_key: str = ""
    public_key_id: str = ""
    public_key_path: str = ""
    api_base_url: str = ""
    transfer_scene_id: str = "1005"  # 佣金报酬
    max_transfer_fen: int = Field(20000, ge=MIN_TRANSFER_FEN)

    @field_validator("apiv3_key")
    @classmethod
    def _apiv3_key(cls, v: str) -> str:
        if v and len(v.encode()) != 32:
            raise ValueError("must be the 32-character APIv3 key set in the merchant console")
        return v

    @field_validator("public_key_id")
    @classmethod
    def _public_key_id(cls, v: str) -> str:
        if v and not v.startswith("PUB_KEY_ID_"):
            raise ValueError("must be WeChat Pay's public key id, PUB_KEY_ID_...")
        return v

    @field_validator("transfer_scene_id")
    @classmethod
    def _scene(cls, v: str) -> str:
        if v not in TRANSFER_SCENES:
            raise ValueError(f"must be one of the transfer scenes distbot reports for: {', '.join(TRANSFER_SCENES)}")
        return v

    @property
    def on(self) -> bool:
        return self.mode != "off"


class RiskConfig(_Section):
    """Risk rules (CONTRACT §4.12): thresholds of the flags the rules raise (domain.risk)."""

    enabled: bool = True  # false: no rule is evaluated (flags already raised stay)
    burst_orders: int = Field(20, ge=1)  # more than this many paid orders credited to one distributor ...
    burst_minutes: int = Field(10, ge=1, le=24 * 60)  # ... within this many minutes
    refund_ratio: float = Field(0.5, ge=0, lt=1)  # refunded share above this among the last refund_window orders
    refund_window: int = Field(20, ge=2, le=1000)
    signup_burst: int = Field(30, ge=1)  # direct sign-ups in one hour


class AlertsConfig(_Section):
    """[alerts] (CONTRACT §9): the built-in alerts for a pilot without Prometheus (domain.alerts),
    sent to admin.notify_openids and to [[webhooks]] subscribed to alert.raised / alert.resolved."""

    enabled: bool = False
    outbox_oldest_s: int = Field(300, ge=1)  # the oldest unsent outbox message is older than this
    webhook_oldest_s: int = Field(900, ge=1)  # the oldest undelivered webhook is older than this
    job_late_s: int = Field(3600, ge=1)  # a scheduled job has not run this long after it was due
    repeat_s: int = Field(3600, ge=60)  # the same alert at most once in this time


class BackupConfig(_Section):
    """[backup] (CONTRACT §9): the `backup` job's folder (relative to the config file's folder:
    domain.config.load_config makes it absolute), its cron schedule in Asia/Shanghai time ("" = off)
    and how many verified backups it keeps."""

    dir: str = Field("backups", min_length=1)
    schedule: str = "0 3 * * *"
    keep: int = Field(7, ge=1)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if v.strip():
            crontab_fields(v)  # ValueError: what is wrong with the line
        return v.strip()

    @property
    def trigger(self) -> dict[str, str]:
        """The schedule as CronTrigger arguments (none while it is off)."""
        return crontab_fields(self.schedule) if self.schedule else {}
def _exact(v: Any) -> Any:
    """A rate from TOML (a binary float) as its shortest decimal spelling, so that floor(amount ×
    rate) is exact (100 × 0.29 must be 29, not 28)."""
    return Decimal(str(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class RepeatReward(_Section):
    """[rewards.repeat] (高频购买奖励): a customer buying again through the same distributor within
    window_days of their previous paid order through them adds extra_rate at depth 0."""

    window_days: int = Field(30, ge=1, le=366)
    extra_rate: Decimal = Field(Decimal(0), ge=0, lt=1)

    @field_validator("extra_rate", mode="before")
    @classmethod
    def _exact_rate(cls, v: Any) -> Any:
        return _exact(v)


class TeamTier(_Section):
    """[[rewards.team_tiers]]: from this month's team sales on, this rate of all of them."""

    min_team_sales_fen: int = Field(ge=1)
    rate: Decimal = Field(gt=0, lt=1)

    @field_validator("rate", mode="before")
    @classmethod
    def _exact_rate(cls, v: Any) -> Any:
        return _exact(v)


class RewardsConfig(_Section):
    """[rewards] (CONTRACT §8): the plans beside the rank rates, all off by default. A share of
    sales, never of headcount."""

    repeat: RepeatReward | None = None
    team_cap_fen: int = Field(0, ge=0)  # the team bonus per distributor and month; 0 = no cap
    team_tiers: tuple[TeamTier, ...] = ()

    @field_validator("team_tiers")
    @classmethod
    def _monotone(cls, v: tuple[TeamTier, ...]) -> tuple[TeamTier, ...]:
        for lower, higher in zip(v, v[1:]):
            if higher.min_team_sales_fen <= lower.min_team_sales_fen:
                raise ValueError("tiers must be listed with strictly increasing min_team_sales_fen")
            if higher.rate < lower.rate:
                raise ValueError("a higher tier must not pay a lower rate (more sales never earn less)")
        return v

    @property
    def repeat_on(self) -> bool:
        return self.repeat is not None and self.repeat.extra_rate > 0


def default_ranks() -> tuple[RankConfig, ...]:
    return (
        RankConfig(key="junior", name="初级推广员", rates=(Decimal("0.10"), Decimal("0.03"))),
        RankConfig(key="gold", name="黄金合伙人", rates=(Decimal("0.15"), Decimal("0.05")),
                   min_sales_fen=1_000_000, min_team_size=10),
    )


WHSEC_PREFIX = "whsec_"  # Standard Webhooks: the key is the base64 after it


class WebhookEvent(StrEnum):
    """The outgoing webhooks' event types (CONTRACT §4.11): an endpoint's `events` are read into
    them, and the code that emits one names its member (domain.webhook_events.emit), never the string."""

    DISTRIBUTOR_REGISTERED = "distributor.registered"
    COMMISSION_CREATED = "commission.created"
    COMMISSION_REVERSED = "commission.reversed"
    WITHDRAWAL_PAID = "withdrawal.paid"
    ALERT_RAISED = "alert.raised"  # the built-in alerts (CONTRACT §9): only for endpoints that name them
    ALERT_RESOLVED = "alert.resolved"


ALERT_EVENTS = (WebhookEvent.ALERT_RAISED, WebhookEvent.ALERT_RESOLVED)
# What an endpoint that names no `events` gets: the business events, not the operators' alerts.
WEBHOOK_EVENTS = tuple(e for e in WebhookEvent if e not in ALERT_EVENTS)


class WebhookConfig(_Section):
    """[[webhooks]]: an endpoint, the secret its deliveries are signed with, the events it wants."""

    url: str
    secret: str = Field(min_length=16)  # or the Standard Webhooks form whsec_<base64 of 16+ bytes>
    events: tuple[WebhookEvent, ...] = Field(WEBHOOK_EVENTS, min_length=1)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v) > 500:
            raise ValueError("must be an http:// or https:// URL of at most 500 characters")
        return v

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: str) -> str:
        if v.startswith(WHSEC_PREFIX):
            try:
                key = _whsec_key(v)
            except ValueError:
                raise ValueError("a whsec_ secret is base64 after the prefix (the Standard Webhooks form)") from None
            if len(key) < 16:
                raise ValueError("a whsec_ secret needs at least 16 bytes after the prefix")
        return v

    @property
    def hmac_key(self) -> bytes:
        """The key of the Standard Webhooks signature: a whsec_ secret's decoded bytes, else the
        secret's UTF-8 bytes (what the library's Webhook("whsec_" + base64(secret)) uses)."""
        return _whsec_key(self.secret) if self.secret.startswith(WHSEC_PREFIX) else self.secret.encode()


def _whsec_key(secret: str) -> bytes:
    b64 = secret.removeprefix(WHSEC_PREFIX)
    return base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
