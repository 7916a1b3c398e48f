"""Set up RabbitMQ for the services: the vhost's topology and one least-privileged user each.

    python -m scripts.broker_setup

The one-shot step of docker-compose.yml (its ``broker-setup`` service) and of the
Kubernetes ``broker-setup`` Job. Through the management HTTP API, as an
administrator, it

1. imports ``rabbitmq/definitions.json`` (vhost, exchanges, queues, bindings,
   policies; no users, no secrets) into the services' vhost;
2. creates or updates one user per service of :data:`SERVICES`, with its
   password, then its topic permissions, then its permissions (in that order,
   so a new user never holds permissions without their topic limits).

Everything is a PUT or an upsert: running it again changes nothing, except a
password that changed in the environment (that is how one rotates it).

Environment (nothing has a default but the URL, the user and the file):

- ``RABBITMQ_MANAGEMENT_URL`` (``http://rabbitmq:15672``), ``RABBITMQ_ADMIN_USER``
  (``admin``), ``RABBITMQ_ADMIN_PASSWORD``: the administrator it works as;
- ``USERS_AMQP_URI``, ``ORDERS_AMQP_URI``, ``GATEWAY_AMQP_URI``: each service's
  own ``AMQP_URI``. The user name, password and vhost are read from it, so the
  URI a service connects with is the only place its password is written;
- ``RABBITMQ_DEFINITIONS`` (``rabbitmq/definitions.json``), ``WAIT_TIMEOUT``
  (seconds to wait for the management API, default 120).

The permission table (:data:`SERVICES`) is data: what each service answers,
calls, emits and subscribes to. :func:`permissions_of` turns one entry into
RabbitMQ's regexes; deploy/README.md shows the result. What it rests on:

- RPC (nameko): requests go to the topic exchange ``nameko-rpc`` with routing
  key ``<service>.<method>``; replies go to the same exchange with the caller's
  reply-queue key, a uuid4 string. A service that answers RPC may therefore
  send uuid keys, which never look like ``users.update_user``.
- Events: ``<source>.events`` (topic), routing key = the event type. A
  handler's queue is ``evt-<source>-<event>--<service>.<method>`` (BROADCAST:
  ``...-<32 hex>``, exclusive); its retries and dead letters go through the
  service's own direct exchange ``<service>.retries`` (see shared/events.py),
  never through the default exchange, on which no service may publish (that
  would reach any queue by name).
- RabbitMQ checks ``configure`` for declaring (nameko declares every exchange
  and queue it uses, also its source's events exchange), ``write`` on the
  exchange for publishing and on the queue for binding, ``read`` on the queue
  for consuming and on the exchange for binding; on a topic exchange, the
  topic ``write`` regex for a publish's routing key and the topic ``read``
  regex for a binding's key (queue.bind and unbind in AMQP 0-9-1).
"""

import json
import os
import re
import sys
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

import requests

from shared.events import dead_letter_queue_name, retries_exchange_name, retry_queue_name

RPC_EXCHANGE = "nameko-rpc"
# a caller's reply routing key (nameko: str(uuid.uuid4()))
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# a BROADCAST handler's queue suffix (nameko: uuid.uuid4().hex)
BROADCAST_ID = r"[0-9a-f]{32}"
METHOD = r"[a-z_][a-z0-9_]*"
# a topic permission that allows nothing useful (RabbitMQ's own idiom)
NOTHING = "^$"
DEFAULT_DEFINITIONS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rabbitmq", "definitions.json"
)
HTTP_TIMEOUT = 10


@dataclass(frozen=True)
class Subscription:
    """An event handler: ``method`` of the service handles ``event`` of ``source``."""

    source: str
    event: str
    method: str
    broadcast: bool = False  # nameko BROADCAST: a queue of its own per running instance


@dataclass(frozen=True)
class Service:
    """What one service does on the broker; everything else is refused."""

    name: str
    answers_rpc: bool = False
    calls: tuple[str, ...] = ()  # "users.get_user", or "users.*" for every method
    emits: tuple[str, ...] = ()  # event types on <name>.events
    subscribes: tuple[Subscription, ...] = field(default=())


SERVICES = {
    service.name: service
    for service in (
        Service(
            "users",
            answers_rpc=True,
            emits=("user_created", "user_updated", "user_deleted"),
            subscribes=(Subscription("orders", "order_created", "handle_order_created"),),
        ),
        Service(
            "orders",
            answers_rpc=True,
            calls=("users.get_user",),
            emits=("order_created", "order_status_changed"),
            subscribes=(
                Subscription("users", "user_created", "handle_user_created"),
                Subscription("users", "user_deleted", "handle_user_deleted"),
            ),
        ),
        Service(
            "gateway",
            calls=("users.*", "orders.*"),
            subscribes=(
                Subscription("users", "user_deleted", "on_user_deleted", broadcast=True),
                Subscription("users", "user_updated", "on_user_updated", broadcast=True),
            ),
        ),
    )
}


def events_exchange(service_name):
    return f"{service_name}.events"


def anchored(alternatives):
    """One regex matching exactly the alternatives (regexes themselves), or nothing."""
    alternatives = sorted(set(alternatives))
    return f"^({'|'.join(alternatives)})$" if alternatives else NOTHING


def handler_queue(service, subscription):
    """The regex of a handler's queue name(s), as nameko and shared/events.py name them."""
    base = re.escape(f"evt-{subscription.source}-{subscription.event}--{service.name}.")
    base += re.escape(subscription.method)
    if subscription.broadcast:
        return f"{base}-{BROADCAST_ID}"
    # its delay and dead-letter queues (shared/events.py)
    suffixes = (re.escape(retry_queue_name("")), re.escape(dead_letter_queue_name("")))
    return f"{base}({'|'.join(suffixes)})?"


def call_key(call):
    """``users.get_user`` -> its exact regex; ``users.*`` -> any method of users."""
    service, _, method = call.partition(".")
    return re.escape(service) + r"\." + (METHOD if method == "*" else re.escape(method))


def permissions_of(service, services=SERVICES):
    """``(permissions, topic_permissions)`` of one service, as the management API takes them.

    ``permissions``: ``{"configure", "write", "read"}`` regexes over exchange and
    queue names. ``topic_permissions``: ``{exchange: {"write", "read"}}`` over
    routing keys, for ``nameko-rpc`` and the events exchange of every service
    that emits events, used or not (on an exchange where a user has no topic
    permission, RabbitMQ lets any routing key through).
    """
    uses_rpc = service.answers_rpc or bool(service.calls)
    pooled = [s for s in service.subscribes if not s.broadcast]
    queues = [handler_queue(service, s) for s in service.subscribes]
    if service.answers_rpc:
        queues.append(re.escape(f"rpc-{service.name}"))
    if service.calls:
        queues.append(re.escape(f"rpc.reply-{service.name}-") + UUID)

    published = [RPC_EXCHANGE] * uses_rpc  # requests and replies
    if service.emits:
        published.append(events_exchange(service.name))
    if pooled:
        published.append(retries_exchange_name(service.name))
    bound_from = [RPC_EXCHANGE] * uses_rpc
    bound_from += [events_exchange(s.source) for s in service.subscribes]
    if pooled:
        bound_from.append(retries_exchange_name(service.name))

    escaped = lambda names: [re.escape(name) for name in names]  # noqa: E731
    permissions = {
        # nameko declares everything it uses, the exchanges it binds from too
        "configure": anchored(escaped(published + bound_from) + queues),
        # write on a queue is what binding it needs
        "write": anchored(escaped(published) + queues),
        "read": anchored(escaped(bound_from) + queues),
    }

    rpc_write = [call_key(call) for call in service.calls]
    rpc_read = []
    if service.answers_rpc:
        rpc_write.append(UUID)  # replies
        rpc_read.append(re.escape(f"{service.name}.*"))  # nameko's binding of rpc-<name>
    if service.calls:
        rpc_read.append(UUID)  # the binding of its reply queue
    topics = {RPC_EXCHANGE: {"write": anchored(rpc_write), "read": anchored(rpc_read)}}
    for source in (name for name, other in services.items() if other.emits):
        exchange = events_exchange(source)
        sent = service.emits if source == service.name else ()
        heard = [s.event for s in service.subscribes if s.source == source]
        topics[exchange] = {"write": anchored(escaped(sent)), "read": anchored(escaped(heard))}
    return permissions, topics


@dataclass(frozen=True)
class Account:
    """A service's broker account, read from its AMQP URI."""

    user: str
    password: str
    vhost: str


def account_from_uri(uri):
    """One AMQP URI, or a ';'-separated failover list whose addresses share user,
    password and vhost (what a service of a cluster connects with)."""
    accounts = {_account_from_one(part.strip()) for part in uri.split(";") if part.strip()}
    if len(accounts) != 1:
        raise ValueError("the addresses of a failover AMQP URI differ in user, password or vhost")
    (account,) = accounts
    return account


def _account_from_one(uri):
    parts = urlsplit(uri)
    if not parts.username or not parts.password:
        raise ValueError("an AMQP URI without a user and password")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return Account(unquote(parts.username), unquote(parts.password), vhost)


class Management:
    """The few management API calls this needs; any error status raises."""

    def __init__(self, url, user, password):
        self.base = url.rstrip("/") + "/api"
        self.session = requests.Session()
        self.session.auth = (user, password)

    def call(self, method, path, body=None):
        response = self.session.request(
            method, f"{self.base}/{path}", json=body, timeout=HTTP_TIMEOUT
        )
        if response.status_code >= 400:
            raise RuntimeError(
                f"{method} /api/{path}: {response.status_code} {response.text[:300]}"
            )
        return response

    def check(self):
        self.call("GET", "overview")


def definitions_for(vhost, definitions):
    """The topology part of a definitions file, moved to ``vhost``; users refused."""
    if definitions.get("users") or definitions.get("permissions"):
        raise ValueError("the definitions file must hold no users and no permissions")
    moved = {"vhosts": [{"name": vhost}]}
    for section in ("exchanges", "queues", "bindings", "policies"):
        moved[section] = [{**item, "vhost": vhost} for item in definitions.get(section, [])]
    return moved


def apply(management, accounts, definitions, services=SERVICES):
    """Import the topology, then create each service's user and permissions.

    ``accounts``: ``{service name: Account}``, every service of ``services``,
    all in one vhost.
    """
    vhosts = {account.vhost for account in accounts.values()}
    if set(accounts) != set(services) or len(vhosts) != 1:
        raise ValueError(f"need one account per service {sorted(services)}, all in one vhost")
    (vhost,) = vhosts
    management.call("POST", "definitions", definitions_for(vhost, definitions))
    for name, account in sorted(accounts.items()):
        permissions, topics = permissions_of(services[name], services)
        user = quote(account.user, safe="")
        where = f"{quote(vhost, safe='')}/{user}"
        management.call("PUT", f"users/{user}", {"password": account.password, "tags": ""})
        for exchange, topic in topics.items():
            management.call("PUT", f"topic-permissions/{where}", {"exchange": exchange, **topic})
        management.call("PUT", f"permissions/{where}", permissions)
        print(f"broker-setup: {name} connects as {account.user!r} to vhost {vhost!r}", flush=True)


def weak_password_problem(name, password):
    if len(password) < 16 or password.lower().startswith("change-me"):
        return f"the {name} broker password is an example or shorter than 16 characters"
    return None


def main():
    from scripts.wait_and_migrate import DEFAULT_MAX_INTERVAL, env_seconds, wait_for

    env = os.environ
    missing = [
        f"{name.upper()}_AMQP_URI" for name in SERVICES if not env.get(f"{name.upper()}_AMQP_URI")
    ]
    if not env.get("RABBITMQ_ADMIN_PASSWORD"):
        missing.append("RABBITMQ_ADMIN_PASSWORD")
    if missing:
        print(f"broker-setup: set {', '.join(missing)}", file=sys.stderr)
        return 1
    accounts = {name: account_from_uri(env[f"{name.upper()}_AMQP_URI"]) for name in SERVICES}
    if env.get("ENVIRONMENT", "production") not in ("development", "test"):
        problems = [weak_password_problem(n, a.password) for n, a in accounts.items()]
        if any(problems):
            print(f"broker-setup: {'; '.join(p for p in problems if p)}", file=sys.stderr)
            return 1
    with open(env.get("RABBITMQ_DEFINITIONS", DEFAULT_DEFINITIONS)) as stream:
        definitions = json.load(stream)
    management = Management(
        env.get("RABBITMQ_MANAGEMENT_URL", "http://rabbitmq:15672"),
        env.get("RABBITMQ_ADMIN_USER", "admin"),
        env["RABBITMQ_ADMIN_PASSWORD"],
    )
    try:
        wait_for(
            "RabbitMQ management API",
            management.check,
            env_seconds("WAIT_TIMEOUT", 120.0),
            env_seconds("WAIT_MAX_INTERVAL", DEFAULT_MAX_INTERVAL),
        )
        apply(management, accounts, definitions)
    except Exception as error:
        print(f"broker-setup: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
