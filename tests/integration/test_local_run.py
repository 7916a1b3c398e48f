"""`make run`'s script and `nameko shell`, run as a user runs them (subprocesses)."""

import os
import signal
import subprocess
import sys

import pytest
import requests
from nameko.testing.utils import find_free_port

from scripts.run import available_services
from tests.helpers import wait_for_ok

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


@pytest.fixture
def local_env(rabbit_config, tmp_path):
    """The environment of a user's shell: a private vhost, SQLite files, free ports."""
    env = {
        **os.environ,
        "AMQP_URI": rabbit_config["AMQP_URI"],
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "PASSWORD_HASH_TIME_COST": "1",
        "JWT_SECRET": "a-test-secret-that-is-long-enough-0123456789",
        "PYTHONWARNINGS": "ignore",
    }
    ports = {}
    for name, _module, _config in available_services():
        env[f"{name.upper()}_DB_URI"] = f"sqlite:///{tmp_path / name}.sqlite3"
        ports[name] = find_free_port()
        env[f"{name.upper()}_WEB_SERVER_ADDRESS"] = f"127.0.0.1:{ports[name]}"
    env["ports"] = ports
    return env


def wait_healthy(port, process, timeout=30):
    wait_for_ok(f"http://127.0.0.1:{port}/health", process, timeout)


def nameko_shell(env, script):
    return subprocess.run(
        [f"{BIN}/nameko", "shell", "--config", "config/users.yaml"],
        input=script,
        env={**env, "PYTHONSTARTUP": "shared/shell.py"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_starts_every_service_and_the_shell_calls_users_then_sigterm_stops_all(local_env):
    ports = local_env.pop("ports")
    runner = subprocess.Popen(
        [sys.executable, "-m", "scripts.run"],
        env=local_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for port in ports.values():
            wait_healthy(port, runner)

        shell = nameko_shell(
            local_env,
            'print(n.rpc.users.create_user("shell@example.com", "Shell", "a long password"))\n'
            "try:\n"
            "    n.rpc.users.get_user(999)\n"
            "except Exception as error:\n"
            '    print("refused:", type(error).__name__, error)\n'
            "\n",
        )
        assert "'email': 'shell@example.com'" in shell.stdout, shell.stderr
        assert "refused: NotFound user 999 not found" in shell.stdout, shell.stderr
    finally:
        runner.send_signal(signal.SIGTERM)
        output, _ = runner.communicate(timeout=30)
    assert runner.returncode == 0, output
    assert "stopped" in output
    for port in ports.values():
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=1)


def test_run_says_in_one_line_when_rabbitmq_is_unreachable(local_env):
    local_env.pop("ports")
    local_env["AMQP_URI"] = "amqp://guest:secret@127.0.0.1:1/"
    result = subprocess.run(
        [sys.executable, "-m", "scripts.run"],
        env=local_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith("RabbitMQ is not reachable at")
    assert "secret" not in result.stderr and "***" in result.stderr


def test_a_bad_config_refuses_to_start_with_what_to_set(local_env, tmp_path):
    local_env.pop("ports")
    local_env["USERS_DB_URI"] = ""
    result = subprocess.run(
        [sys.executable, "-m", "scripts.run", "--migrate-only"],
        env=local_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "set USERS_DB_URI" in result.stderr
