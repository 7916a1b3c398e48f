from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import UTCDateTime
from shared.events import ProcessedEventMixin
from shared.outbox import OutboxMixin, utcnow


class Base(DeclarativeBase):
    pass


def cents_to_decimal(cents):
    return Decimal(cents).scaleb(-2)


class Order(Base):
    """An order; money is kept in integer cents, so sums are exact on every backend."""

    __tablename__ = "orders"
    # the idempotency guarantee: a second order with the same key cannot be written,
    # whatever the race (NULL keys never collide)
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_id_idempotency_key"),
        # pages are in id order: a user's page, or all orders of one status,
        # walks these instead of the primary key filtering out everyone else's
        Index("ix_orders_user_id_id", "user_id", "id"),
        Index("ix_orders_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    # 100 items x 1000 x 1,000,000.00 is 10^13 cents: more than 32 bits
    total_cents: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    items: Mapped[list["OrderItem"]] = relationship(
        order_by="OrderItem.position", lazy="selectin", cascade="all, delete-orphan"
    )

    @property
    def total(self):
        return cents_to_decimal(self.total_cents)


class OrderItem(Base):
    __tablename__ = "order_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    # the items come back in the order the client gave them
    position: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(BigInteger)

    @property
    def unit_price(self):
        return cents_to_decimal(self.unit_price_cents)


class Customer(Base):
    """A user as orders knows them: who may order, fed by the users service's events.

    ``user_created`` adds a row, ``user_deleted`` turns it into a tombstone
    (``deleted_at`` set), which stays so that nothing can bring the user back.
    A user orders has not heard of yet is asked of the users service once, and
    then recorded here (see ``orders.logic.create_order``).
    """

    __tablename__ = "customers"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OutboxEvent(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass
