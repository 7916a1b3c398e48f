"""Run nameko, or one of the project's tools, without the noise that is not news.

    python -m shared.cli run --config config/users.yaml users.service   # `nameko run`
    python -m shared.cli shell --config config/users.yaml               # `nameko shell`
    python -m shared.cli -m shared.deadletters config/orders.yaml list  # `python -m ...`

Each form behaves exactly as the command in the comment, after :func:`quiet`:

- eventlet's deprecation banner (8 lines per process, printed when eventlet is
  first imported) is not shown. It has to be filtered before that import, and
  the ``nameko`` command imports eventlet first thing, which is why this module
  exists: ``PYTHONWARNINGS``/``-W`` cannot do it, because they match a message
  by literal prefix and this one starts with a newline (and its category is
  not a ``DeprecationWarning``). Every other warning is still shown.
- warnings go through :mod:`logging` (``py.warnings``), so with
  ``LOG_FORMAT=json`` a warning is one JSON line like any other record.
- py-amqp's "Received method (60, 80) during closing channel" warning is
  dropped: a publisher confirm (basic.ack) that arrives after its channel began
  closing, which is harmless; any other amqp warning still shows.

This module imports nothing but the standard library before it has done so.

``run`` also bounds the graceful stop. nameko's runner stops its containers on
SIGTERM (or Ctrl-C), and a container whose broker or database is gone can wait
forever: kombu retries the connection without end. So once a stop begins, the
process gets ``STOP_TIMEOUT_SECONDS`` (default 8: inside the 10 s that
``docker stop`` and Kubernetes grant by default) to finish it; then it logs
what was still running and exits with status 3. The deadline is kept by an OS
thread, not a greenlet, so a call that blocks eventlet's hub cannot hold it up.
"""

import logging
import os
import runpy
import signal
import sys
import warnings

# the banner is "\nEventlet is deprecated. It is currently ..."
EVENTLET_BANNER = r"\s*Eventlet is deprecated"
# basic.ack, as py-amqp formats the method signature in that warning
BASIC_ACK = (60, 80)
USAGE = __doc__.split("\n\n")[1]
STOP_TIMEOUT_DEFAULT = 8.0
STOP_TIMEOUT_EXIT_STATUS = 3

log = logging.getLogger("shared.cli")


class DropAckOnClosingChannel(logging.Filter):
    """Drops py-amqp's warning about a basic.ack received on a closing channel.

    py-amqp logs ``"Received method %s during closing channel %s. ..."`` on the
    ``amqp`` logger for any method that arrives after ``channel.close()``; a
    late publisher confirm is expected there and says nothing is wrong. Other
    methods, and every other amqp record, pass.
    """

    def filter(self, record):
        return not (
            str(record.msg).startswith("Received method %s during closing channel")
            and record.args
            and tuple(record.args[0]) == BASIC_ACK
        )


def quiet():
    """Install the filters above in this process; call before anything imports eventlet."""
    warnings.filterwarnings("ignore", message=EVENTLET_BANNER)
    logging.captureWarnings(True)
    amqp_logger = logging.getLogger("amqp")
    if not any(isinstance(f, DropAckOnClosingChannel) for f in amqp_logger.filters):
        amqp_logger.addFilter(DropAckOnClosingChannel())


def stop_timeout():
    """Seconds a graceful stop may take: ``STOP_TIMEOUT_SECONDS``, else 8."""
    value = os.environ.get("STOP_TIMEOUT_SECONDS", "")
    try:
        seconds = float(value) if value else STOP_TIMEOUT_DEFAULT
    except ValueError:
        sys.exit(f"STOP_TIMEOUT_SECONDS must be a number of seconds, not {value!r}")
    if seconds <= 0:
        sys.exit(f"STOP_TIMEOUT_SECONDS must be more than 0, not {value!r}")
    return seconds


def still_running(runner):
    """One phrase per container that has not stopped: its workers and threads."""
    # imported here: this module must not import eventlet (through nameko) before quiet()
    from shared.framework import is_stopped, work_in_progress

    parts = []
    for container in runner.containers:
        if is_stopped(container):
            continue
        workers, threads = work_in_progress(container)
        parts.append(
            f"{container.service_name} (workers: {', '.join(workers) or 'none'}; "
            f"threads: {', '.join(threads) or 'none'})"
        )
    return "; ".join(parts) or "nothing (the stop was finishing)"


def write_without_locks(record):
    """Emit ``record`` through the root handlers' filters and formatters, taking no lock.

    The handlers' locks are eventlet's green locks (nameko monkey-patches
    threading before it sets up logging), which an OS thread must not wait on.
    """
    for handler in logging.getLogger().handlers or [logging.StreamHandler(sys.stderr)]:
        stream = getattr(handler, "stream", None)
        if stream is None or record.levelno < handler.level or not handler.filter(record):
            continue
        try:
            stream.write(handler.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: S110 - the process is about to exit anyway
            pass


def arm_stop_deadline(runner, seconds):
    """Exit the process if ``runner`` has not stopped ``seconds`` from now."""
    import eventlet.patcher

    real_threading = eventlet.patcher.original("threading")
    real_time = eventlet.patcher.original("time")

    def give_up():
        real_time.sleep(seconds)
        try:
            record = log.makeRecord(
                log.name,
                logging.ERROR,
                __file__,
                0,
                "graceful stop did not finish within %ss (STOP_TIMEOUT_SECONDS); "
                "exiting with status %d. Still running: %s",
                (f"{seconds:g}", STOP_TIMEOUT_EXIT_STATUS, still_running(runner)),
                None,
            )
            write_without_locks(record)
        finally:  # whatever went wrong above, the process ends
            os._exit(STOP_TIMEOUT_EXIT_STATUS)

    real_threading.Thread(target=give_up, name="stop-deadline", daemon=True).start()


def wake_the_hub_on_signals():
    """Make a signal wake eventlet's hub, so what its handler spawned runs at once.

    A Python signal handler runs when the hub's poll is interrupted, and then the
    poll resumes until its next timer is due (seconds, with kombu waiting to
    reconnect): a stop that SIGTERM spawned waited for it. With a wake-up fd
    the signal also makes a pipe readable, which ends the poll.
    """
    import eventlet

    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)

    def drain():
        while True:
            os.read(read_end, 512)  # green under the monkey patch: waits in the hub

    eventlet.spawn_n(drain)


def bound_the_stop(timeout):
    """Make ``nameko run``'s runner arm the stop deadline when a stop is asked for.

    ``nameko.cli.run`` makes its ``ServiceRunner`` from its module namespace,
    so a subclass put there is the runner that SIGTERM (and Ctrl-C) stop.
    Imported here, after eventlet's monkey patch, exactly as ``nameko run``
    would (it patches first thing; a second patch changes nothing).
    """
    import eventlet
    import eventlet.event

    eventlet.monkey_patch()
    import nameko.cli.run

    class BoundedStopRunner(nameko.cli.run.ServiceRunner):
        _deadline_armed = False
        _started = None  # an Event, sent when start() has returned

        def start(self):
            # `nameko run` sets its SIGTERM handler (which spawns `stop`) just
            # before it starts the runner: wrapped, the deadline counts from
            # the signal itself, however late the hub runs that greenlet
            nameko_handler = signal.getsignal(signal.SIGTERM)

            def on_sigterm(signum, frame):
                self.arm_deadline()
                nameko_handler(signum, frame)

            signal.signal(signal.SIGTERM, on_sigterm)
            wake_the_hub_on_signals()
            self._started = eventlet.event.Event()
            try:
                super().start()
            finally:
                self._started.send()

        def stop(self):
            self.arm_deadline()  # Ctrl-C stops the runner without the handler above
            # A stop while the containers start would race their start (nameko
            # then starts them again and never stops): it waits, within the deadline
            if self._started is not None:
                self._started.wait()
            super().stop()

        def arm_deadline(self):
            if not self._deadline_armed:
                self._deadline_armed = True
                arm_stop_deadline(self, timeout)

    nameko.cli.run.ServiceRunner = BoundedStopRunner


def main(argv=None):
    """``-m MODULE ARGS...`` runs a module as ``python -m``; anything else goes to nameko."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    quiet()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    if argv[0] == "run":
        bound_the_stop(stop_timeout())
    from nameko.cli.main import main as nameko_main

    sys.argv = ["nameko", *argv]
    return nameko_main()


if __name__ == "__main__":
    sys.exit(main())
