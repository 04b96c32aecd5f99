"""The programme settings changed at runtime (CONTRACT §10): one row per change, with who, why,
when and the values it set; the latest value of each key wins over config.toml (domain.settings)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class SettingsChange(Base):
    """One change of the programme settings: `values` maps dotted keys ("distribution.freeze_days",
    "ranks.gold.rates") to what it set them to. Rows are never changed or deleted (the history);
    every process polls the highest id to know when to read them again (kit.live_settings)."""

    __tablename__ = "settings_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    by: Mapped[str] = mapped_column(String(64))  # as actor_of names who acted: "admin", "console:<8 hex>:<name>"
    reason: Mapped[str] = mapped_column(String(200))
    values: Mapped[dict[str, Any]]
