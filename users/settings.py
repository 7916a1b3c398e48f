"""The users service's settings: a service's, password hashing, and login throttling."""

from dataclasses import dataclass
from functools import cached_property

from shared.settings import (
    PasswordHashSettings,
    ServiceSettings,
    positive_seconds,
    positive_whole,
    setting,
)
from users.logins import LoginLimits


@dataclass(frozen=True, kw_only=True)
class UsersSettings(PasswordHashSettings, ServiceSettings):
    """What the users service reads. The throttle's defaults are :class:`LoginLimits`'."""

    login_max_failures: int = setting(
        "LOGIN_MAX_FAILURES",
        LoginLimits.per_email,
        parse=positive_whole,
        doc="failed logins of one email within the window that lock that email",
    )
    login_max_failures_per_address: int = setting(
        "LOGIN_MAX_FAILURES_PER_ADDRESS",
        LoginLimits.per_address,
        parse=positive_whole,
        doc="failed logins from one client address within the window that lock that address",
    )
    login_window_seconds: float = setting(
        "LOGIN_WINDOW_SECONDS",
        LoginLimits.window,
        parse=positive_seconds,
        doc="the window in which failed logins count",
    )
    login_lockout_seconds: float = setting(
        "LOGIN_LOCKOUT_SECONDS",
        LoginLimits.lockout,
        parse=positive_seconds,
        doc="how long a locked email or address stays locked (429)",
    )

    @cached_property
    def login_limits(self):
        return LoginLimits(
            per_email=self.login_max_failures,
            per_address=self.login_max_failures_per_address,
            window=self.login_window_seconds,
            lockout=self.login_lockout_seconds,
        )
