from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime
from shared.events import ProcessedEventMixin
from shared.outbox import OutboxMixin, utcnow


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    # SQLite would otherwise reuse the id of a deleted last user
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # stored lower-cased: the unique index makes emails unique whatever the case
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default="user")
    # read model, fed by order events
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    # raised by a password or role change: the gateway refuses tokens of an older version
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OutboxEvent(OutboxMixin, Base):
    pass


class RefreshToken(Base):
    """A refresh token the gateway issued, by its ``jti``.

    The state of refresh tokens lives here, not in a gateway's memory, so that
    rotation holds across gateway restarts and replicas. Deleting the user
    deletes its tokens.
    """

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # set when the token was exchanged for a new pair: it can never be used again
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProcessedEvent(ProcessedEventMixin, Base):
    pass


class LoginFailure(Base):
    """One failed login, counted against a throttle key (an email or a client address).

    Kept here, not in a gateway's memory, so every gateway replica counts the
    same failures (see :mod:`users.logins`).
    """

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_failed_at", "key", "failed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LoginLock(Base):
    """A throttle key refused until ``locked_until``."""

    __tablename__ = "login_locks"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime)
