"""SQLAlchemy 2 typed models. Money is integer fen everywhere."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, MetaData, String, Text, true
from sqlalchemy import text as sql_text
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # The text SQLite's DATETIME type writes ("2026-11-26 01:40:00.000000"), formatted here
        # instead of by the driver type's processor, a dict and a format a value (order events bind
        # a dozen).
        def process(value: datetime | None) -> str | None:
            utc = self.process_bind_param(value, dialect)
            return None if utc is None else utc.isoformat(" ", "microseconds")[:26]
        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite keeps the UTC time as text ("2026-11-26 01:40:00.000000"): one parse, aware
        # at once, instead of the driver type's parse and then process_result_value.
        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)
        return process

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON}


class DistributorStatus(StrEnum):
    ACTIVE = "active"
    EXITED = "exited"
    SUSPENDED = "suspended"  # by an admin (CONTRACT §4.12): earns nothing, cannot withdraw; reinstated to active


class BoundBy(StrEnum):
    """How a distributor came to their inviter when they registered (团队 shows it)."""

    SCAN = "scan"  # the inviter's poster QR code: the follower's scene
    CODE = "code"  # the inviter's 推广码 typed after 注册
    LINK = "link"  # a link that carries the code (kept for the share pages: none binds through one yet)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    KEPT = "kept"  # waiting for the user's next message: WeChat's quota allows no message now (domain.quota)


class Follower(Base):
    """Anyone who has followed the account, registered or not."""

    __tablename__ = "followers"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscribed: Mapped[bool] = mapped_column(default=True)
    followed_at: Mapped[datetime | None]
    unfollowed_at: Mapped[datetime | None]
    # The last QR scene seen (an inviter's code); used when the follower registers.
    scene: Mapped[str | None] = mapped_column(String(64))
    # WeChat's customer-service quota as we know it (domain.quota): the grant the follower's last
    # message or action opened at last_interaction_at, its kind and how many of it are used.
    last_interaction_at: Mapped[datetime | None]
    grant_kind: Mapped[str] = mapped_column(String(8), default="message", server_default="message")
    grant_used: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime]


class Distributor(Base):
    __tablename__ = "distributors"
    # Distributors by rank (the 概览's chart, the audiences' sizes): a count of this index. Active
    # direct invitees per inviter (the 分销员 list sorted by team): a grouped count of the other.
    # A team's members, newest first, a page at a time (domain.team_pages): the third index.
    __table_args__ = (Index("ix_distributors_rank_status", "rank", "status"),
                      Index("ix_distributors_inviter_status", "inviter_id", "status"),
                      Index("ix_distributors_inviter_members", "inviter_id", "status", "registered_at", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(6), unique=True)
    openid: Mapped[str] = mapped_column(String(64), unique=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(40), index=True)  # the console's search
    inviter_id: Mapped[int | None] = mapped_column(ForeignKey("distributors.id"), index=True)
    bound_by: Mapped[str | None] = mapped_column(String(8))  # BoundBy; None without an inviter (or from before)
    rank: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=DistributorStatus.ACTIVE)
    registered_at: Mapped[datetime] = mapped_column(index=True)  # the console's new distributors
    exited_at: Mapped[datetime | None]
    # When the first order credited to them was paid (recorded by the order-event batch): the funnel.
    first_sale_at: Mapped[datetime | None]
    # False after 退订周报 (the weekly report is not sent), True again after 订阅周报.
    weekly_report: Mapped[bool] = mapped_column(default=True, server_default=true())

    inviter: Mapped[Distributor | None] = relationship(remote_side=[id], lazy="raise")


class ConversationState(Base):
    """Where a follower is in a multi-step conversation (e.g. registration)."""

    __tablename__ = "conversation_states"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    expires_at: Mapped[datetime]


class ProcessedMessage(Base):
    """Dedupe key of every processed WeChat delivery, with the reply it got."""

    __tablename__ = "processed_messages"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    openid: Mapped[str] = mapped_column(String(64))
    # The reply as a JSON value (see domain.messages); None: answered "success", sent later.
    reply: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(index=True)


class SignedQueryRow(Base):
    """A signed query of plain mode (wechat.replays) and the digest of the one body it is good for.
    The key starts with the query's timestamp, zero-padded: new keys land at the end of the key
    index and a prune deletes a prefix. No rowid on SQLite: the key index is the table."""

    __tablename__ = "signed_queries"
    __table_args__ = {"sqlite_with_rowid": False}

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # "<timestamp, 10 digits>:<signature>"
    body_digest: Mapped[str] = mapped_column(String(64))  # SHA-256, hex


class JobRun(Base):
    """The last run of each scheduled job, shared by every process (GET /api/jobs, catching up)."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[datetime | None]  # when the last finished run started
    last_status: Mapped[str | None] = mapped_column(String(16))  # "ok" or "error"
    last_error: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[int | None]
    running_since: Mapped[datetime | None]
    runs: Mapped[int] = mapped_column(default=0)


class AccessToken(Base):
    """The one access token of the account, shared by every process."""

    __tablename__ = "access_tokens"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(600))
    expires_at: Mapped[datetime]
    refreshed_at: Mapped[datetime]


class OutboxBody(Base):
    """A message sent to many (a campaign): stored once, its outbox rows point to it."""

    __tablename__ = "outbox_bodies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The message as a JSON value (see domain.messages), with an optional "template" fallback.
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class OutboxMessage(Base):
    """A message to a user that is not a passive reply, written with the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),
                      Index("ix_outbox_body", "body_id", "status"),
                      # the rows kept for a user's next message (few): found by openid when they write
                      Index("ix_outbox_kept", "openid", sqlite_where=sql_text("status = 'kept'"),
                            postgresql_where=sql_text("status = 'kept'")))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    openid: Mapped[str] = mapped_column(String(64))
    # The message as a JSON value (see domain.messages); a template fallback is derived from it.
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    errcode: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # Which delivery path succeeded: "custom", "template" or "mass".
    channel: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]
    # A message shared by many rows (payload then holds only what is the row's own).
    body_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_bodies.id"))
    # WeChat's msg_id of a mass send: its MASSSENDJOBFINISH event (mass_reports) names it.
    msg_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
