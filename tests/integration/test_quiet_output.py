"""What operators see: no eventlet banner, and with LOG_FORMAT=json only JSON lines."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

from nameko.testing.utils import find_free_port

from shared.cli import DropAckOnClosingChannel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plain_env(**extra):
    """The environment without the test run's own warning filters."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    return {**env, **extra}


def test_a_service_under_shared_cli_writes_only_json_lines_and_no_banner(rabbit_config, tmp_path):
    env = plain_env(
        AMQP_URI=rabbit_config["AMQP_URI"],
        LOG_FORMAT="json",
        USERS_DB_URI=f"sqlite:///{tmp_path}/users.sqlite3",
        WEB_SERVER_ADDRESS=f"127.0.0.1:{find_free_port()}",
    )
    log_path = tmp_path / "users.log"
    with open(log_path, "w") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "run", "--config", "config/users.yaml"]
            + ["users.service"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Connected to amqp" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    output = log_path.read_text()
    assert "Eventlet is deprecated" not in output
    records = [json.loads(line) for line in output.splitlines()]  # each line is JSON
    assert any("Connected to amqp" in record["message"] for record in records), output


def test_a_tool_writes_its_warnings_as_json_lines(tmp_path):
    """Warnings go through logging (py.warnings), so LOG_FORMAT=json covers them."""
    script = (
        "from shared.cli import quiet; quiet()\n"
        "from shared.logs import tool_logger; tool_logger('tool')\n"
        "import eventlet, warnings\n"
        "warnings.warn('something to look at', UserWarning)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=plain_env(LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert "Eventlet is deprecated" not in output
    records = [json.loads(line) for line in output.splitlines()]
    assert [record["logger"] for record in records] == ["py.warnings"]
    assert "something to look at" in records[0]["message"]


def record(method):
    return logging.makeLogRecord(
        {
            "name": "amqp",
            "levelno": logging.WARNING,
            "msg": "Received method %s during closing channel %s. This method will be ignored",
            "args": (method, 1),
        }
    )


def test_only_the_late_publisher_confirm_warning_of_amqp_is_dropped():
    drop = DropAckOnClosingChannel()
    assert drop.filter(record((60, 80))) is False  # basic.ack: harmless
    assert drop.filter(record((60, 60))) is True  # basic.deliver: still shown
    other = logging.makeLogRecord({"name": "amqp", "msg": "something else", "args": ()})
    assert drop.filter(other) is True
