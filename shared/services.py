"""The services of this system, listed once.

Every tool that starts, migrates or watches them reads this list: the local
runner (``scripts/run.py``), the Makefile (``python -m shared.services``) and
the tests. tests/deploy/test_services_list.py holds docker-compose.yml, the
Kubernetes manifests and Prometheus' scrape config to it, so adding a service
here and forgetting it there fails a test.
"""

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    name: str
    port: int  # its HTTP port: the API for the gateway, /health and /metrics for all
    has_database: bool  # owns a database, migrated from <name>/migrations

    @property
    def module(self):
        return f"{self.name}.service"

    @property
    def config(self):
        return f"config/{self.name}.yaml"


SERVICES = (
    Service("users", 8001, has_database=True),
    Service("orders", 8002, has_database=True),
    Service("gateway", 8000, has_database=False),
)


def names(with_database=False):
    return [s.name for s in SERVICES if s.has_database or not with_database]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m shared.services", description="Print the services' names."
    )
    parser.add_argument(
        "--with-database", action="store_true", help="only those that own a database"
    )
    print(" ".join(names(parser.parse_args(argv).with_database)))


if __name__ == "__main__":
    main()
