"""Small helpers: tests that watch something happen in another greenthread or process,
and tests of settings."""

import time

import requests

from shared.settings import ConfigError, load_settings

# what every process must set: a test of other settings adds its own to these
REQUIRED_SETTINGS = {
    "AMQP_URI": "amqp://guest:guest@localhost:5672/",
    "WEB_SERVER_ADDRESS": "127.0.0.1:8000",
}


def settings_problems(settings_class, config, service_name="test"):
    """What ``settings_class`` refuses in ``config`` (plus REQUIRED_SETTINGS), a sentence each."""
    try:
        load_settings(settings_class, {**REQUIRED_SETTINGS, **config}, service_name)
    except ConfigError as error:
        return list(error.problems)
    return []


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
