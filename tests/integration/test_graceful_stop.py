"""SIGTERM stops a service in time, with its broker up or gone (shared.cli's bounded stop).

nameko's runner stops its containers on SIGTERM; with the broker gone, kombu's
reconnect loop kept that stop waiting until ``docker stop`` killed the process
after its grace period. ``python -m shared.cli run`` gives the graceful stop
``STOP_TIMEOUT_SECONDS`` (8 by default) and then exits with status 3.

The broker "goes away" without the machine's RabbitMQ being touched: the service
reaches its throwaway vhost through a TCP forwarder run here, whose listener and
connections the test closes.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from nameko.testing.utils import find_free_port

from shared.cli import STOP_TIMEOUT_EXIT_STATUS

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STOP_LIMIT_SECONDS = 10  # what `docker stop` and Kubernetes grant before SIGKILL


class TcpForwarder:
    """Forwards 127.0.0.1:<port> to ``target``; :meth:`cut` is the broker going away.

    Each socket is closed by the thread that reads it, after a shutdown woke it:
    under eventlet, a socket closed while another green thread waits on it
    leaves that thread (and its claim on the file descriptor) behind.
    """

    def __init__(self, target):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:  # shut down by cut(): no more connections
                self.listener.close()
                return
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source, destination):
        try:
            while data := source.recv(65536):
                destination.sendall(data)
        except (OSError, EOFError):
            pass
        shut_down(destination)  # wakes the thread that reads it
        source.close()

    def cut(self):
        """Refuse new connections and drop the open ones."""
        for sock in [self.listener, *self.sockets]:
            shut_down(sock)


def shut_down(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed, or never connected


def through(forwarder, amqp_uri):
    """``amqp_uri`` with its host and port replaced by the forwarder's."""
    parts = urlsplit(amqp_uri)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{forwarder.port}"))


@pytest.fixture
def forwarder(rabbit_config):
    parts = urlsplit(rabbit_config["AMQP_URI"])
    proxy = TcpForwarder((parts.hostname, parts.port or 5672))
    yield proxy
    proxy.cut()


@pytest.fixture
def start_users(tmp_path):
    """Starts the users service as containers run it; kills whatever is left at the end."""
    started = []

    def start(amqp_uri):
        env = {key: value for key, value in os.environ.items() if key != "STOP_TIMEOUT_SECONDS"}
        env.update(
            AMQP_URI=amqp_uri,
            USERS_DB_URI=f"sqlite:///{tmp_path}/users.sqlite3",
            WEB_SERVER_ADDRESS=f"127.0.0.1:{find_free_port()}",
        )
        log_path = tmp_path / f"users-{len(started)}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "run", "--config", "config/users.yaml"]
                + ["users.service"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        deadline = time.monotonic() + 30
        while "Connected to amqp" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "not connected in 30 s:\n" + log_path.read_text()
            time.sleep(0.2)
        return process, log_path

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(process):
    """SIGTERM, as `docker stop` sends; returns (exit status, seconds it took)."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("still running 30 s after SIGTERM")
    return status, time.monotonic() - began


def test_sigterm_with_the_broker_up_stops_cleanly_at_once(forwarder, rabbit_config, start_users):
    process, log_path = start_users(through(forwarder, rabbit_config["AMQP_URI"]))

    status, seconds = stop(process)

    print(f"stop with the broker up: status {status} in {seconds:.2f} s")
    assert status == 0, log_path.read_text()
    assert seconds < 5, log_path.read_text()
    assert "graceful stop did not finish" not in log_path.read_text()


def test_sigterm_with_the_broker_gone_still_exits_in_time(forwarder, rabbit_config, start_users):
    process, log_path = start_users(through(forwarder, rabbit_config["AMQP_URI"]))
    forwarder.cut()
    time.sleep(1)  # the service has noticed and is reconnecting

    status, seconds = stop(process)

    print(f"stop with the broker gone: status {status} in {seconds:.2f} s")
    output = log_path.read_text()
    assert seconds < STOP_LIMIT_SECONDS, output
    assert status == STOP_TIMEOUT_EXIT_STATUS, output
    assert "graceful stop did not finish within 8s" in output
    assert "Still running: users" in output
