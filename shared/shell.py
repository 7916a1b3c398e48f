"""Start-up for `nameko shell` (``PYTHONSTARTUP=shared/shell.py``; ``make shell`` sets it).

- Imports the project's exceptions, so a refused call raises ``NotFound``,
  ``Conflict``, ``InvalidInput`` ... with their ``details``, not a ``RemoteError``.
- Replaces ``n.rpc`` with a proxy that gives up after ``RPC_TIMEOUT`` seconds
  (nameko's shell proxy waits forever on a service that is down).
- With piped input (``echo '...' | make shell``) a line that raises prints its
  traceback and the next line still runs, as in a terminal (nameko's own
  shell stops at the first error then); the exit status is 1 if any line raised.
"""

import sys
from code import InteractiveConsole

import nameko.cli.code
from nameko.standalone.rpc import ClusterRpcProxy

import shared.exceptions  # noqa: F401  (registers the exceptions that cross RPC)
from shared.framework import REIMPLEMENTED  # noqa: F401  (guards the versions this was written for)
from shared.settings import Settings, read_setting


class _CountingConsole(InteractiveConsole):
    """The plain console: shows each error and goes on, counting them."""

    errors = 0

    def runcode(self, code):
        try:
            exec(code, self.locals)  # noqa: S102  (running what was typed is the point)
        except SystemExit:
            raise
        except BaseException:
            self.errors += 1
            self.showtraceback()


def _interact(banner=None, local=None, raise_expections=False):
    """Stands in for ``nameko.cli.code.interact``; ends with status 1 after any error."""
    console = _CountingConsole(locals=local)
    if not sys.stdin.isatty():
        sys.ps1 = sys.ps2 = ""  # no prompts between the output lines of a script
    console.interact(banner=banner, exitmsg="")
    if console.errors and not sys.stdin.isatty():
        sys.exit(1)


def _with_timeout(helper):
    timeout = read_setting(Settings, "rpc_timeout", helper.config)
    helper.disconnect()
    proxy = ClusterRpcProxy(helper.config, timeout=timeout)
    helper.rpc = proxy.start()
    helper.disconnect = proxy.stop


if "n" in globals():  # run by nameko shell, which defines the helper ``n``
    _with_timeout(globals()["n"])
    # nameko's ShellRunner.plain() looks it up here when it starts the console
    nameko.cli.code.interact = _interact
