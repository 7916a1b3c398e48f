"""The README walk-through in TypeScript: openapi-typescript types from the live document,
openapi-fetch calls, type-checked by tsc, run by tsx on the machine's Node.js.

npm packages come from ``ts/package-lock.json`` (``npm ci``), installed once into the
cache with the walk-through beside them; the types are made again only when the
document changes.
"""

import os
import shutil
import subprocess

import pytest

from tests.clients.conftest import cached, digest

pytestmark = pytest.mark.integration

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ts")
LOCK = os.path.join(HERE, "package-lock.json")
SCRIPT = "walkthrough.ts"
# a property with a default is optional to send (the server fills it in)
GENERATE = [
    "node_modules/.bin/openapi-typescript",
    "openapi.json",
    "-o",
    "schema.d.ts",
    "--default-non-nullable=false",
]
TSCONFIG = """{
  "compilerOptions": {
    "target": "es2022", "module": "esnext", "moduleResolution": "bundler",
    "strict": true, "noEmit": true, "skipLibCheck": true, "types": []
  },
  "files": ["walkthrough.ts", "schema.d.ts"]
}
"""


def read(path):
    with open(path, "rb") as source:
        return source.read()


def node_packages():
    """A directory with ``node_modules`` installed from the lock file."""

    def build(path):
        for name in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(HERE, name), path)
        run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], path, timeout=300)

    return cached("ts-node-modules", digest(read(LOCK)), build)


def run(command, cwd, timeout=120):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def workdir(live_document):
    packages = node_packages()

    def build(path):
        os.symlink(os.path.join(packages, "node_modules"), os.path.join(path, "node_modules"))
        shutil.copy(os.path.join(HERE, "package.json"), path)
        with open(os.path.join(path, "openapi.json"), "wb") as out:
            out.write(live_document)
        run(GENERATE, path)

    return cached("ts-client", digest(live_document, read(LOCK), *GENERATE), build)


def test_the_walkthrough_through_openapi_fetch(stack, workdir):
    shutil.copy(os.path.join(HERE, SCRIPT), workdir)
    with open(os.path.join(workdir, "tsconfig.json"), "w") as out:
        out.write(TSCONFIG)
    run(["node_modules/.bin/tsc", "-p", "tsconfig.json"], workdir)
    output = run(["node_modules/.bin/tsx", SCRIPT, stack.api], workdir)
    assert '"ok":true' in output
