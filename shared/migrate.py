"""Apply (or write) a service's alembic migrations, reading its nameko config.

    python -m shared.migrate config/users.yaml                 # upgrade to head
    python -m shared.migrate config/users.yaml revision -m "add x" --autogenerate

The database URL comes from the same YAML (and environment) the service runs
with, so migrations and service can never point at different databases. A
database that refuses the URI's user, password or database name, or cannot be
reached, ends the command with one line saying which (exit status 1), not a
traceback.
"""

import argparse
import importlib
import os
import re
import sys

import yaml
from alembic import command
from alembic.config import Config
from nameko.cli.main import setup_yaml_parser
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from shared.exceptions import Unavailable
from shared.settings import ConfigError, ServiceSettings, read_setting

# What PostgreSQL (and RabbitMQ) answer when the server is up but refuses the
# URI's credentials or names: waiting cannot change that answer.
REFUSALS = re.compile(
    r"password authentication failed"
    r"|role \".*?\" does not exist"
    r"|database \".*?\" does not exist"
    r"|no pg_hba\.conf entry"
    r"|ACCESS_REFUSED"
    r"|vhost .* not found",
)


class Refused(ConfigError):
    """The server answered, and refused the configured credentials or names."""


def root_cause(error):
    """The innermost error under ``error``: the driver's, not SQLAlchemy's or ours.

    ``shared.db`` turns a failed connection into ``Unavailable`` ("cannot be
    reached") whatever the reason; the driver's error it was raised from says
    what really happened.
    """
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "orig", None) or error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    return error


def describe(error):
    """The first line of what went wrong, as the server or driver said it."""
    cause = root_cause(error)
    message = str(cause).strip()
    return message.splitlines()[0] if message else type(cause).__name__


def is_refusal(error):
    """True when the server refused the credentials or names (not: could not be reached)."""
    return bool(REFUSALS.search(str(root_cause(error))))


def refused(what, error):
    return Refused(
        f"{what} refused the connection: {describe(error)} "
        "(check the user name, password and the database or vhost name in its URI)"
    )


def load_config(path):
    setup_yaml_parser()
    with open(path) as stream:
        return yaml.safe_load(stream)


def service_name_of(config):
    keys = list(config.get("DB_URIS") or {})
    if len(keys) != 1:
        raise ConfigError("DB_URIS must name exactly one '<service>:Base' database")
    return keys[0].split(":")[0]


def database_uri(config, service_name):
    """The service's database URL from ``config``; :class:`ConfigError` if it has none."""
    return read_setting(ServiceSettings, "db_uri", config, service_name)


def alembic_config(service_name, db_uri):
    package = importlib.import_module(service_name)
    alembic_cfg = Config()
    alembic_cfg.set_main_option(
        "script_location", os.path.join(os.path.dirname(package.__file__), "migrations")
    )
    # passed as an attribute, not an ini option: a password may hold a '%'
    alembic_cfg.attributes["db_uri"] = db_uri
    alembic_cfg.attributes["service_name"] = service_name
    return alembic_cfg


def upgrade(config, revision="head"):
    """Bring the service's database in ``config`` up to ``revision``."""
    service_name = service_name_of(config)
    db_uri = database_uri(config, service_name)
    where = make_url(db_uri).render_as_string(hide_password=True)
    try:
        command.upgrade(alembic_config(service_name, db_uri), revision)
    except Exception as error:
        what = f"{service_name} database at {where}"
        if is_refusal(error):
            raise refused(what, error) from error
        if isinstance(error, (Unavailable, OperationalError)):
            raise ConfigError(f"{what} cannot be reached: {describe(error)}") from error
        raise
    return service_name, where


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the service's YAML config")
    parser.add_argument("action", nargs="?", default="upgrade", choices=["upgrade", "revision"])
    parser.add_argument("-m", "--message", default="change")
    parser.add_argument("--autogenerate", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.action == "upgrade":
            service_name, where = upgrade(config)
            print(f"{service_name}: database at {where} is up to date")
        else:
            service_name = service_name_of(config)
            db_uri = database_uri(config, service_name)
            command.revision(
                alembic_config(service_name, db_uri),
                message=args.message,
                autogenerate=args.autogenerate,
            )
    except ConfigError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
