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
"""

import logging
import runpy
import sys
import warnings

# the banner is "\nEventlet is deprecated. It is currently ..."
EVENTLET_BANNER = r"\s*Eventlet is deprecated"
# basic.ack, as py-amqp formats the method signature in that warning
BASIC_ACK = (60, 80)
USAGE = __doc__.split("\n\n")[1]


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
    from nameko.cli.main import main as nameko_main

    sys.argv = ["nameko", *argv]
    return nameko_main()


if __name__ == "__main__":
    sys.exit(main())
