"""The consumer side of events: idempotency by ``event_id``.

A handler records the ``event_id`` it processed in the same transaction as its
effect; a redelivered event finds its id already there and changes nothing.
"""

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.outbox import utcnow


class ProcessedEventMixin:
    """Columns of the ``processed_events`` table; each consumer maps it on its ``Base``."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
