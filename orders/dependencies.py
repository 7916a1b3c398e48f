"""What the orders service needs from the users service, behind a small wrapper."""

import eventlet
from nameko.exceptions import UnknownService
from nameko.rpc import RpcProxy

from shared.exceptions import NotFound, Unavailable


class UsersLookup:
    """The one question orders asks users, with a deadline."""

    def __init__(self, proxy, timeout):
        self.proxy = proxy
        self.timeout = timeout

    def exists(self, user_id):
        """True if users knows ``user_id``; ``Unavailable`` if it does not answer in time."""
        late = Unavailable(f"the users service did not answer within {self.timeout:g}s")
        try:
            with eventlet.Timeout(self.timeout, late):
                self.proxy.get_user(user_id)
        except NotFound:
            return False
        except UnknownService:
            raise Unavailable("the users service is not running") from None
        return True


class Users(RpcProxy):
    """``RpcProxy("users")`` with ``RPC_TIMEOUT`` (nameko 2.14.1's proxy has none)."""

    def __init__(self, **options):
        super().__init__("users", **options)

    def setup(self):
        super().setup()
        self.timeout = float(self.container.config.get("RPC_TIMEOUT", 5))

    def get_dependency(self, worker_ctx):
        return UsersLookup(super().get_dependency(worker_ctx), self.timeout)
