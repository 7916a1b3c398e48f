"""Data volume for the seeded bench: 100k users and 1M orders, generated inside PostgreSQL.

Everything is ``INSERT ... SELECT FROM generate_series`` on the server (no rows
cross the wire but the per-user order counts), into the migrated, empty,
throwaway databases the bench creates. What is loaded, table by table:

orders database
- ``orders``: ``ORDERS`` orders, ids in the order of ``created_at``, spread evenly
  over the last year. Every ``BENCH_STRIDE``-th order belongs to one of the
  bench's users (ids 1..``BENCH_USERS``) in turn, so each has ``ORDERS /
  BENCH_STRIDE / BENCH_USERS`` orders (5,000) spread over the whole table; the
  rest go to the other users, skewed towards the older (lower) ids as real
  customers are (``random()**2``). Statuses follow the age: older than two weeks
  almost all delivered or cancelled, recent ones pending, paid or shipped. Every
  order has an ``Idempotency-Key``, as an API client sends one.
- ``order_items``: 1-4 per order (2.5 on average), with the order's total the
  sum of its items.
- ``customers``: one row per user (the read model fed by ``user_created``).
- ``outbox``: the last week's ``order_created`` events, sent (what retention keeps).
- ``processed_events``: one ``user_created`` per user.

users database
- ``users``: ``USERS`` users, ``order_count`` exactly the number of their orders
  above; the bench users are ids 1..``BENCH_USERS``, ``ADMIN_ID`` is an admin.
  One precomputed Argon2id hash serves every user (the bench logs in with it).
- ``processed_events``: one ``order_created`` per order (nothing purges them).

Sequences are moved past the loaded ids, and every table is vacuumed and analyzed
(as autovacuum would have done in production; without it autovacuum starts in
the middle of the measurement).
"""

import time
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from sqlalchemy import text

from orders.schemas import CURRENCY
from shared.db import engine_for
from shared.settings import PasswordHashSettings

USERS = 100_000
ORDERS = 1_000_000
BENCH_USERS = 8
BENCH_STRIDE = 25  # every 25th order is a bench user's: 40,000 orders, 5,000 each
ADMIN_ID = BENCH_USERS + 1
FIRST_OTHER = ADMIN_ID + 1  # the admin orders nothing
PASSWORD = "a bench password"


def email_of(user_id):
    return f"user{user_id}@example.com"


def bench_user_of(order_id):
    """The bench user an order id belongs to, or ``None`` (the rule of ``ORDERS_SQL``)."""
    if order_id % BENCH_STRIDE:
        return None
    return (order_id // BENCH_STRIDE) % BENCH_USERS + 1


def order_ids_of(bench_user):
    """The ids of a bench user's orders, ascending."""
    stride = BENCH_STRIDE * BENCH_USERS
    first = BENCH_STRIDE * (bench_user - 1) or stride
    return range(first, ORDERS + 1, stride)


# an order's items, from its id alone: ORDERS_SQL sums them, ITEMS_SQL writes them
ITEM_COUNT = "(1 + ({id} % 4))"
QUANTITY = "(1 + (({id} + pos) % 3))"
UNIT_PRICE = "(199 + (({id} * 31 + pos * 977) % 9800))"

ORDERS_SQL = f"""
INSERT INTO orders (id, user_id, status, currency, total_cents, idempotency_key,
                    created_at, updated_at)
SELECT g.i,
       CASE WHEN g.i % :stride = 0 THEN (g.i / :stride) % :bench_users + 1
            ELSE :first_other + floor(g.r_user * g.r_user * (:users - :first_other + 1))::int
       END,
       CASE WHEN g.age > 14 THEN CASE WHEN g.r_status < 0.88 THEN 'delivered' ELSE 'cancelled' END
            WHEN g.age > 3 THEN CASE WHEN g.r_status < 0.45 THEN 'delivered'
                                     WHEN g.r_status < 0.85 THEN 'shipped'
                                     WHEN g.r_status < 0.90 THEN 'paid'
                                     ELSE 'cancelled' END
            ELSE CASE WHEN g.r_status < 0.30 THEN 'pending'
                      WHEN g.r_status < 0.65 THEN 'paid'
                      WHEN g.r_status < 0.90 THEN 'shipped'
                      ELSE 'cancelled' END
       END,
       :currency,
       (SELECT sum({QUANTITY.format(id="g.i")} * {UNIT_PRICE.format(id="g.i")})
          FROM generate_series(0, {ITEM_COUNT.format(id="g.i")} - 1) AS pos),
       md5(g.i::text)::uuid::text,
       now() - make_interval(days => 1) * g.age,
       now() - make_interval(days => 1) * g.age
             + CASE WHEN g.age > 3 THEN interval '2 days' ELSE interval '0' END
FROM (SELECT i, random() AS r_user, random() AS r_status,
             365.0 * (:orders - i) / :orders AS age
        FROM generate_series(1, :orders) AS i) AS g
"""

ITEMS_SQL = f"""
INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents)
SELECT o.id, pos, 'SKU-' || ((o.id * 7 + pos * 13) % 5000),
       {QUANTITY.format(id="o.id")}, {UNIT_PRICE.format(id="o.id")}
FROM orders AS o, generate_series(0, {ITEM_COUNT.format(id="o.id")} - 1) AS pos
"""

ORDERS_OUTBOX_SQL = """
INSERT INTO outbox (event_id, event_type, payload, headers, created_at, sent_at, attempts)
SELECT md5('order_created' || o.id)::uuid::text, 'order_created',
       json_build_object('event_id', md5('order_created' || o.id)::uuid::text,
                         'occurred_at', o.created_at, 'order_id', o.id, 'user_id', o.user_id,
                         'status', 'pending', 'total', (o.total_cents / 100.0)::text,
                         'currency', o.currency)::text,
       '{}', o.created_at, o.created_at + interval '30 milliseconds', 1
FROM orders AS o
WHERE o.created_at > now() - interval '7 days'
ORDER BY o.id
"""

CUSTOMERS_SQL = """
INSERT INTO customers (user_id, deleted_at) SELECT g, NULL FROM generate_series(1, :users) AS g
"""

ORDERS_PROCESSED_SQL = """
INSERT INTO processed_events (event_id, event_type, processed_at)
SELECT md5('user_created' || g)::uuid::text, 'user_created',
       now() - interval '2 years' + interval '1 year' * g / :users
FROM generate_series(1, :users) AS g
"""

USERS_SQL = """
INSERT INTO users (id, email, name, password_hash, role, order_count, token_version,
                   created_at, updated_at)
SELECT g, 'user' || g || '@example.com', 'User ' || g, :password_hash,
       CASE WHEN g = :admin THEN 'admin' ELSE 'user' END,
       coalesce(c.n, 0), 0,
       now() - interval '2 years' + interval '1 year' * g / :users,
       now() - interval '2 years' + interval '1 year' * g / :users
FROM generate_series(1, :users) AS g
LEFT JOIN unnest(CAST(:ids AS int[]), CAST(:counts AS int[])) AS c(user_id, n) ON c.user_id = g
"""

USERS_PROCESSED_SQL = """
INSERT INTO processed_events (event_id, event_type, processed_at)
SELECT md5('order_created' || g)::uuid::text, 'order_created',
       now() - make_interval(days => 1) * 365.0 * (:orders - g) / :orders
FROM generate_series(1, :orders) AS g
"""

SEQUENCES = {
    "orders": ("orders", "order_items", "outbox"),
    "users": ("users", "outbox"),
}
TABLES = {
    "orders": ("orders", "order_items", "customers", "outbox", "processed_events"),
    "users": ("users", "processed_events"),
}


def password_hash(password=PASSWORD):
    """What the users service would store for ``password`` (its own Argon2id parameters)."""
    hasher = PasswordHasher(
        time_cost=PasswordHashSettings.password_hash_time_cost,
        memory_cost=PasswordHashSettings.password_hash_memory_kib,
        parallelism=1,
        type=Type.ID,
    )
    return hasher.hash(password)


def _run(engine, steps, timings):
    with engine.begin() as connection:
        # a throwaway database: losing the last commit on a crash costs nothing
        connection.execute(text("SET LOCAL synchronous_commit = off"))
        connection.execute(text("SELECT setseed(0.42)"))
        for name, sql, params in steps:
            started = time.monotonic()
            rows = connection.execute(text(sql), params).rowcount
            timings[name] = (rows, round(time.monotonic() - started, 1))


def _advance_sequences(engine, tables):
    with engine.begin() as connection:
        for table in tables:
            connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
            )


def _vacuum(engine, tables):
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection:
        for table in tables:
            connection.execute(text(f"VACUUM (ANALYZE) {table}"))


def load(users_uri, orders_uri, log=print):
    """Fill both databases; returns ``{step: (rows, seconds)}`` and the total under ``"total"``."""
    started = time.monotonic()
    timings = {}
    hashed = password_hash()
    params = {
        "users": USERS,
        "orders": ORDERS,
        "stride": BENCH_STRIDE,
        "bench_users": BENCH_USERS,
        "first_other": FIRST_OTHER,
        "currency": CURRENCY,
    }
    orders_engine, users_engine = engine_for(orders_uri), engine_for(users_uri)
    try:
        log(f"seeding: {ORDERS:,} orders with their items, {USERS:,} users ...")
        # users' processed events need nothing from orders: loaded beside them
        background = ThreadPoolExecutor(1)
        processed = background.submit(
            _run,
            users_engine,
            [("users.processed_events", USERS_PROCESSED_SQL, params)],
            timings,
        )
        _run(
            orders_engine,
            [
                ("orders.orders", ORDERS_SQL, params),
                ("orders.order_items", ITEMS_SQL, {}),
                ("orders.customers", CUSTOMERS_SQL, params),
                ("orders.outbox", ORDERS_OUTBOX_SQL, {}),
                ("orders.processed_events", ORDERS_PROCESSED_SQL, params),
            ],
            timings,
        )
        with orders_engine.connect() as connection:
            counts = connection.execute(
                text("SELECT user_id, count(*) FROM orders GROUP BY user_id")
            ).all()
        _run(
            users_engine,
            [
                (
                    "users.users",
                    USERS_SQL,
                    {
                        **params,
                        "admin": ADMIN_ID,
                        "password_hash": hashed,
                        "ids": [user_id for user_id, _ in counts],
                        "counts": [n for _, n in counts],
                    },
                ),
            ],
            timings,
        )
        processed.result()
        background.shutdown()
        _advance_sequences(orders_engine, SEQUENCES["orders"])
        _advance_sequences(users_engine, SEQUENCES["users"])
        timings["insert total"] = (None, round(time.monotonic() - started, 1))
        vacuum_started = time.monotonic()
        _vacuum(orders_engine, TABLES["orders"])
        _vacuum(users_engine, TABLES["users"])
        timings["VACUUM ANALYZE"] = (None, round(time.monotonic() - vacuum_started, 1))
    finally:
        orders_engine.dispose()
        users_engine.dispose()
    timings["total"] = (None, round(time.monotonic() - started, 1))
    for name, (rows, seconds) in timings.items():
        log(f"  {name:24} {'' if rows is None else f'{rows:>10,} rows'} {seconds:>8.1f} s")
    return timings
