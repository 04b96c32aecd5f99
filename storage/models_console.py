"""Admin console sessions, server-side (the cookie holds a random token, the table its hash), the
staff accounts that sign in as persons, the console's recent sign-in tries per client, the programme's totals per day that the console's
概览 reads, and the audit trail of admins' changes."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class StaffAccount(Base):
    """A person who signs in to the console with a name and password (domain.staff); their roles
    are the scopes their sessions hold. Never deleted: disabled, so the audit trail's names stay theirs."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)  # the audit trail's token_name
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, with its parameters and salt
    roles: Mapped[str] = mapped_column(String(64))  # scopes (kit.scopes), space-separated
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    totp_secret: Mapped[str | None] = mapped_column(String(64))  # a second factor, when set
    created_at: Mapped[datetime]
    last_sign_in_at: Mapped[datetime | None]


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token, hex
    csrf: Mapped[str] = mapped_column(String(64))  # the token every form of this session carries
    actor: Mapped[str] = mapped_column(String(64))  # how records name this session: "console:<8 hex>:<token name>"
    token_name: Mapped[str] = mapped_column(String(32), server_default="admin")  # the token it signed in with
    scopes: Mapped[str] = mapped_column(String(64), server_default="admin")  # that token's scopes, space-separated
    # kit.scopes.fingerprint of that token (its name, value and scopes) when it signed in: the session
    # ends once the configured token of that name has another (removed, replaced, scopes changed).
    fingerprint: Mapped[str] = mapped_column(String(64), server_default="")
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(index=True)
    # A person's session (None: a token's): its fingerprint is then of the account (kit.scopes.
    # person_fingerprint), and it ends when the account is disabled or its password or roles change.
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))


class SignInTry(Base):
    """A console sign-in try of one client (kit.sign_in): written when the try starts, deleted when
    it succeeds, kept while it counts (10 minutes) when it failed; every process counts the same."""

    __tablename__ = "sign_in_tries"
    __table_args__ = (Index("ix_sign_in_tries_client_at", "client", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    client: Mapped[str] = mapped_column(String(64))  # the client's address (kit.sign_in.client_address)
    at: Mapped[datetime] = mapped_column(index=True)


class DailyTotals(Base):
    """The programme per China-time calendar day, kept by the order-event batch that changes it
    (domain.dashboard.add_to_days): sales and orders on the day the order was paid (a later refund
    or cancellation moves that day's figures), commission net of reversals and first sales on the
    day their order was paid too. 30 days of the chart are 30 rows."""

    __tablename__ = "daily_totals"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sales_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    orders: Mapped[int] = mapped_column(Integer, default=0)
    commission_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    first_sales: Mapped[int] = mapped_column(Integer, default=0)


class AuditEntry(Base):
    """One request that meant to change something (CONTRACT §4.11): an /api POST/PUT/PATCH/DELETE or a
    console form, by a known token, with the status it was answered with (refusals too). Written in
    the unit of work of the change it records when there is one (kit.auditing); newest first by id."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    token_name: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))  # as actor_of names it: "token:shop", "console:<8 hex>:admin"
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    status: Mapped[int] = mapped_column(Integer)
    summary: Mapped[str] = mapped_column(String(200))
    object_id: Mapped[str | None] = mapped_column(String(128), index=True)
