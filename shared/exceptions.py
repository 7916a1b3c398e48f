"""Exceptions that cross RPC.

Each one is registered with ``deserialize_to_instance``, so a caller that imports
this module gets the same class back instead of a ``RemoteError``. nameko rebuilds
a remote exception as ``cls(*exc.args)``: every class here keeps its constructor
arguments JSON-able and in ``args``.
"""

from nameko.exceptions import deserialize_to_instance


class ServiceError(Exception):
    """An expected failure with a stable machine-readable ``code``."""

    code = "ERROR"

    def __init__(self, message, details=None):
        # nameko sends args that are not str/list/dict as their str(): a None
        # would come back as "None", so it is left out and restored by default
        super().__init__(message, *(() if details is None else (details,)))
        self.message = message
        self.details = details

    def __str__(self):
        return self.message


@deserialize_to_instance
class InvalidInput(ServiceError):
    """The arguments break the contract; ``details`` maps field names to errors."""

    code = "VALIDATION_ERROR"


@deserialize_to_instance
class IdempotencyKeyReused(InvalidInput):
    """An ``Idempotency-Key`` already used by this user for a different request."""

    code = "IDEMPOTENCY_KEY_REUSED"


@deserialize_to_instance
class NotFound(ServiceError):
    code = "NOT_FOUND"


@deserialize_to_instance
class Conflict(ServiceError):
    """The request clashes with the current state (duplicate, bad transition)."""

    code = "CONFLICT"


@deserialize_to_instance
class AuthenticationFailed(ServiceError):
    code = "UNAUTHORIZED"


@deserialize_to_instance
class Forbidden(ServiceError):
    code = "FORBIDDEN"


@deserialize_to_instance
class TooManyRequests(ServiceError):
    """Refused for a while; ``details["retry_after"]`` says how long, in seconds."""

    code = "TOO_MANY_REQUESTS"

    @property
    def retry_after(self):
        details = self.details if isinstance(self.details, dict) else {}
        return max(1, int(details.get("retry_after", 1)))


@deserialize_to_instance
class Unavailable(ServiceError):
    """A dependency (database, another service) cannot be reached."""

    code = "UNAVAILABLE"


# What entrypoints list in ``expected_exceptions=``: failures that are the
# caller's business, not crashes of ours, so nameko does not log them as errors.
EXPECTED = (InvalidInput, NotFound, Conflict, AuthenticationFailed, Forbidden, TooManyRequests)
