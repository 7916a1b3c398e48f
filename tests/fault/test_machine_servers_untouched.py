"""Nothing in the tests may stop, restart or kill this machine's RabbitMQ or PostgreSQL.

Other work uses them. Tests that break servers use private ones
(:mod:`tests.private_servers`), the only module allowed to run server-control
commands, and only against servers it made. These checks are static (a grep
over the code) plus the private module's own refusals; they need no server.
The runtime proof, connections to the machine's servers held across a fault
run, is in ``test_faults.py``.
"""

import os
import re

import pytest

from tests import private_servers
from tests.private_servers import PrivatePostgres, PrivateRabbit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("tests", "scripts", "bench")
PRIVATE_MODULE = os.path.join("tests", "private_servers.py")
THIS_FILE = os.path.relpath(os.path.abspath(__file__), ROOT)

# each pattern is a command (in code or in a shell line) that stops, restarts,
# resets or kills a server, or drives a PostgreSQL cluster at all
FORBIDDEN = {
    "RabbitMQ app stop/start or reset": re.compile(r"""["'](stop_app|start_app|force_reset)["']"""),
    "rabbitmqctl stopping or resetting a node": re.compile(
        r"\brabbitmqctl\b.*\b(stop|stop_app|shutdown|reset|force_reset)\b"
    ),
    "PostgreSQL cluster control": re.compile(r"""["'](pg_ctlcluster|pg_ctl|pg_dropcluster)["']"""),
    "pg_ctlcluster/pg_ctl stopping or restarting": re.compile(
        r"\b(pg_ctlcluster|pg_ctl)\b.*\b(stop|restart|kill|promote)\b"
    ),
    "a service manager stopping a server": re.compile(
        r"\b(systemctl\s+(stop|restart|kill)\s+\S*(rabbit|postgres)"
        r"|service\s+\S*(rabbit|postgres)\S*\s+(stop|restart))"
    ),
    "killing server processes by name": re.compile(
        r"\b(pkill|killall)\b.*\b(beam|rabbit|postgres|epmd)"
    ),
    "disabling RabbitMQ plugins": re.compile(r"rabbitmq-plugins\b.*\bdisable\b"),
}


def scanned_files():
    for top in SCANNED:
        for root, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", ".pytest_cache")]
            for name in files:
                if name.endswith((".pyc", ".png", ".sqlite3")):
                    continue
                path = os.path.relpath(os.path.join(root, name), ROOT)
                if path not in (PRIVATE_MODULE, THIS_FILE):
                    yield path


def test_no_test_or_script_stops_restarts_or_kills_a_server_itself():
    found = []
    for path in scanned_files():
        with open(os.path.join(ROOT, path), errors="replace") as source:
            for number, line in enumerate(source, 1):
                for what, pattern in FORBIDDEN.items():
                    if pattern.search(line):
                        found.append(f"{path}:{number}: {what}: {line.strip()[:120]}")
    assert found == [], (
        "server control outside tests/private_servers.py (use a private server):\n"
        + "\n".join(found)
    )


def test_the_private_module_names_its_own_node_or_cluster_in_every_command():
    with open(os.path.join(ROOT, PRIVATE_MODULE)) as source:
        code = source.read()
    rabbitmqctl = re.findall(r"""\[\s*["']rabbitmqctl["'],?\s*(["'][^"']*["'])?""", code)
    assert rabbitmqctl, "expected rabbitmqctl commands in the private module"
    assert all(first in ('"-n"', "'-n'") for first in rabbitmqctl), rabbitmqctl
    for line in code.splitlines():
        if re.search(r"""["'](pg_ctlcluster|pg_dropcluster|pg_createcluster)["']""", line):
            assert not re.search(r"""["']main["']|5432""", line), line


def test_private_servers_refuse_the_machines_node_and_cluster():
    with pytest.raises(ValueError):
        PrivateRabbit(name="rabbit")
    with pytest.raises(ValueError):
        PrivatePostgres(name="main", version="15")
    rabbit = PrivateRabbit()
    command = rabbit.ctl_command("stop_app")
    assert command[:3] == ["rabbitmqctl", "-n", rabbit.node]
    assert rabbit.node.startswith(private_servers.PREFIX) and rabbit.node.endswith("@localhost")
    assert private_servers.MACHINE_RABBIT_PORT not in (rabbit.amqp_port, rabbit.management_port)
    postgres = PrivatePostgres(version="15")
    assert postgres.port != private_servers.MACHINE_POSTGRES_PORT
    assert postgres.ctl_command("restart")[3] == postgres.name != "main"
    assert postgres.url().startswith(f"postgresql://postgres@127.0.0.1:{postgres.port}/")


def test_only_leftovers_of_dead_owners_are_swept():
    mine = private_servers.unique_name("rmq")
    assert private_servers.owner_pid(mine) == os.getpid()
    assert not private_servers.owner_gone(mine)  # this process: alive
    assert not private_servers.owner_gone("rabbit")  # not a private name at all
    assert not private_servers.owner_gone("main")
    # a pid above any pid_max: its owner cannot be alive, so the server is a leftover
    dead = f"{private_servers.PREFIX}_pg_999999999_abcdef"
    assert private_servers.owner_gone(dead)
