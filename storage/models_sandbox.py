"""The sandbox's WeChat emulator remembers its users (sandbox mode only: sandbox/sim_store.py keeps
these; nothing of the product reads them), so that `make run` after a restart continues where a
simulated user left off: who they are, whether they follow, the customer-service quota WeChat
would count for them, and their chat, both ways."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId


class SandboxUser(Base):
    __tablename__ = "sandbox_users"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    place: Mapped[int]  # the order the simulator made its users in (its list's order)
    nickname: Mapped[str] = mapped_column(String(64))
    subscribed: Mapped[bool]
    last_event_time: Mapped[int] = mapped_column(BigInteger)  # CreateTime of their last event (epoch)
    quota: Mapped[dict[str, Any]]  # the emulator's grant: size, seconds, opened_at (epoch or null), used


class SandboxMessage(Base):
    """One item of a simulated user's timeline (what they sent, what the bot answered or pushed),
    as the simulator's page shows it; `id` is the emulator's sequence across users."""

    __tablename__ = "sandbox_messages"
    __table_args__ = (Index("ix_sandbox_messages_user", "openid", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    openid: Mapped[str] = mapped_column(String(64))
    item: Mapped[dict[str, Any]]
