"""The built-in alerts (CONTRACT §9, domain.alerts): one row per condition ever raised, so that a
restart neither sends an alert again within repeat_s nor forgets to tell when it cleared."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId


class Alert(Base):
    """A condition (the outbox backs up, a job is late, ...) while it holds and after: raised when
    found, told again every repeat_s while it holds, resolved (and told) when it clears; raised
    again on the same row when it comes back."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(96), unique=True)  # "outbox", "job-late:<job>", ...
    text: Mapped[str] = mapped_column(Text)  # what is wrong, as last told
    raised_at: Mapped[datetime]
    last_sent_at: Mapped[datetime]
    sends: Mapped[int] = mapped_column(default=0)  # messages told so far (each send's outbox key has it)
    resolved_at: Mapped[datetime | None]  # NULL while the condition holds
