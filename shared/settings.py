"""One typed, frozen settings object per process, read from its YAML and checked once at start.

A service names its class with ``settings = SettingsProvider(cls)``. In ``setup``,
before anything connects, nameko's config dict (the YAML, its ``${ENV:default}``
placeholders resolved) becomes that object, or the process ends with one message
naming every key to fix and the variable that sets it. Extensions and providers
read :func:`settings_of` (read once per container), never ``config.get(KEY, default)``.

One field per setting: its type, its one default (none: required), its key and
variable, its check (``parse`` returns the value as the type or raises
:class:`Invalid`) and what it is for::

    rpc_timeout: float = setting("RPC_TIMEOUT", 5.0, parse=positive_seconds, doc="...")

Here: what every process reads (:class:`Settings`), what users and orders read
(:class:`ServiceSettings`), what a service that hashes passwords reads
(:class:`PasswordHashSettings`); ``gateway.settings`` and ``users.settings`` add
their own. nameko itself still reads its keys (``AMQP_URI``, ``WEB_SERVER_ADDRESS``,
``max_workers``) from the dict, as do this project's subclasses of its extensions
where they hand ``AMQP_URI`` on to it; they are checked here like any other.
"""

import logging
from dataclasses import MISSING, dataclass, field, fields

from nameko.constants import DEFAULT_MAX_WORKERS
from nameko.extensions import DependencyProvider
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared.queues import CLASSIC, QUEUE_TYPES

log = logging.getLogger(__name__)

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
SOURCE = "source"  # the key of a field's Source in its metadata


class ConfigError(Exception):
    """The config cannot run a service; the message says what to set."""

    problems = ()

    @classmethod
    def listing(cls, service_name, problems):
        """One error naming every problem, a line each."""
        where = f" in the {service_name} service" if service_name else ""
        lines = "\n".join(f"  - {problem}" for problem in problems)
        error = cls(f"config error{where}:\n{lines}")
        error.problems = tuple(problems)
        return error


class Invalid(ValueError):
    """What is wrong with a value, as the words after its key: ``must be ..., got 0``."""


@dataclass(frozen=True)
class Source:
    """Where a field's value comes from, how it is checked, and what it is for."""

    key: tuple  # its path in the YAML; "{service}" stands for the service's name
    env: str  # the variable of its ${ENV:default} placeholder; "{SERVICE}" as above
    parse: object
    blank_is_default: bool
    doc: str
    example: str | None

    def path(self, service_name):
        return tuple(part.format(service=service_name) for part in self.key)

    def name(self, service_name):
        """The key as an operator reads it: ``RPC_TIMEOUT``, ``DB_URIS['users:Base']``."""
        first, *rest = self.path(service_name)
        return first + "".join(f"[{part!r}]" for part in rest)

    def env_var(self, service_name):
        return self.env.format(SERVICE=(service_name or "").upper())

    def raw(self, config, service_name):
        """The value in ``config``, or ``MISSING``."""
        value = config
        for part in self.path(service_name):
            if not isinstance(value, dict) or part not in value:
                return MISSING
            value = value[part]
        return value

    def problem(self, service_name, invalid):
        example = f", e.g. {self.example}" if self.example else ""
        return f"{self.name(service_name)} {invalid}: set {self.env_var(service_name)}{example}"


def setting(
    key,
    default=MISSING,
    *,
    parse,
    doc,
    env=None,
    blank_is_default=False,
    example=None,
    secret=False,
):
    """A settings field read from ``key`` (a name, or a path into the YAML).

    ``env``: the environment variable that sets it, if not ``key`` itself.
    An absent key takes ``default``; with ``blank_is_default`` an empty value (a
    variable set to "") does too.
    ``example``: a value to suggest after "set ..." when the value is wrong.
    ``secret``: the value (or a password in it) stays out of the object's repr.
    """
    path = (key,) if isinstance(key, str) else tuple(key)
    source = Source(path, env or path[0], parse, blank_is_default, doc, example)
    return field(default=default, repr=not secret, metadata={SOURCE: source})


def sources(settings_class):
    """``(field, Source)`` of each setting of ``settings_class``, in declaration order."""
    return [(item, item.metadata[SOURCE]) for item in fields(settings_class)]


# --- parsing ---------------------------------------------------------------------------------


def _read(item, source, config, service_name):
    """The field's value: parsed from ``config``, else its default. A required one
    that is absent is parsed as ``None``, which its check refuses. Raises :class:`Invalid`."""
    value = source.raw(config, service_name)
    if value is MISSING or (source.blank_is_default and value in (None, "")):
        if item.default is not MISSING:
            return item.default
        value = MISSING
    return source.parse(None if value is MISSING else value)


def load_settings(settings_class, config, service_name, lenient=False):
    """``settings_class`` read from ``config`` (nameko's dict), every value checked.

    Raises :class:`ConfigError` listing every problem. ``lenient``: a required
    setting that is absent is ``None`` rather than a problem (see :func:`settings_of`).
    """
    values, problems = {}, []
    for item, source in sources(settings_class):
        if lenient and item.default is MISSING and source.raw(config, service_name) is MISSING:
            values[item.name] = None
            continue
        try:
            values[item.name] = _read(item, source, config, service_name)
        except Invalid as invalid:
            problems.append(source.problem(service_name, invalid))
    problems += settings_class.problems(values)
    if problems:
        raise ConfigError.listing(service_name, problems)
    return settings_class(**values)


def read_setting(settings_class, name, config, service_name=None):
    """One setting of ``settings_class`` from ``config`` (for a tool that needs only
    that one); raises :class:`ConfigError` if it is wrong."""
    [(item, source)] = [pair for pair in sources(settings_class) if pair[0].name == name]
    try:
        return _read(item, source, config, service_name)
    except Invalid as invalid:
        raise ConfigError.listing(service_name, [source.problem(service_name, invalid)]) from None


def _number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_seconds(value):
    if not _number(value) or value <= 0:
        raise Invalid(f"must be a positive number of seconds, got {value!r}")
    return float(value)


def seconds_or_zero(value):
    if not _number(value) or value < 0:
        raise Invalid(f"must be seconds >= 0, got {value!r}")
    return float(value)


def positive_hours(value):
    if not _number(value) or value <= 0:
        raise Invalid(f"must be a positive number of hours, got {value!r}")
    return float(value)


def positive_whole(value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Invalid(f"must be a positive whole number, got {value!r}")
    return value


def whole_or_zero(value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Invalid(f"must be a whole number >= 0, got {value!r}")
    return value


def one_of(*choices):
    def parse(value):
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def text(value):
    return str(value)


def logging_level(value):
    if str(value).upper() not in LOG_LEVELS:
        raise Invalid(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return str(value).upper()


def broker_uri(value):
    if not isinstance(value, str) or not value.startswith(AMQP_SCHEMES):
        raise Invalid(f"must be an amqp:// URI, got {value!r}")
    return value


def host_port(value):
    address = "" if value is None else str(value)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(f"must be host:port, got {address!r}")
    return address


def database_url(value):
    if not value:
        raise Invalid("is missing")
    try:
        make_url(value)
    except (ArgumentError, TypeError):
        raise Invalid("is not a database URL") from None
    return value


# --- the settings ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every process reads."""

    amqp_uri: str = setting(
        "AMQP_URI",
        parse=broker_uri,
        secret=True,
        doc="RabbitMQ; several brokers as a failover list `amqp://a:5672/v;amqp://b:5672/v;...`",
    )
    web_server_address: str = setting(
        "WEB_SERVER_ADDRESS",
        parse=host_port,
        doc="HTTP: the gateway's API; `/health`, `/ready` (and `/metrics`) on every service",
    )
    rpc_timeout: float = setting(
        "RPC_TIMEOUT", 5.0, parse=positive_seconds, doc="seconds any RPC call may take"
    )
    max_workers: int = setting(
        "max_workers",
        DEFAULT_MAX_WORKERS,  # nameko's own
        env="MAX_WORKERS",
        blank_is_default=True,  # as nameko reads it
        parse=positive_whole,
        doc="calls a process runs at once (each may hold a database connection)",
    )
    log_level: str = setting(
        "LOG_LEVEL", "INFO", parse=logging_level, doc="the least severe level logged"
    )
    log_format: str = setting(
        "LOG_FORMAT",
        "text",
        parse=one_of(*LOG_FORMATS),
        doc="`json`: one JSON object a line, with `service`, `request_id`, `call_id`",
    )

    @classmethod
    def problems(cls, values):
        """Problems no one field shows (one value read against another), as sentences;
        ``values`` holds each field that parsed."""
        return []


@dataclass(frozen=True, kw_only=True)
class ServiceSettings(Settings):
    """What users and orders read: their own database, durable queues, event
    handlers that retry, an outbox. A service that names no settings class (a
    stand-in in a test) is read as this one, leniently (see :func:`settings_of`)."""

    db_uri: str = setting(
        ("DB_URIS", "{service}:Base"),
        env="{SERVICE}_DB_URI",
        parse=database_url,
        secret=True,
        doc="the service's database (`postgresql://user:pw@host/db` in production)",
    )
    queue_type: str = setting(
        "QUEUE_TYPE",
        CLASSIC,
        blank_is_default=True,
        parse=one_of(*QUEUE_TYPES),
        doc="`quorum` for a RabbitMQ cluster (replicated queues; see Beyond one broker)",
    )
    event_max_retries: int = setting(
        "EVENT_MAX_RETRIES",
        3,
        parse=whole_or_zero,
        doc="a failing event handler is retried this many times, then dead-lettered",
    )
    event_retry_delay: float = setting(
        "EVENT_RETRY_DELAY",
        1.0,
        parse=seconds_or_zero,
        doc="seconds before the first retry; each next one waits twice as long (at most 300)",
    )
    outbox_sweep_seconds: float = setting(
        "OUTBOX_SWEEP_SECONDS",
        5.0,
        parse=positive_seconds,
        doc="how often the outbox relay retries what failed to publish",
    )
    outbox_linger_seconds: float = setting(
        "OUTBOX_LINGER_SECONDS",
        0.02,
        parse=seconds_or_zero,
        doc="how long the relay gathers commits into one batch (one broker confirm)",
    )
    outbox_batch_size: int = setting(
        "OUTBOX_BATCH_SIZE",
        100,
        parse=positive_whole,
        doc="most events the relay publishes at once",
    )
    outbox_retention_hours: float = setting(
        "OUTBOX_RETENTION_HOURS",
        168.0,
        parse=positive_hours,
        doc="how long sent events are kept in the outbox table",
    )


@dataclass(frozen=True, kw_only=True)
class PasswordHashSettings:
    """What a service that hashes passwords (:class:`shared.passwords.Passwords`) reads.

    The defaults are OWASP's minimum for Argon2id: 19 MiB, 2 passes.
    """

    password_hash_memory_kib: int = setting(
        "PASSWORD_HASH_MEMORY_KIB",
        19 * 1024,
        parse=positive_whole,
        doc="Argon2id memory per hash, in KiB (the default is OWASP's minimum)",
    )
    password_hash_time_cost: int = setting(
        "PASSWORD_HASH_TIME_COST",
        2,
        parse=positive_whole,
        doc="Argon2id passes per hash (the default is OWASP's minimum)",
    )


# --- in a container --------------------------------------------------------------------------


class SettingsProvider(DependencyProvider):
    """``settings = SettingsProvider(SettingsClass)``: the service's settings, read and
    checked in ``setup`` before anything connects; workers get the settings object.

    A bad config ends the process with the message alone (``SystemExit``), not a
    traceback: the operator needs to know what to set, not where we noticed.
    """

    def __init__(self, settings_class):
        self.settings_class = settings_class
        self._outcome = None  # the settings, or the ConfigError that refused them

    def setup(self):
        self.settings = self.read()

    def read(self):
        """The settings, read from the container's config on the first call.

        Extensions set up in parallel greenthreads, and whichever asks first
        reads them. On a bad config that first caller logs the message and ends
        the process (``SystemExit``: it leaves the hub at once, so nothing set up
        later in the same pass runs); any later caller gets :class:`ConfigError`,
        since a second ``SystemExit`` would surface wherever the hub runs next
        (in the tests, the next test).
        """
        if self._outcome is None:
            try:
                self._outcome = load_settings(
                    self.settings_class, self.container.config, self.container.service_name
                )
            except ConfigError as error:
                self._outcome = error
                log.critical("%s", error)
                raise SystemExit(1) from None  # the message is logged: one line, JSON if asked
        if isinstance(self._outcome, ConfigError):
            raise ConfigError(str(self._outcome))
        return self._outcome

    def get_dependency(self, worker_ctx):
        return self.settings


def declared_settings(service_cls):
    """The settings class ``service_cls`` names with a :class:`SettingsProvider`, or ``None``."""
    for name in dir(service_cls):
        value = getattr(service_cls, name, None)
        if isinstance(value, SettingsProvider):
            return value.settings_class
    return None


def settings_of(container):
    """The settings of ``container``'s process: read once, by whichever extension asks
    first, and kept by its :class:`SettingsProvider` (see :meth:`SettingsProvider.read`).

    A service that names no settings class (a stand-in in a test) is read as
    :class:`ServiceSettings`, leniently, on each call: what its config sets is
    checked (:class:`ConfigError` if wrong), what it lacks takes the default, or
    ``None``.
    """
    for dependency in container.dependencies:
        if isinstance(dependency, SettingsProvider):
            return dependency.read()
    return load_settings(ServiceSettings, container.config, container.service_name, lenient=True)
