"""Start-up for `nameko shell` (``PYTHONSTARTUP=shared/shell.py``; ``make shell`` sets it).

- Imports the project's exceptions, so a refused call raises ``NotFound``,
  ``Conflict``, ``InvalidInput`` ... with their ``details``, not a ``RemoteError``.
- Replaces ``n.rpc`` with a proxy that gives up after ``RPC_TIMEOUT`` seconds
  (nameko's shell proxy waits forever on a service that is down).
"""

from nameko.standalone.rpc import ClusterRpcProxy

import shared.exceptions  # noqa: F401  (registers the exceptions that cross RPC)


def _with_timeout(helper):
    timeout = float(helper.config.get("RPC_TIMEOUT", 5))
    helper.disconnect()
    proxy = ClusterRpcProxy(helper.config, timeout=timeout)
    helper.rpc = proxy.start()
    helper.disconnect = proxy.stop


if "n" in globals():  # run by nameko shell, which defines the helper ``n``
    _with_timeout(globals()["n"])
