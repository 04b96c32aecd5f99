"""Admin console sessions, server-side: the cookie holds a random token, the table its hash."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token, hex
    csrf: Mapped[str] = mapped_column(String(64))  # the token every form of this session carries
    actor: Mapped[str] = mapped_column(String(64))  # how records name this session: "console:<8 hex>"
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(index=True)
