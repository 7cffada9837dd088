"""Per-request pieces the UI pages and the API share: the database session, the settings, and the person
logged in with a signed session cookie (with the CSRF token their pages carry)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.store import review as review_store
from tuneloop.store.tables import User

CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def session_user(request: Request, session: Session) -> User | None:
    """The person logged in with this request's session cookie, if any (and still enabled)."""
    user_id = request.session.get("user_id") if "session" in request.scope else None
    if not user_id:
        return None
    user = review_store.get_user(session, user_id=user_id)
    return user if user is not None and user.disabled_at is None else None


def csrf_token(request: Request) -> str:
    """The token pages put in a meta tag; cookie-authenticated writes must echo it in X-CSRF-Token."""
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(24)
    return request.session["csrf"]


def check_csrf(request: Request) -> None:
    if request.method in SAFE_METHODS:
        return
    expected, sent = request.session.get("csrf"), request.headers.get(CSRF_HEADER)
    if not expected or not sent or not secrets.compare_digest(expected, sent):
        raise ServiceError(403, "missing or wrong X-CSRF-Token header (reload the page)", None, "csrf")
