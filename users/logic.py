"""What the users service does, as plain functions of a session.

No nameko here: a unit test calls these with a SQLite session, an
``OutboxWriter`` and a cheap ``PasswordHasher``. Every function that changes
something commits once, with its events, or raises and changes nothing.
"""

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from shared.db import core_connection
from shared.events import (
    event_id_of,
    handle_once,
    handle_once_in_one_statement,
    once_statement,
)
from shared.exceptions import AuthenticationFailed, Conflict, InvalidInput, NotFound
from shared.outbox import utcnow
from shared.pagination import paginate
from shared.schemas import PageQuerySchema, load, require_id
from users import logins
from users.logins import LoginLimits
from users.models import ProcessedEvent, RefreshToken, User
from users.schemas import CredentialsSchema, UserCreateSchema, UserSchema, UserUpdateSchema

user_schema = UserSchema()

# what events say of a user: the public fields, never the password hash
EVENT_FIELDS = ("id", "email", "name", "role")


def dump(user):
    return user_schema.dump(user)


def _event_user(user):
    return {field: getattr(user, field) for field in EVENT_FIELDS}


def _get(session, user_id):
    user = session.get(User, require_id(user_id, "user_id"))
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def _email_taken(email):
    return Conflict(f"email {email} is already registered", {"email": ["Already registered."]})


def create_user(session, outbox, hasher, data):
    fields = load(UserCreateSchema, data)
    user = User(
        email=fields["email"],
        name=fields["name"],
        role=fields["role"],
        password_hash=hasher.hash(fields["password"]),
        order_count=0,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise _email_taken(fields["email"]) from None
    outbox.add(session, "user_created", {"user_id": user.id, "user": _event_user(user)})
    session.commit()
    return dump(user)


# the hot read (every order asks whether its user exists): one prebuilt Core statement
_USER_BY_ID = select(
    *(
        User.__table__.c[name]
        for name in ("id", "email", "name", "role", "order_count", "created_at")
    )
).where(User.__table__.c.id == bindparam("user_id"))


def get_user(db, user_id):
    user_id = require_id(user_id, "user_id")
    row = core_connection(db).execute(_USER_BY_ID, {"user_id": user_id}).first()
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return user_schema.dump(row._mapping)


def list_users(session, limit=20, cursor=None):
    page = load(PageQuerySchema, {"limit": limit, "cursor": cursor})
    users, next_cursor = paginate(session, select(User), User.id, page["limit"], page["cursor"])
    return {"items": [dump(user) for user in users], "next_cursor": next_cursor}


def update_user(session, outbox, hasher, user_id, changes, limits=None):
    """Change a user's name, password or role.

    ``current_password``, when given, must be the user's password (wrong:
    :class:`InvalidInput`, counted as a failed login of that email, so it cannot
    be guessed faster than a login). A new password or role raises the user's
    ``token_version`` and ends every refresh token: every token issued before
    the change stops working, and the user logs in again.
    """
    user = _get(session, user_id)
    fields = load(UserUpdateSchema, changes)
    current_password = fields.pop("current_password", None)
    if current_password is not None:
        _check_current_password(session, hasher, user, current_password, limits or LoginLimits())
    changed = sorted(fields)
    ends_sessions = "password" in fields or fields.get("role", user.role) != user.role
    if "password" in fields:
        user.password_hash = hasher.hash(fields.pop("password"))
    for name, value in fields.items():
        setattr(user, name, value)
    if ends_sessions:
        user.token_version += 1
        end_refresh_tokens(session, user.id)
    outbox.add(
        session,
        "user_updated",
        {
            "user_id": user.id,
            "changed": changed,
            "user": _event_user(user),
            "token_version": user.token_version,
        },
    )
    session.commit()
    return dump(user)


def _check_current_password(session, hasher, user, password, limits):
    key = logins.email_key(user.email)
    logins.refuse_if_locked(session, [key])
    if not hasher.verify(user.password_hash, password):
        user_id = user.id
        session.rollback()
        logins.record_failure(session, limits, [(key, limits.per_email)])
        raise InvalidInput(
            f"invalid changes to user {user_id}",
            {"current_password": ["Does not match the current password."]},
        )


def get_token_version(db, user_id):
    """The user's current token version (see :func:`update_user`), or :class:`NotFound`."""
    user_id = require_id(user_id, "user_id")
    version = core_connection(db).execute(_TOKEN_VERSION, {"user_id": user_id}).scalar()
    if version is None:
        raise NotFound(f"user {user_id} not found")
    return version


_TOKEN_VERSION = select(User.__table__.c.token_version).where(
    User.__table__.c.id == bindparam("user_id")
)


def with_token_version(user):
    """The user as the gateway needs it to issue tokens: the dump and its token version."""
    return {**dump(user), "token_version": user.token_version}


def end_refresh_tokens(session, user_id):
    """Delete every refresh token of ``user_id`` (in the caller's transaction).

    Deleted, not marked used: an old token then fails as unknown, and its later
    use does not look like the theft of a newer one (see :mod:`users.refresh_tokens`).
    """
    session.execute(delete(RefreshToken).where(RefreshToken.user_id == user_id))


def delete_user(session, outbox, user_id):
    user = _get(session, user_id)
    session.delete(user)
    outbox.add(session, "user_deleted", {"user_id": user.id})
    session.commit()


def authenticate(session, hasher, email, password, client_address=None, limits=None):
    """The user with these credentials (with its ``token_version``), or
    :class:`AuthenticationFailed`; :class:`TooManyRequests` while the email or
    the client address is locked (see :mod:`users.logins`).

    An unknown email costs the same hashing time as a wrong password, and both
    fail with the same message, so neither timing nor text tells which it was.
    """
    credentials = load(CredentialsSchema, {"email": email, "password": password})
    limits = limits or LoginLimits()
    keys = [(logins.email_key(credentials["email"]), limits.per_email)]
    if client_address is not None:
        keys.append((logins.address_key(client_address), limits.per_address))
    logins.refuse_if_locked(session, [key for key, _ in keys])
    user = session.scalars(select(User).where(User.email == credentials["email"])).first()
    if user is None:
        hasher.burn(credentials["password"])
    elif hasher.verify(user.password_hash, credentials["password"]):
        if hasher.needs_rehash(user.password_hash):
            user.password_hash = hasher.hash(credentials["password"])
        found = with_token_version(user)
        logins.clear_failures(session, keys[0][0])
        return found
    session.rollback()
    logins.record_failure(session, limits, keys)
    raise AuthenticationFailed("wrong email or password")


_users = User.__table__.c
# prebuilt Core: the ORM's bulk update would also sync objects we do not hold;
# updated_at is set here: a prepared statement gets no onupdate (see Prepared)
COUNT_ORDER = (
    update(User.__table__)
    .where(_users.id == bindparam("user_id"))
    .values(order_count=_users.order_count + 1, updated_at=bindparam("now"))
)
COUNT_ORDER_ONCE = once_statement("count_order_once", ProcessedEvent, COUNT_ORDER)


def record_order_created(session, payload, autocommit=None):
    """Handle ``order_created``: the order's user counts one more order, once per event.

    The increment and the processed ``event_id`` commit together, so a
    redelivered event changes nothing. An order of a user deleted meanwhile
    counts for nobody (and the event is still marked processed). Returns whether
    the event was applied (``False`` for a duplicate). ``autocommit``: a Core
    connection in autocommit mode; on PostgreSQL both are then one statement.
    """

    event_id_of(payload)
    params = {"user_id": require_id(payload.get("user_id"), "user_id"), "now": utcnow()}
    if autocommit is not None and autocommit.dialect.name == "postgresql":
        return handle_once_in_one_statement(
            autocommit, COUNT_ORDER_ONCE, payload, "order_created", params
        )

    def count_order(session):
        session.connection().execute(COUNT_ORDER, params)

    return handle_once(session, ProcessedEvent, payload, "order_created", count_order)
