"""The settings objects: each value parsed and checked once, a default for what is unset,
one message naming every key to fix and the variable that sets it."""

import dataclasses
import ipaddress
import logging
import typing

import pytest
from nameko.containers import ServiceContainer
from nameko.rpc import rpc

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from orders.service import OrdersService
from shared.settings import (
    ConfigError,
    ServiceSettings,
    Settings,
    load_settings,
    read_setting,
    settings_of,
    sources,
)
from tests.helpers import REQUIRED_SETTINGS, settings_problems
from users.service import UsersService
from users.settings import UsersSettings

STRONG = "q3ZK0vU9bM2xW7hT1yLc8RdNf5aEgJ4sPo6iHkQeVnA"
# the least each class needs: its required settings
MINIMAL = {
    Settings: REQUIRED_SETTINGS,
    ServiceSettings: {**REQUIRED_SETTINGS, "DB_URIS": {"test:Base": "sqlite://"}},
    UsersSettings: {**REQUIRED_SETTINGS, "DB_URIS": {"test:Base": "sqlite://"}},
    GatewaySettings: REQUIRED_SETTINGS,
}
CLASSES = list(MINIMAL)


def load(settings_class, **config):
    return load_settings(settings_class, {**MINIMAL[settings_class], **config}, "test")


def problems(settings_class, **config):
    return settings_problems(settings_class, {**MINIMAL[settings_class], **config})


def annotation(settings_class, field):
    return typing.get_type_hints(settings_class)[field.name]


@pytest.mark.parametrize("settings_class", CLASSES, ids=lambda c: c.__name__)
def test_what_is_unset_takes_its_default(settings_class):
    settings = load(settings_class)
    for field, _ in sources(settings_class):
        if field.default is not dataclasses.MISSING:
            assert getattr(settings, field.name) == field.default, field.name


@pytest.mark.parametrize("settings_class", CLASSES, ids=lambda c: c.__name__)
def test_every_value_has_its_fields_type(settings_class):
    settings = load(settings_class, TRUSTED_PROXIES="10.0.0.0/8", JWT_SECRET=STRONG)
    for field, _ in sources(settings_class):
        wanted = annotation(settings_class, field)
        assert isinstance(getattr(settings, field.name), wanted), field.name


@pytest.mark.parametrize("settings_class", CLASSES, ids=lambda c: c.__name__)
def test_every_setting_says_what_it_is_and_which_variable_sets_it(settings_class):
    for field, source in sources(settings_class):
        assert source.doc, field.name
        assert source.env_var("test").isupper(), field.name
    env_vars = [source.env_var("test") for _, source in sources(settings_class)]
    assert len(env_vars) == len(set(env_vars))


def test_whole_numbers_of_seconds_become_floats_and_levels_capitals():
    settings = load(UsersSettings, RPC_TIMEOUT=2, LOGIN_WINDOW_SECONDS=60, LOG_LEVEL="debug")
    assert settings.rpc_timeout == 2.0 and isinstance(settings.rpc_timeout, float)
    assert settings.login_window_seconds == 60.0
    assert settings.log_level == "DEBUG"


def test_trusted_proxies_may_be_a_comma_separated_string_or_a_list():
    as_text = load(GatewaySettings, TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1")
    as_list = load(GatewaySettings, TRUSTED_PROXIES=["10.0.0.0/8", "127.0.0.1"])
    wanted = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))
    assert as_text.trusted_proxies == as_list.trusted_proxies == wanted


@pytest.mark.parametrize(
    "settings_class, key, field",
    [
        (ServiceSettings, "QUEUE_TYPE", "queue_type"),
        (Settings, "max_workers", "max_workers"),
        (GatewaySettings, "ENVIRONMENT", "environment"),
        (GatewaySettings, "JWT_SECRET", "jwt_secret"),
        (GatewaySettings, "JWT_SECRET_FILE", "jwt_secret_file"),
        (GatewaySettings, "TRUSTED_PROXIES", "trusted_proxies"),
    ],
)
@pytest.mark.parametrize("blank", [None, ""])
def test_a_blank_value_takes_the_default_where_it_means_unset(settings_class, key, field, blank):
    """What an environment variable set to "" gives (``${VAR:default}`` loads it as None)."""
    settings = load(settings_class, **{key: blank})
    assert getattr(settings, field) == getattr(settings_class, field)


def test_a_blank_number_is_refused_rather_than_guessed():
    assert problems(Settings, RPC_TIMEOUT=None) == [
        "RPC_TIMEOUT must be a positive number of seconds, got None: set RPC_TIMEOUT"
    ]


@pytest.mark.parametrize(
    "settings_class, config, message",
    [
        (Settings, {"AMQP_URI": "http://x"}, "AMQP_URI must be an amqp:// URI, got 'http://x'"),
        (Settings, {"WEB_SERVER_ADDRESS": "8001"}, "WEB_SERVER_ADDRESS must be host:port"),
        (Settings, {"RPC_TIMEOUT": 0}, "RPC_TIMEOUT must be a positive number of seconds, got 0"),
        (Settings, {"RPC_TIMEOUT": "5"}, "RPC_TIMEOUT must be a positive number of seconds"),
        (Settings, {"RPC_TIMEOUT": True}, "RPC_TIMEOUT must be a positive number of seconds"),
        (Settings, {"max_workers": 0}, "max_workers must be a positive whole number, got 0"),
        (Settings, {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING"),
        (Settings, {"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of json, text, got 'xml'"),
        (ServiceSettings, {"DB_URIS": {}}, "DB_URIS['test:Base'] is missing"),
        (ServiceSettings, {"DB_URIS": {"test:Base": "x"}}, "DB_URIS['test:Base'] is not a"),
        (ServiceSettings, {"QUEUE_TYPE": "mirrored"}, "QUEUE_TYPE must be one of classic, quorum"),
        (ServiceSettings, {"EVENT_MAX_RETRIES": -1}, "EVENT_MAX_RETRIES must be a whole number"),
        (ServiceSettings, {"EVENT_RETRY_DELAY": -1}, "EVENT_RETRY_DELAY must be seconds >= 0"),
        (ServiceSettings, {"OUTBOX_SWEEP_SECONDS": 0}, "OUTBOX_SWEEP_SECONDS must be a positive"),
        (ServiceSettings, {"OUTBOX_LINGER_SECONDS": -0.1}, "OUTBOX_LINGER_SECONDS must be"),
        (ServiceSettings, {"OUTBOX_BATCH_SIZE": 2.5}, "OUTBOX_BATCH_SIZE must be a positive whole"),
        (ServiceSettings, {"OUTBOX_RETENTION_HOURS": 0}, "OUTBOX_RETENTION_HOURS must be a"),
        (UsersSettings, {"PASSWORD_HASH_MEMORY_KIB": 0}, "PASSWORD_HASH_MEMORY_KIB must be a"),
        (UsersSettings, {"PASSWORD_HASH_TIME_COST": "2"}, "PASSWORD_HASH_TIME_COST must be a"),
        (UsersSettings, {"LOGIN_MAX_FAILURES": 0}, "LOGIN_MAX_FAILURES must be a positive whole"),
        (UsersSettings, {"LOGIN_MAX_FAILURES_PER_ADDRESS": -2}, "LOGIN_MAX_FAILURES_PER_ADDRESS"),
        (UsersSettings, {"LOGIN_WINDOW_SECONDS": 0}, "LOGIN_WINDOW_SECONDS must be a positive"),
        (UsersSettings, {"LOGIN_LOCKOUT_SECONDS": "5m"}, "LOGIN_LOCKOUT_SECONDS must be"),
        (GatewaySettings, {"ACCESS_TOKEN_MINUTES": 0}, "ACCESS_TOKEN_MINUTES must be a positive"),
        (GatewaySettings, {"REFRESH_TOKEN_DAYS": -7}, "REFRESH_TOKEN_DAYS must be a positive"),
        (GatewaySettings, {"MAX_BODY_BYTES": "64k"}, "MAX_BODY_BYTES must be a positive whole"),
        (GatewaySettings, {"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES is not a"),
        (GatewaySettings, {"JWT_SECRET": "short"}, "JWT_SECRET is shorter than 32 bytes"),
        (GatewaySettings, {"ENVIRONMENT": "production"}, "JWT_SECRET is missing (ENVIRONMENT"),
    ],
)
def test_each_bad_value_is_one_problem_naming_the_variable_to_set(settings_class, config, message):
    [problem] = problems(settings_class, **config)
    assert problem.startswith(message)
    [(key, _)] = config.items()
    variable = {"max_workers": "MAX_WORKERS", "DB_URIS": "TEST_DB_URI"}.get(key, key)
    if key == "ENVIRONMENT":
        variable = "JWT_SECRET"  # what is wrong is the missing secret
    assert f": set {variable}" in problem


def test_every_problem_comes_in_one_message_naming_the_service():
    config = {"RPC_TIMEOUT": 0, "QUEUE_TYPE": "x", "LOGIN_MAX_FAILURES": 0}
    with pytest.raises(ConfigError) as error:
        load_settings(UsersSettings, {**REQUIRED_SETTINGS, **config}, "users")
    message = str(error.value)
    assert message.startswith("config error in the users service:\n  - ")
    assert len(error.value.problems) == 4
    for variable in ("RPC_TIMEOUT", "USERS_DB_URI", "QUEUE_TYPE", "LOGIN_MAX_FAILURES"):
        assert f"set {variable}" in message


def test_a_required_setting_that_is_missing_is_a_problem():
    assert len(settings_problems(ServiceSettings, {}, "users")) == 1  # the database
    with pytest.raises(ConfigError, match="set AMQP_URI"):
        load_settings(Settings, {"WEB_SERVER_ADDRESS": "127.0.0.1:1"}, "test")


def test_the_database_key_and_variable_are_the_services():
    with pytest.raises(ConfigError) as error:
        load_settings(ServiceSettings, REQUIRED_SETTINGS, "orders")
    assert "DB_URIS['orders:Base'] is missing: set ORDERS_DB_URI" in str(error.value)


def test_one_setting_can_be_read_alone():
    assert read_setting(Settings, "rpc_timeout", {}) == 5.0
    assert read_setting(Settings, "rpc_timeout", {"RPC_TIMEOUT": 1}) == 1.0
    with pytest.raises(ConfigError, match="set USERS_DB_URI"):
        read_setting(ServiceSettings, "db_uri", {"DB_URIS": {"users:Base": ""}}, "users")


def test_leniently_a_missing_required_setting_is_none_but_a_bad_value_still_refused():
    settings = load_settings(ServiceSettings, {"AMQP_URI": "amqp://x"}, "stand_in", lenient=True)
    assert settings.db_uri is None and settings.web_server_address is None
    assert settings.event_max_retries == ServiceSettings.event_max_retries
    with pytest.raises(ConfigError, match="set EVENT_MAX_RETRIES"):
        load_settings(ServiceSettings, {"EVENT_MAX_RETRIES": -1}, "stand_in", lenient=True)


def test_settings_are_frozen_and_keep_secrets_out_of_their_repr():
    secrets = {
        "AMQP_URI": "amqp://user:broker-password@host/",
        "JWT_SECRET": STRONG,
    }
    settings = load(GatewaySettings, **secrets)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.rpc_timeout = 1
    assert "broker-password" not in repr(settings) and STRONG not in repr(settings)
    service = load(ServiceSettings, DB_URIS={"test:Base": "postgresql://u:db-password@h/d"})
    assert "db-password" not in repr(service)


def test_the_users_login_limits_come_from_its_settings_once():
    settings = load(UsersSettings, LOGIN_MAX_FAILURES=2, LOGIN_LOCKOUT_SECONDS=30)
    limits = settings.login_limits
    assert (limits.per_email, limits.per_address, limits.lockout) == (2, 20, 30.0)
    assert settings.login_limits is limits


# --- in a container (made as nameko makes it, not started: nothing connects) ---------------

DATABASES = {"DB_URIS": {f"{name}:Base": "sqlite://" for name in ("users", "orders", "stand_in")}}


class StandIn:
    """A service that names no settings class (as the tests' stand-ins do)."""

    name = "stand_in"

    @rpc
    def ping(self):
        pass


@pytest.mark.parametrize(
    "service_cls, settings_class",
    [
        (UsersService, UsersSettings),
        (OrdersService, ServiceSettings),
        (GatewayService, GatewaySettings),
        (StandIn, ServiceSettings),
    ],
)
def test_a_container_gets_its_services_settings_class(service_cls, settings_class):
    container = ServiceContainer(service_cls, {**REQUIRED_SETTINGS, **DATABASES})
    assert type(settings_of(container)) is settings_class


def test_a_containers_settings_are_read_once():
    container = ServiceContainer(OrdersService, {**REQUIRED_SETTINGS, **DATABASES})
    assert settings_of(container) is settings_of(container)


def test_a_stand_in_is_read_leniently():
    settings = settings_of(ServiceContainer(StandIn, {"AMQP_URI": "amqp://x"}))
    assert settings.db_uri is None and settings.rpc_timeout == ServiceSettings.rpc_timeout


def test_a_bad_config_ends_the_process_with_one_message_however_often_asked(caplog):
    config = {**REQUIRED_SETTINGS, **DATABASES, "RPC_TIMEOUT": -1}
    container = ServiceContainer(OrdersService, config)
    with pytest.raises(SystemExit) as exit:  # the first extension to ask
        settings_of(container)
    assert exit.value.code == 1
    for _ in range(3):  # the others, in whatever order: one exit is enough
        with pytest.raises(ConfigError, match="set RPC_TIMEOUT"):
            settings_of(container)
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert record.getMessage().startswith("config error in the orders service:")
    assert "set RPC_TIMEOUT" in record.getMessage()


def test_a_stand_ins_bad_value_is_a_config_error():
    stand_in = ServiceContainer(StandIn, {"AMQP_URI": "amqp://x", "QUEUE_TYPE": "mirrored"})
    with pytest.raises(ConfigError, match="set QUEUE_TYPE"):
        settings_of(stand_in)
