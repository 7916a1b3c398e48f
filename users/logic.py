"""What the users service does, as plain functions of a session.

No nameko here: a unit test calls these with a SQLite session, an
``OutboxWriter`` and a cheap ``PasswordHasher``. Every function that changes
something commits once, with its events, or raises and changes nothing.
"""

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from shared.db import core_connection
from shared.events import event_id_of, handle_once
from shared.exceptions import AuthenticationFailed, Conflict, NotFound
from shared.pagination import paginate
from shared.schemas import (
    CredentialsSchema,
    PageQuerySchema,
    UserCreateSchema,
    UserSchema,
    UserUpdateSchema,
    load,
    require_id,
)
from users.models import ProcessedEvent, User

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


def update_user(session, outbox, hasher, user_id, changes):
    user = _get(session, user_id)
    fields = load(UserUpdateSchema, changes)
    changed = sorted(fields)
    if "password" in fields:
        user.password_hash = hasher.hash(fields.pop("password"))
    for name, value in fields.items():
        setattr(user, name, value)
    outbox.add(
        session, "user_updated", {"user_id": user.id, "changed": changed, "user": _event_user(user)}
    )
    session.commit()
    return dump(user)


def delete_user(session, outbox, user_id):
    user = _get(session, user_id)
    session.delete(user)
    outbox.add(session, "user_deleted", {"user_id": user.id})
    session.commit()


def authenticate(session, hasher, email, password):
    """The user with these credentials, or :class:`AuthenticationFailed`.

    An unknown email costs the same hashing time as a wrong password, and both
    fail with the same message, so neither timing nor text tells which it was.
    """
    credentials = load(CredentialsSchema, {"email": email, "password": password})
    user = session.scalars(select(User).where(User.email == credentials["email"])).first()
    if user is None:
        hasher.burn(credentials["password"])
    elif hasher.verify(user.password_hash, credentials["password"]):
        if hasher.needs_rehash(user.password_hash):
            user.password_hash = hasher.hash(credentials["password"])
            session.commit()
        return dump(user)
    raise AuthenticationFailed("wrong email or password")


_users = User.__table__.c
# prebuilt Core: the ORM's bulk update would also sync objects we do not hold
COUNT_ORDER = (
    update(User.__table__)
    .where(_users.id == bindparam("user_id"))
    .values(order_count=_users.order_count + 1)
)


def record_order_created(session, payload):
    """Handle ``order_created``: the order's user counts one more order, once per event.

    The increment and the processed ``event_id`` commit together, so a
    redelivered event changes nothing. An order of a user deleted meanwhile
    counts for nobody (and the event is still marked processed). Returns whether
    the event was applied (``False`` for a duplicate).
    """

    event_id_of(payload)
    user_id = require_id(payload.get("user_id"), "user_id")

    def count_order(session):
        session.connection().execute(COUNT_ORDER, {"user_id": user_id})

    return handle_once(session, ProcessedEvent, payload, "order_created", count_order)
