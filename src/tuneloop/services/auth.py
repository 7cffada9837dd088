"""People: accounts with argon2id password hashes, roles, and who may see what."""

from __future__ import annotations

import re
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from tuneloop.services import ServiceError
from tuneloop.store import review as store
from tuneloop.store.tables import Project, User

ROLES = ("admin", "reviewer", "annotator")
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{2,100}$")
MIN_PASSWORD = 8
_hasher = PasswordHasher()


def create_user(session: Session, *, username: str, password: str, role: str) -> User:
    if not USERNAME.match(username):
        raise ServiceError(400, f"username '{username}': use 2-100 letters, digits, '_', '.', '@' or '-'", "username")
    if role not in ROLES:
        raise ServiceError(400, f"role '{role}' is not one of {', '.join(ROLES)}", "role")
    if len(password) < MIN_PASSWORD:
        raise ServiceError(400, f"the password must have at least {MIN_PASSWORD} characters", "password")
    if store.user_by_name(session, username=username) is not None:
        raise ServiceError(409, f"there is already a user '{username}'", "username", "user_exists")
    user = store.create_user(session, username=username, password_hash=_hasher.hash(password), role=role)
    session.commit()
    return user


def update_user(session: Session, username: str, *, role: str | None = None, password: str | None = None,
                disabled: bool | None = None, by: User | None = None) -> User:
    """An admin changes a person's role, sets a new password, or disables or enables the account. The last
    enabled admin keeps the role and the account (someone must be able to administer), and `by` (the admin
    acting) cannot disable themselves. Commits."""
    user = store.user_by_name(session, username=username)
    if user is None:
        raise ServiceError(404, f"no user '{username}'", "username", "user_not_found")
    if role is not None and role not in ROLES:
        raise ServiceError(400, f"role '{role}' is not one of {', '.join(ROLES)}", "role")
    if password is not None and len(password) < MIN_PASSWORD:
        raise ServiceError(400, f"the password must have at least {MIN_PASSWORD} characters", "password")
    admins = [u for u in store.list_users(session) if u.role == "admin" and u.disabled_at is None]
    last_admin = user.role == "admin" and user.disabled_at is None and len(admins) == 1
    if last_admin and ((role is not None and role != "admin") or disabled):
        raise ServiceError(409, f"'{username}' is the only admin; make someone else admin first", "username",
                           "last_admin")
    if disabled and by is not None and by.id == user.id:
        raise ServiceError(409, "you cannot disable your own account", "disabled", "own_account")
    if role is not None:
        user.role = role
    if password is not None:
        user.password_hash = _hasher.hash(password)
    if disabled is not None:
        user.disabled_at = (user.disabled_at or time.time()) if disabled else None
    session.commit()
    return user


def authenticate(session: Session, *, username: str, password: str) -> User | None:
    """The user, when the password matches and the account is enabled; None otherwise."""
    user = store.user_by_name(session, username=username)
    if user is None or user.disabled_at is not None:
        _hasher.hash(password)  # the same work either way, so timing does not tell which usernames exist
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        session.commit()
    return user


def can_manage(user: User) -> bool:
    return user.role == "admin"


def can_review(user: User) -> bool:
    return user.role in ("admin", "reviewer")


def check_project_access(session: Session, user: User, project: Project) -> None:
    """Admins see every project; others only the projects they were added to (403 otherwise)."""
    if user.role != "admin" and not store.is_member(session, project_id=project.id, user_id=user.id):
        raise ServiceError(403, f"'{user.username}' is not a member of project '{project.name}'", "project",
                           "forbidden")


def require_admin(user: User) -> None:
    if not can_manage(user):
        article = "an" if user.role[:1] in "aeiou" else "a"
        raise ServiceError(403, f"'{user.username}' is {article} {user.role}; this needs an admin", None, "forbidden")


def require_reviewer(user: User) -> None:
    if not can_review(user):
        raise ServiceError(403, f"'{user.username}' is an annotator; accepting and rejecting needs a reviewer",
                           None, "forbidden")
