"""Password hashing with Argon2id.

Why Argon2id: it won the Password Hashing Competition and is OWASP's first
choice; being memory-hard, it makes GPU and ASIC guessing expensive, unlike
PBKDF2. The settings ``PASSWORD_HASH_MEMORY_KIB`` / ``PASSWORD_HASH_TIME_COST``
(:class:`shared.settings.PasswordHashSettings`) default to OWASP's minimum (one
lane, about 20-40 ms a hash here); raise them for more.
Hashes carry their parameters, so old hashes keep verifying and are upgraded on
the next successful login.

Under eventlet a CPU-bound hash would stall every greenthread of the service,
so the work runs in eventlet's thread pool (argon2's C code releases the GIL),
at most one hash per CPU at a time: more would not finish sooner, and each
holds its 19 MiB.

Memory: glibc raises its mmap threshold after freeing a large block, so each
thread's 19 MiB would then come from (and stay in) that thread's heap arena:
40 concurrent logins took a service from 79 MB to 392 MB resident. Pinning the
threshold keeps Argon2's blocks mmapped, so they go back to the system.
"""

import ctypes
import ctypes.util
import os

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError
from eventlet import tpool
from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider

from shared.settings import PasswordHashSettings, settings_of

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default, made fixed


def keep_large_blocks_mmapped():
    """Fix glibc's mmap threshold (see the module docstring); a no-op elsewhere."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


class PasswordHasher:
    def __init__(
        self,
        memory_kib=PasswordHashSettings.password_hash_memory_kib,
        time_cost=PasswordHashSettings.password_hash_time_cost,
    ):
        self._argon2 = _Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID
        )
        # verifying something for an unknown email costs as much as for a known one
        self._dummy_hash = self._argon2.hash("not a real password")
        self._slots = Semaphore(os.cpu_count() or 1)

    def _in_thread(self, function, *args):
        with self._slots:
            return tpool.execute(function, *args)

    def hash(self, password):
        return self._in_thread(self._argon2.hash, password)

    def verify(self, password_hash, password):
        """True if ``password`` matches; never raises for a mismatch or a bad hash."""
        try:
            return self._in_thread(self._argon2.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def burn(self, password):
        """Spend the time of a verify, for the unknown-user path (no timing oracle)."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash):
        return self._argon2.check_needs_rehash(password_hash)


class Passwords(DependencyProvider):
    """One :class:`PasswordHasher` per container, with the service's
    :class:`shared.settings.PasswordHashSettings`."""

    def setup(self):
        keep_large_blocks_mmapped()
        settings = settings_of(self.container)
        self.hasher = PasswordHasher(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
        )

    def get_dependency(self, worker_ctx):
        return self.hasher
