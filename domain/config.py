"""The one typed, frozen configuration object: config.toml plus DISTBOT_<SECTION>__<KEY> overrides."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from domain.config_sections import (AES_KEY_LENGTH, DEFAULT_ADMIN_TOKEN, DEMO_TOKEN_PREFIX, PAY_KEY_FIELDS,
                                    SANDBOX_APP_ID, SANDBOX_APP_SECRET, SANDBOX_TOKEN, AdminConfig, AlertsConfig,
                                    BackupConfig, ContestsConfig, DatabaseConfig, DistributionConfig, OutboxConfig,
                                    PayConfig, RankConfig, ReportsConfig, RewardsConfig, RiskConfig, ServerConfig,
                                    ServiceConfig, WebhookConfig, WechatConfig, default_ranks)


class ConfigError(Exception):
    """A configuration problem, told as one sentence naming the key."""


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISTBOT_", env_nested_delimiter="__", extra="forbid", frozen=True,
        case_sensitive=False,
    )

    server: ServerConfig = ServerConfig()
    wechat: WechatConfig = WechatConfig()
    database: DatabaseConfig = DatabaseConfig()
    admin: AdminConfig = AdminConfig()
    distribution: DistributionConfig = DistributionConfig()
    ranks: tuple[RankConfig, ...] = Field(default_factory=default_ranks, min_length=1)
    outbox: OutboxConfig = OutboxConfig()
    service: ServiceConfig = ServiceConfig()
    reports: ReportsConfig = ReportsConfig()
    contests: ContestsConfig = ContestsConfig()
    pay: PayConfig = PayConfig()
    webhooks: tuple[WebhookConfig, ...] = ()
    risk: RiskConfig = RiskConfig()
    alerts: AlertsConfig = AlertsConfig()
    backup: BackupConfig = BackupConfig()
    rewards: RewardsConfig = RewardsConfig()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override the TOML file, which arrives as init kwargs.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        keys = [r.key for r in self.ranks]
        if len(set(keys)) != len(keys):
            raise ValueError("ranks: every rank needs a distinct key")
        unknown = [k for k in self.service.priority_ranks if k not in keys]
        if unknown:
            raise ValueError(f"service.priority_ranks: unknown rank {unknown[0]!r}; configured ranks: {', '.join(keys)}")
        refused = self._sandbox_defaults() if self.wechat.mode == "live" else []
        if refused:
            raise ValueError("; ".join(refused))
        urls = [w.url for w in self.webhooks]
        if len(set(urls)) != len(urls):
            raise ValueError("webhooks: each url once (give one endpoint all the events it wants)")
        if self.pay.mode == "live":
            missing = [k for k in PAY_KEY_FIELDS if not getattr(self.pay, k)]
            if missing:
                raise ValueError(f"pay.{missing[0]}: live payouts need it (from the WeChat Pay merchant console)")
        if self.pay.mode == "sandbox" and not self.pay.api_base_url and not self.sandbox:
            raise ValueError('pay.mode: "sandbox" needs wechat.mode "sandbox" (the emulator lives in the sandbox) '
                             "or pay.api_base_url")
        if self.pay.mode == "sandbox" and any(getattr(self.pay, k) for k in ("private_key_path", "public_key_path")) \
                and not all(getattr(self.pay, k) for k in PAY_KEY_FIELDS):
            missing = next(k for k in PAY_KEY_FIELDS if not getattr(self.pay, k))
            raise ValueError(f"pay.{missing}: give every key field, or none for the sandbox's own keys")
        return self

    def _sandbox_defaults(self) -> list[str]:
        """What live mode refuses, each naming its key: the sandbox's and the demo's values, which
        anyone who has read the repository knows (CONTRACT §7)."""
        w = self.wechat
        demo = next((t.name for t in self.admin.tokens if t.token.startswith(DEMO_TOKEN_PREFIX)), None)
        checks = [
            (self.admin.token in ("", DEFAULT_ADMIN_TOKEN),
             "admin.token: live mode needs a secret admin token, not the default"),
            (demo is not None, f"admin.tokens: live mode needs a secret token for {demo!r}, not the demo's"),
            (w.app_id == SANDBOX_APP_ID,
             "wechat.app_id: live mode needs the official account's AppID, not the sandbox's"),
            (w.app_secret in ("", SANDBOX_APP_SECRET), "wechat.app_secret: live mode needs the real AppSecret"),
            (w.token == SANDBOX_TOKEN,
             f"wechat.token: live mode needs the Token set in the WeChat console, not the sandbox's {SANDBOX_TOKEN!r}"),
            (len(w.encoding_aes_key) != AES_KEY_LENGTH,
             f"wechat.encoding_aes_key: live mode needs safe mode, the {AES_KEY_LENGTH}-character EncodingAESKey "
             "from the WeChat console"),
        ]
        return [message for wrong, message in checks if wrong]

    # ---- derived values -------------------------------------------------------------------
    @property
    def sandbox(self) -> bool:
        return self.wechat.mode == "sandbox"

    @property
    def api_base_url(self) -> str:
        if self.wechat.api_base_url:
            return self.wechat.api_base_url.rstrip("/") + "/"
        if self.sandbox:
            host = "127.0.0.1" if self.server.host in ("0.0.0.0", "::", "") else self.server.host
            return f"http://{host}:{self.server.port}/sandbox/cgi-bin/"
        return "https://api.weixin.qq.com/cgi-bin/"

    @property
    def pay_base_url(self) -> str:
        """WeChat Pay's host, or the built-in emulator's in sandbox mode (under /sandbox/pay/)."""
        if self.pay.api_base_url:
            return self.pay.api_base_url.rstrip("/") + "/"
        if self.pay.mode == "sandbox":
            host = "127.0.0.1" if self.server.host in ("0.0.0.0", "::", "") else self.server.host
            return f"http://{host}:{self.server.port}/sandbox/pay/"
        return "https://api.mch.weixin.qq.com/"

    @property
    def data_dir(self) -> Path:
        """Where files beside the database live (the sandbox's WeChat Pay keys): the SQLite
        file's folder, else ./data."""
        url = self.database.url
        if url.startswith("sqlite+aiosqlite:///") and url.removeprefix("sqlite+aiosqlite:///") not in ("", ":memory:"):
            return Path(url.removeprefix("sqlite+aiosqlite:///")).parent
        return Path("data")

    def rank(self, key: str) -> RankConfig:
        for r in self.ranks:
            if r.key == key:
                return r
        return self.ranks[0]


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int) or True)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "is not a known setting"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid configuration: " + "; ".join(parts)


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Read the TOML file (--config, $DISTBOT_CONFIG, ./config.toml) and apply env overrides."""
    chosen = path or os.environ.get("DISTBOT_CONFIG")
    data: dict[str, Any] = {}
    if chosen:
        p = Path(chosen)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
    else:
        p = Path("config.toml")
    if p.is_file():
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {p} is not UTF-8 text") from None
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    try:
        return _beside(Config(**data), p.parent)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


def _beside(config: Config, folder: Path) -> Config:
    """The config with [backup] dir made absolute: a relative one is in the config file's folder."""
    where = Path(config.backup.dir)
    if where.is_absolute():
        return config
    return config.model_copy(update={"backup": config.backup.model_copy(update={"dir": str(folder.resolve() / where)})})
