"""Shared dependencies: the database session, the settings, the model cache, and who is asking: an API key
(`Authorization: Bearer`) or a person logged in to the review UI (a signed session cookie)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from tuneloop.services import ServiceError
from tuneloop.store import repo
from tuneloop.store.tables import User
from tuneloop.web.session import SAFE_METHODS, SessionDep, SettingsDep, check_csrf, session_user

__all__ = ["SessionDep", "SettingsDep", "ActorDep", "require_key", "get_cache"]

def get_cache(request: Request) -> Any:
    return request.app.state.models


def _key_is_valid(request: Request, session: Session) -> bool | None:
    """None without an Authorization header; else whether it holds an active key. The gate has already
    looked for requests under /v1 and /api."""
    checked = getattr(request.state, "credential", None)
    if checked is not None:
        return True if checked == "key" else None
    header = request.headers.get("authorization", "")
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    return scheme.lower() == "bearer" and bool(secret.strip()) and \
        repo.find_active_key(session, secret=secret.strip()) is not None


def require_key(request: Request, session: SessionDep) -> None:
    """An API key, or (to read only: the UI's runs pages) a logged-in admin or reviewer."""
    valid = _key_is_valid(request, session)
    if valid:
        return
    if valid is None and (user := session_user(request, session)) is not None:
        if user.role == "annotator":
            raise ServiceError(403, f"'{user.username}' is an annotator; this needs an admin or reviewer", None,
                               "forbidden")
        if request.method not in SAFE_METHODS:
            raise ServiceError(403, "changes here need an API key ('Authorization: Bearer <key>'), not a login",
                               None, "needs_api_key")
        return
    if valid is None:
        raise ServiceError(401, "no API key: send 'Authorization: Bearer <key>' (tuneloop keys create)", None,
                           "missing_api_key")
    raise ServiceError(401, "the API key is not valid or was revoked", None, "invalid_api_key")


class Actor:
    """Who acts: `user` for a logged-in person; None for an API key, which may do what an admin does except
    annotate (annotations belong to people)."""

    def __init__(self, user: User | None):
        self.user = user

    @property
    def is_admin(self) -> bool:
        return self.user is None or self.user.role == "admin"

    def person(self) -> User:
        if self.user is None:
            raise ServiceError(400, "annotations belong to people: log in to the review UI to annotate", None,
                               "needs_user")
        return self.user


def get_actor(request: Request, session: SessionDep) -> Actor:
    valid = _key_is_valid(request, session)
    if valid:
        return Actor(None)
    if valid is None and (user := session_user(request, session)) is not None:
        check_csrf(request)
        return Actor(user)
    if valid is None:
        raise ServiceError(401, "log in, or send 'Authorization: Bearer <key>'", None, "not_authenticated")
    raise ServiceError(401, "the API key is not valid or was revoked", None, "invalid_api_key")


ActorDep = Annotated[Actor, Depends(get_actor)]
