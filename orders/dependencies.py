"""What the orders service needs from the users service, behind a small wrapper."""

from shared.exceptions import NotFound
from shared.rpc import TimedRpcProxy


class UsersLookup:
    """The one question orders asks users."""

    def __init__(self, proxy):
        self.proxy = proxy

    def exists(self, user_id):
        """True if users knows ``user_id``.

        Within ``RPC_TIMEOUT`` or ``shared.rpc.DependencyTimeout``; users not
        running or the broker away is ``shared.exceptions.Unavailable`` (both
        are ``Unavailable``, which ``create_order`` lets through to its caller).
        """
        try:
            self.proxy.get_user(user_id)
        except NotFound:
            return False
        return True


class Users(TimedRpcProxy):
    """``RpcProxy("users")`` with the project's deadline (``RPC_TIMEOUT``)."""

    def __init__(self, **options):
        super().__init__("users", **options)

    def get_dependency(self, worker_ctx):
        return UsersLookup(super().get_dependency(worker_ctx))
