"""Garbage collection that does not pause calls for what every process holds for ever.

A service holds about 100,000 objects from start to end (modules, SQLAlchemy
and marshmallow machinery), and every full collection walked them all: about
50 ms during which no call made progress, often enough to set the p99 of a
busy route. Frozen once the container has started, they are never scanned
again; what calls allocate is collected as before.
"""

import gc

from nameko.extensions import DependencyProvider


class FrozenStartupHeap(DependencyProvider):
    """Moves everything alive when the container starts out of the collector's way."""

    def start(self):
        gc.collect()
        gc.freeze()

    def stop(self):
        # what the container held may now be garbage: let the collector see it
        # again (in a process that runs containers one after another, tests)
        gc.unfreeze()

    kill = stop
