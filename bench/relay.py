"""CPU per event of the outbox relay, by batch size, and of the one-statement writes.

    python -m bench.relay [--events 600] [--batches 1,5,10,25]

On a throwaway PostgreSQL database (``BENCH_POSTGRES_URL``, default the local
server) with the orders schema, and the local RabbitMQ (``BENCH_RABBIT``):

- the relay: writes ``n`` events, then relays them as one batch (the
  relay's statements, one publish each and one wait for the broker's
  confirms, to an exchange with no queue bound, so nothing is kept), and
  prints the CPU microseconds of this process per event, for each batch size;
- the order write: ``orders.logic.create_order`` for a known user on the
  autocommit connection (one prepared statement), and the PostgreSQL backend's
  own CPU per order (read from ``/proc``, so only on this machine's server).

A micro-benchmark, to A/B one lever at a time (run it before and after, from
two checkouts): ``make bench`` measures the whole system.
"""

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

from alembic import command  # noqa: E402
from kombu import Connection, Exchange  # noqa: E402
from nameko_sqlalchemy.database import Session  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from orders import logic  # noqa: E402
from orders.models import OutboxEvent  # noqa: E402
from shared.db import engine_for  # noqa: E402
from shared.migrate import alembic_config  # noqa: E402
from shared.outbox import BatchPublisher, OutboxWriter, relay_pending  # noqa: E402

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT = f"amqp://guest:guest@{os.environ.get('BENCH_RABBIT', '127.0.0.1:5672')}/"
ORDER = {
    "user_id": 1,
    "status": "pending",
    "items": [{"sku": "BENCH-1", "quantity": 2, "unit_price": "19.99"}],
    "total": "39.98",
    "currency": "EUR",
}
HEADERS = {"nameko.call_id_stack": ["gateway.create_order.1"], "nameko.request_id": "r-1"}


def relay_cpu_per_event(session_factory, publish_all, batch, events):
    writer = OutboxWriter(OutboxEvent, headers=HEADERS)
    cpu = 0.0
    for _ in range(max(1, events // batch)):
        with session_factory() as session:
            for n in range(batch):
                writer.add(session, "order_created", {"order_id": n, **ORDER})
            session.commit()
        started = time.process_time()
        relay_pending(session_factory, OutboxEvent, publish_all, batch)
        cpu += time.process_time() - started
    return cpu / (max(1, events // batch) * batch) * 1e6


def backend_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def order_cpu(uri, count):
    """CPU microseconds per order: of this process, and of its PostgreSQL backend."""
    engine = engine_for(uri, isolation_level="AUTOCOMMIT")
    items = [{"sku": "BENCH-1", "quantity": 2, "unit_price": "19.99"}]
    with engine.connect() as connection:
        backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        outbox = OutboxWriter(OutboxEvent, headers=HEADERS)
        logic.create_order(None, outbox, None, 1, items, None, autocommit=connection)  # prepares
        server, client = backend_cpu_seconds(backend), time.process_time()
        for _ in range(count):
            logic.create_order(None, outbox, None, 1, items, str(uuid.uuid4()), connection)
        client = (time.process_time() - client) / count * 1e6
        try:
            server = (backend_cpu_seconds(backend) - server) / count * 1e6
        except OSError:
            server = float("nan")  # the server runs elsewhere
    engine.dispose()
    return client, server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--batches", default="1,5,10,25")
    args = parser.parse_args()

    name = f"bench_relay_{uuid.uuid4().hex[:8]}"
    admin = engine_for(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    uri = engine_for(POSTGRES).url.set(database=name).render_as_string(hide_password=False)
    exchange = Exchange(f"bench-relay-{uuid.uuid4().hex[:8]}", type="topic", durable=False)
    publish_all = BatchPublisher(RABBIT, exchange, "json")
    engine = engine_for(uri)
    try:
        command.upgrade(alembic_config("orders", uri), "head")
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO customers (user_id) VALUES (1)"))
        session_factory = sessionmaker(bind=engine, class_=Session)
        for batch in [int(n) for n in args.batches.split(",")]:
            cpu = relay_cpu_per_event(session_factory, publish_all, batch, args.events)
            print(f"relay, batch of {batch:3d}: {cpu:6.0f} us of CPU per event")
        client, server = order_cpu(uri, args.events)
        print(
            f"create_order, one statement: {client:6.0f} us CPU here, {server:6.0f} in PostgreSQL"
        )
    finally:
        publish_all.close()
        with Connection(RABBIT) as connection:
            exchange(connection.default_channel).delete()
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
