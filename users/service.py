"""The users service: accounts, passwords, authentication, roles.

Entrypoints translate and delegate; the logic lives in :mod:`users.logic`.
"""

# a module import: a class imported by name would look like a second service to `nameko run`
from shared import health
from shared.db import Database
from shared.events import event_handler
from shared.exceptions import EXPECTED
from shared.heap import FrozenStartupHeap
from shared.logs import LoggingContext
from shared.metrics import Metrics, counter
from shared.outbox import Outbox
from shared.passwords import Passwords
from shared.rpc import rpc
from shared.settings import SettingsProvider
from users import logic, refresh_tokens
from users.models import Base, OutboxEvent
from users.settings import UsersSettings


class UsersService(health.OperationalEndpoints):
    name = "users"

    settings = SettingsProvider(UsersSettings)
    log_context = LoggingContext()
    heap = FrozenStartupHeap()
    metrics = Metrics(counter("users_registered_total", "Accounts created"))
    db = Database(Base)
    outbox = Outbox(OutboxEvent)
    passwords = Passwords()

    @rpc(expected_exceptions=EXPECTED)
    def create_user(self, email, name, password, role="user"):
        data = {"email": email, "name": name, "password": password, "role": role}
        user = logic.create_user(self.db.session, self.outbox, self.passwords, data)
        self.metrics.users_registered.inc()
        return user

    @rpc(expected_exceptions=EXPECTED)
    def get_user(self, user_id):
        return logic.get_user(self.db.autocommit_connection, user_id)

    @rpc(expected_exceptions=EXPECTED)
    def list_users(self, limit=20, cursor=None):
        return logic.list_users(self.db.session, limit, cursor)

    @rpc(expected_exceptions=EXPECTED)
    def update_user(self, user_id, changes):
        """``changes``: name, password, role; ``current_password`` proves a self-change."""
        return logic.update_user(
            self.db.session,
            self.outbox,
            self.passwords,
            user_id,
            changes,
            self.settings.login_limits,
        )

    @rpc(expected_exceptions=EXPECTED)
    def delete_user(self, user_id):
        logic.delete_user(self.db.session, self.outbox, user_id)

    @rpc(expected_exceptions=EXPECTED)
    def authenticate(self, email, password, client_address=None):
        """The user (with its ``token_version``); failures are throttled per email
        and per ``client_address`` (``TooManyRequests`` while locked)."""
        return logic.authenticate(
            self.db.session,
            self.passwords,
            email,
            password,
            client_address=client_address,
            limits=self.settings.login_limits,
        )

    @rpc(expected_exceptions=EXPECTED)
    def get_token_version(self, user_id):
        """Tokens of ``user_id`` with an older version are void (password or role changed)."""
        return logic.get_token_version(self.db.autocommit_connection, user_id)

    @rpc(expected_exceptions=EXPECTED)
    def store_refresh_token(self, user_id, jti, expires_at):
        """Remember a refresh token the gateway issued (``expires_at``: ISO 8601)."""
        refresh_tokens.store_refresh_token(self.db.session, user_id, jti, expires_at)

    @rpc(expected_exceptions=EXPECTED)
    def rotate_refresh_token(self, old_jti, new_jti, new_expires_at):
        """Spend a refresh token for a new one; returns the user as it is now."""
        return refresh_tokens.rotate_refresh_token(
            self.db.session, old_jti, new_jti, new_expires_at
        )

    @event_handler("orders", "order_created")
    def handle_order_created(self, payload):
        """The order's user counts one more order (once per event, whatever the redelivery)."""
        # False: a duplicate
        return logic.record_order_created(
            self.db.session, payload, autocommit=self.db.autocommit_connection
        )
