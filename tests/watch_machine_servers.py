"""Run a command while holding connections to the machine's RabbitMQ and PostgreSQL.

    python -m tests.watch_machine_servers -- bash .ci/run

Proves that the command (the whole suite, CI) leaves the machine's servers
alone: it holds one connection to each for the whole run and fails (exit 1)
if either saw a disconnect or a restart, or if the command itself failed.
"""

import subprocess
import sys

from tests.private_servers import MachineServersWatch


def main(argv):
    command = argv[1:] if argv and argv[0] == "--" else argv
    if not command:
        sys.exit("usage: python -m tests.watch_machine_servers -- COMMAND [ARG ...]")
    with MachineServersWatch() as watch:
        status = subprocess.call(command)
    for server, why in watch.unwatched.items():
        print(f"[watch] the machine's {server} was not watched: {why}", flush=True)
    problems = watch.found or []
    for problem in problems:
        print(f"[watch] {problem}", flush=True)
    watched = sorted({"RabbitMQ", "PostgreSQL"} - set(watch.unwatched))
    print(
        f"[watch] command exited {status}; held connections to {', '.join(watched) or 'nothing'}; "
        f"{'no disconnect' if not problems else 'DISTURBED'}",
        flush=True,
    )
    return 1 if status or problems or watch.unwatched else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
