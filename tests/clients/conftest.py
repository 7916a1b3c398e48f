"""One running system for the client and browser tests, and a cache for what they generate.

Generating a client and installing npm packages take seconds to minutes; both are
kept under ``var/cache/clients`` (git-ignored), keyed by what they come from (the
live document's bytes, the package lock), so a second run only reuses them.
"""

import hashlib
import json
import os
import shutil
import tempfile

import pytest
import requests

from tests.security.stack import running_stack
from tests.system.processes import ROOT

CACHE = os.path.join(ROOT, "var", "cache", "clients")


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("clients")) as running:
        yield running


@pytest.fixture(scope="package")
def live_document(stack):
    """The bytes of the running gateway's /openapi.json."""
    response = requests.get(f"{stack.api}/openapi.json", timeout=10)
    assert response.status_code == 200
    json.loads(response.content)  # it is JSON
    return response.content


def digest(*parts):
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else part.encode())
    return sha.hexdigest()[:16]


def cached(name, key, build):
    """The directory ``var/cache/clients/<name>-<key>``, made by ``build(path)`` if missing.

    Built in a temporary directory and renamed into place, so that an interrupted
    build never leaves a half-made cache entry behind.
    """
    path = os.path.join(CACHE, f"{name}-{key}")
    if not os.path.isdir(path):
        os.makedirs(CACHE, exist_ok=True)
        for stale in os.listdir(CACHE):  # older versions of the same thing
            if stale.startswith(f"{name}-"):
                shutil.rmtree(os.path.join(CACHE, stale), ignore_errors=True)
        building = tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE)
        try:
            build(building)
            os.rename(building, path)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return path
