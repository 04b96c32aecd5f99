"""Admin console sessions, server-side (the cookie holds a random token, the table its hash), and
the programme's totals per day that the console's 概览 reads."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token, hex
    csrf: Mapped[str] = mapped_column(String(64))  # the token every form of this session carries
    actor: Mapped[str] = mapped_column(String(64))  # how records name this session: "console:<8 hex>"
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(index=True)


class DailyTotals(Base):
    """The programme per China-time calendar day, kept by the order-event batch that changes it
    (domain.dashboard.add_to_days): sales and orders on the day the order was paid (a later refund
    or cancellation moves that day's figures), commission net of reversals on the day it was
    posted, first sales on the day they were recorded. 30 days of the chart are 30 rows."""

    __tablename__ = "daily_totals"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sales_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    orders: Mapped[int] = mapped_column(Integer, default=0)
    commission_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    first_sales: Mapped[int] = mapped_column(Integer, default=0)
