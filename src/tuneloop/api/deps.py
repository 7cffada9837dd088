"""Shared dependencies: the database session, the settings, the model cache, and the API key check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.store import repo


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_cache(request: Request) -> Any:
    return request.app.state.models


def require_key(request: Request, session: SessionDep) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ServiceError(401, "no API key: send 'Authorization: Bearer <key>' (tuneloop keys create)", None,
                           "missing_api_key")
    if repo.find_active_key(session, secret=secret.strip()) is None:
        raise ServiceError(401, "the API key is not valid or was revoked", None, "invalid_api_key")
