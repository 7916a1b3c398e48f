"""Small helpers for tests that watch something happen in another greenthread or process."""

import time


def wait_until(predicate, timeout=5, interval=0.05):
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
