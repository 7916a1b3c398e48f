"""Throwaway broker accounts on the machine's RabbitMQ, made by scripts/broker_setup.py.

A vhost and one user per service, all with random names, set up exactly as the
compose ``broker-setup`` step sets them up, and deleted afterwards. Nothing else
on the broker is touched: not the guest user, not another vhost.
"""

import contextlib
import json
import secrets
import uuid
from urllib.parse import quote, urlsplit

from kombu import Connection

from scripts import broker_setup


class BrokerAccounts:
    """``uri(service)``: the AMQP URI the service connects with, as its own user."""

    def __init__(self, api_uri, amqp_host="127.0.0.1", amqp_port=5672):
        api = urlsplit(api_uri)
        self.management = broker_setup.Management(
            f"{api.scheme}://{api.hostname}:{api.port}", api.username, api.password
        )
        suffix = uuid.uuid4().hex[:10]
        self.vhost = f"test-perms-{suffix}"
        self.accounts = {
            name: broker_setup.Account(
                f"test-perms-{suffix}-{name}", secrets.token_urlsafe(24), self.vhost
            )
            for name in broker_setup.SERVICES
        }
        self.amqp = f"{amqp_host}:{amqp_port}"

    def uri(self, service):
        account = self.accounts[service]
        return (
            f"amqp://{quote(account.user, safe='')}:{quote(account.password, safe='')}"
            f"@{self.amqp}/{quote(self.vhost, safe='')}"
        )

    def connection(self, service):
        return Connection(
            self.uri(service), connect_timeout=5, transport_options={"confirm_publish": True}
        )

    def create(self):
        with open(broker_setup.DEFAULT_DEFINITIONS) as stream:
            definitions = json.load(stream)
        broker_setup.apply(self.management, self.accounts, definitions)
        return self

    def delete(self):
        with contextlib.suppress(Exception):
            self.management.call("DELETE", f"vhosts/{quote(self.vhost, safe='')}")
        for account in self.accounts.values():
            with contextlib.suppress(Exception):
                self.management.call("DELETE", f"users/{quote(account.user, safe='')}")

    def permissions(self, service):
        user = quote(self.accounts[service].user, safe="")
        return self.management.call(
            "GET", f"permissions/{quote(self.vhost, safe='')}/{user}"
        ).json()
