"""Small helpers for tests that watch something happen in another greenthread or process."""

import time

import requests


def wait_until(predicate, timeout=5, interval=0.05):
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def answers_ok(url, timeout=1):
    """True if ``url`` answers 200 now; False for any other answer or none."""
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def wait_for_ok(url, process, timeout=30, describe=lambda: ""):
    """Wait until ``url`` answers 200 while ``process`` (a Popen) keeps running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the process exited before {url} answered\n{describe()}")
        if answers_ok(url):
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s\n{describe()}")
