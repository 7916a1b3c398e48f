"""EXPLAIN (ANALYZE, BUFFERS) of every hot query, as the services really send them.

The services' own functions (``orders.logic``, ``users.logic``, the outbox relay)
run against the seeded databases (see :mod:`bench.seed`); every statement they
send is explained just before it runs, inside a savepoint that is rolled back,
with the parameters it was sent with. Everything runs in one transaction per
database that is rolled back at the end, so the data is left as loaded.

Each statement's plan is checked for a sequential scan (the point of the
exercise: none on any hot path) and summed up as the indexes it used, the rows
it returned, its execution time and the buffers it touched (a warm run: each
statement is explained twice, the first run only warms the cache).

``python -m bench.explain`` makes its own throwaway databases, seeds them,
explains and drops them (about two minutes); ``--index "CREATE INDEX ..."``
(repeatable) creates an index in the orders database first, to see what it
changes. ``make bench-seeded`` calls :func:`explain_all` on its databases.
"""

import argparse
import json
import re
import sys
import uuid
from datetime import timedelta

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from bench import seed
from orders import logic as orders_logic
from orders.models import OutboxEvent as OrdersOutbox
from shared.db import engine_for
from shared.outbox import OutboxWriter, count_pending, purge_sent, relay_pending
from shared.pagination import encode_cursor
from shared.settings import ServiceSettings
from users import logic as users_logic

RETENTION = timedelta(hours=ServiceSettings.outbox_retention_hours)  # the setting's default
# EXECUTE: the prepared one-statement writes (shared.db.Prepared)
EXPLAINED = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "EXECUTE")


class Explainer:
    """Explains each statement sent on ``connection`` while a label is set."""

    def __init__(self, connection):
        self.connection = connection
        self.label = None
        self.results = []  # dicts: label, sql, plan (text), summary
        event.listen(connection, "before_cursor_execute", self._before)

    def session(self):
        """A session inside the outer transaction: its commits end savepoints only."""
        return Session(bind=self.connection, join_transaction_mode="create_savepoint")

    def run(self, label, function, *args, **kwargs):
        self.label = label
        try:
            return function(*args, **kwargs)
        finally:
            self.label = None

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        if self.label is None or not statement.lstrip().upper().startswith(EXPLAINED):
            return
        if executemany and isinstance(parameters, (list, tuple)):
            parameters = parameters[0]  # a plain executemany: the first row's statement
        # (an "insertmanyvalues" batch comes as one statement with every row's values)
        sql = cursor.mogrify(statement, parameters).decode()
        with cursor.connection.cursor() as explain:
            _explain(explain, sql)  # the first run only warms the cache
            plan = "\n".join(row[0] for row in _explain(explain, sql))
            tree = _explain(explain, sql, ", FORMAT JSON")[0][0][0]
        self.results.append(
            {"label": self.label, "sql": sql, "plan": plan, "summary": summarise(tree)}
        )


def _explain(cursor, sql, options=""):
    """``EXPLAIN (ANALYZE, BUFFERS)`` of ``sql``, whose effects are rolled back at once."""
    cursor.execute("SAVEPOINT bench_explain")
    try:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS{options}) {sql}")
        return cursor.fetchall()
    finally:
        cursor.execute("ROLLBACK TO SAVEPOINT bench_explain")
        cursor.execute("RELEASE SAVEPOINT bench_explain")


def _nodes(node):
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def summarise(tree):
    """Access paths, rows, time and buffers of one ``EXPLAIN (FORMAT JSON)`` result."""
    top = tree["Plan"]
    access = []
    for node in _nodes(top):
        kind = node["Node Type"]
        if "Index Name" in node:
            access.append(f"{kind} {node['Index Name']}")
        elif "Scan" in kind and "Relation Name" in node:
            access.append(f"{kind} {node['Relation Name']}")
        elif kind in ("Sort", "Incremental Sort"):
            access.append(kind)
    return {
        "access": access,
        "seq_scan": any(node["Node Type"] == "Seq Scan" for node in _nodes(top)),
        "rows": top.get("Actual Rows"),
        "ms": round(tree["Planning Time"] + tree["Execution Time"], 3),
        "execution_ms": round(tree["Execution Time"], 3),
        "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "rows_removed": sum(
            node.get("Rows Removed by Filter", 0) * node.get("Actual Loops", 1)
            for node in _nodes(top)
        ),
    }


def _cursor_before(order_ids, position):
    """The cursor of the page that starts at ``order_ids[position]``."""
    return encode_cursor(order_ids[position - 1])


def explain_orders(explainer):
    own = list(seed.order_ids_of(1))  # bench user 1's 5,000 orders, ascending
    middle = own[len(own) // 2]
    deep_user = _cursor_before(own, 4000)  # page 201 of 20
    deep_admin = encode_cursor(seed.ORDERS * 9 // 10)  # page 45,001 of 20
    with explainer.session() as session:
        explainer.run(
            "GET /v1/orders/{id}: get_order",
            orders_logic.get_order,
            session,
            middle,
            user_id=1,
        )
    with explainer.session() as session:
        explainer.run(
            "GET /v1/orders (user, page 201): list_orders",
            orders_logic.list_orders,
            session,
            user_id=1,
            cursor=deep_user,
        )
    with explainer.session() as session:
        explainer.run(
            "GET /v1/orders?status=delivered (user, deep): list_orders",
            orders_logic.list_orders,
            session,
            user_id=1,
            status="delivered",
            cursor=deep_user,
        )
    with explainer.session() as session:
        explainer.run(
            "GET /v1/orders?status=pending (user, first page): list_orders",
            orders_logic.list_orders,
            session,
            user_id=1,
            status="pending",
        )
    with explainer.session() as session:
        explainer.run(
            "GET /v1/orders (admin, page 45,001): list_orders",
            orders_logic.list_orders,
            session,
            cursor=deep_admin,
        )
    with explainer.session() as session:
        # pending orders are the last days' only: a filter on the id order reads past the rest
        explainer.run(
            "GET /v1/orders?status=pending (admin, first page): list_orders",
            orders_logic.list_orders,
            session,
            status="pending",
        )
    with explainer.session() as session:
        explainer.run(
            "GET /v1/orders?status=pending (admin, deep): list_orders",
            orders_logic.list_orders,
            session,
            status="pending",
            cursor=deep_admin,
        )
    with explainer.session() as session:
        explainer.run(
            "POST /v1/orders: create_order",
            orders_logic.create_order,
            session,
            OutboxWriter(OrdersOutbox),
            lambda user_id: True,
            1,
            [
                {"sku": "BENCH-1", "quantity": 2, "unit_price": "19.99"},
                {"sku": "BENCH-2", "quantity": 1, "unit_price": "5.00"},
            ],
            idempotency_key=str(uuid.uuid4()),
            # the service's way on PostgreSQL: one prepared statement
            autocommit=explainer.connection,
        )
    # the order above left one pending event: the relay's statements find it
    explainer.run(
        "outbox relay (orders): relay_pending",
        relay_pending,
        explainer.session,
        OrdersOutbox,
        lambda messages: set(),
        100,
    )
    explainer.run(
        "outbox backlog gauge (orders): count_pending",
        count_pending,
        explainer.session,
        OrdersOutbox,
    )
    explainer.run(
        "outbox purge, hourly (orders): purge_sent",
        purge_sent,
        explainer.session,
        OrdersOutbox,
        RETENTION,
    )
    with explainer.session() as session:
        explainer.run(
            "user_created handler (orders): record_user_created",
            orders_logic.record_user_created,
            session,
            {"event_id": str(uuid.uuid4()), "user_id": seed.USERS},
        )


def explain_users(explainer):
    with explainer.session() as session:
        explainer.run("GET /v1/users/me: get_user", users_logic.get_user, session, 1)
    with explainer.session() as session:
        explainer.run(
            "token check (rare): get_token_version", users_logic.get_token_version, session, 1
        )
    with explainer.session() as session:
        explainer.run(
            "order_created handler (users): record_order_created",
            users_logic.record_order_created,
            session,
            {"event_id": str(uuid.uuid4()), "user_id": 1},
            autocommit=explainer.connection,
        )


def explain_all(users_uri, orders_uri, indexes=(), out=print):
    """Explain every hot statement on the two databases; the results, also printed."""
    results = []
    for uri, explain in ((orders_uri, explain_orders), (users_uri, explain_users)):
        engine = engine_for(uri)
        try:
            with engine.connect() as connection:
                transaction = connection.begin()
                if explain is explain_orders:
                    for index in indexes:
                        connection.execute(text(index))
                        connection.execute(text("ANALYZE orders"))
                explainer = Explainer(connection)
                try:
                    explain(explainer)
                finally:
                    transaction.rollback()
                results.extend(explainer.results)
        finally:
            engine.dispose()
    print_results(results, out)
    return results


def _short(sql, width=110):
    sql = re.sub(r"\s+", " ", sql).strip()
    return sql if len(sql) <= width else sql[: width - 3] + "..."


def print_results(results, out=print):
    out("EXPLAIN (ANALYZE, BUFFERS) of the hot statements on the seeded databases (warm):")
    label = None
    for result in results:
        if result["label"] != label:
            label = result["label"]
            out(f"\n== {label}")
        out(f"-- {_short(result['sql'])}")
        for line in result["plan"].splitlines():
            out(f"   {line}")
    out("")
    header = (
        f"{'route or job: statement':66} {'rows':>5} {'removed':>7} {'ms':>7} {'bufs':>5}  access"
    )
    out(header)
    out("-" * (len(header) + 40))
    for result in results:
        summary = result["summary"]
        route = result["label"].split(":")[0]
        what = f"{route[:38]}: {_short(result['sql'], 66 - 2 - len(route[:38]))}"
        access = ", ".join(summary["access"]) or "(no scan)"
        flag = "  <-- SEQ SCAN" if summary["seq_scan"] else ""
        if summary["rows_removed"] > 100 * max(summary["rows"] or 0, 1):
            flag += "  <-- filters out most of what it reads"
        out(
            f"{what:66} {summary['rows']:>5} {summary['rows_removed']:>7} {summary['ms']:>7.3f} "
            f"{summary['buffers']:>5}  {access}{flag}"
        )
    seq = [result for result in results if result["summary"]["seq_scan"]]
    out(f"\nsequential scans: {len(seq) or 'none'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--index",
        action="append",
        default=[],
        help="a CREATE INDEX statement run on the orders database first (repeatable)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args()
    from bench.run import Stack  # here: bench.run imports this module

    stack = Stack()
    try:
        users_uri = stack.create_database("users")
        orders_uri = stack.create_database("orders")
        seed.load(users_uri, orders_uri)
        results = explain_all(users_uri, orders_uri, options.index)
    finally:
        stack.drop_databases()
        stack.remove_tmp()
    if options.json:
        with open(options.json, "w") as out:
            json.dump(results, out, indent=2)
    return 1 if any(result["summary"]["seq_scan"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
