"""The compose tier: the real image and docker-compose.yml on a Docker engine.

Opt-in: it builds an image and runs the whole stack (minutes), so ``pytest tests``
(``make test``) leaves it out; ``make compose`` runs it (``COMPOSE_TESTS=1``).
With no engine it skips and says why; with ``COMPOSE_REQUIRED=1`` (CI) that is
a failure instead.

The stack is module-scoped and the checks in test_stack.py run in file order,
each on the state the previous one left. What each saw, and the tier's wall
time, are printed at the end of the run.
"""

import os
import time

import pytest

from tests.compose.stack import Stack, engine_problem

if os.environ.get("COMPOSE_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


class Report:
    """What each check saw, in order, for the summary at the end."""

    def __init__(self):
        self.began = time.monotonic()
        self.lines = []
        self.wall_seconds = None

    def saw(self, check, observation):
        self.lines.append((check, observation))


REPORT = Report()


@pytest.fixture(scope="session")
def report():
    return REPORT


@pytest.fixture(scope="module")
def stack(report):
    problem = engine_problem()
    if problem:
        message = f"compose tier cannot run: {problem}"
        if os.environ.get("COMPOSE_REQUIRED") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    project = Stack()
    report.saw("setup", f"project {project.project}, gateway at {project.gateway_url}")
    moved = {port: used for port, used in project.ports.items() if port != used}
    report.saw("setup", f"host ports moved (held on this machine): {moved or 'none'}")
    try:
        began = time.monotonic()
        project.build()
        report.saw("build", f"image {project.image} built in {time.monotonic() - began:.0f} s")
        began = time.monotonic()
        project.up()
        report.saw("up", f"`up --detach` returned in {time.monotonic() - began:.0f} s")
        yield project
    finally:
        began = time.monotonic()
        project.remove()
        report.saw("teardown", f"down --volumes in {time.monotonic() - began:.0f} s")
        report.wall_seconds = time.monotonic() - report.began


def pytest_terminal_summary(terminalreporter):
    if not REPORT.lines:
        return
    terminalreporter.section("compose tier: what each check saw")
    for check, observation in REPORT.lines:
        terminalreporter.write_line(f"{check:>12}: {observation}")
    if REPORT.wall_seconds is not None:
        terminalreporter.write_line(f"{'wall time':>12}: {REPORT.wall_seconds:.0f} s")
