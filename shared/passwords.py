"""Password hashing with Argon2id.

Why Argon2id: it won the Password Hashing Competition and is OWASP's first
choice; being memory-hard, it makes GPU and ASIC guessing expensive, unlike
PBKDF2. Defaults are OWASP's minimum (19 MiB, 2 passes, 1 lane, about 20-40 ms
here); raise them with ``PASSWORD_HASH_MEMORY_KIB`` / ``PASSWORD_HASH_TIME_COST``.
Hashes carry their parameters, so old hashes keep verifying and are upgraded on
the next successful login.

Under eventlet a CPU-bound hash would stall every greenthread of the service,
so the work runs in eventlet's thread pool (argon2's C code releases the GIL).
"""

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError
from eventlet import tpool
from nameko.extensions import DependencyProvider

OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2


class PasswordHasher:
    def __init__(self, memory_kib=OWASP_MEMORY_KIB, time_cost=OWASP_TIME_COST):
        self._argon2 = _Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID
        )
        # verifying something for an unknown email costs as much as for a known one
        self._dummy_hash = self._argon2.hash("not a real password")

    def hash(self, password):
        return tpool.execute(self._argon2.hash, password)

    def verify(self, password_hash, password):
        """True if ``password`` matches; never raises for a mismatch or a bad hash."""
        try:
            return tpool.execute(self._argon2.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def burn(self, password):
        """Spend the time of a verify, for the unknown-user path (no timing oracle)."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash):
        return self._argon2.check_needs_rehash(password_hash)


class Passwords(DependencyProvider):
    """One :class:`PasswordHasher` per container, set from config."""

    def setup(self):
        config = self.container.config
        self.hasher = PasswordHasher(
            memory_kib=int(config.get("PASSWORD_HASH_MEMORY_KIB", OWASP_MEMORY_KIB)),
            time_cost=int(config.get("PASSWORD_HASH_TIME_COST", OWASP_TIME_COST)),
        )

    def get_dependency(self, worker_ctx):
        return self.hasher
