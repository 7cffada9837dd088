"""Uploaded files: checked purpose and size; deleting one that a job uses is refused."""

from __future__ import annotations

import re
from typing import BinaryIO

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.store import repo
from tuneloop.store.blobs import TooLarge, content_path, save_stream
from tuneloop.store.tables import File

PURPOSES = {"fine-tune", "fine-tune-results", "batch", "assistants", "vision", "user_data", "evals"}


def base_name(filename: str) -> str:
    """The last part of a client's file name, split at '/' and '\\': it is echoed back in downloads, where a name
    like '../../etc/passwd' must not reach a client that saves it as told."""
    name = re.split(r"[/\\]", filename)[-1]
    return name if name not in {"", ".", ".."} else "upload"


def save_upload(session: Session, settings: Settings, *, stream: BinaryIO, filename: str, purpose: str) -> File:
    if purpose not in PURPOSES:
        raise ServiceError(400, f"purpose '{purpose}' is not one of {', '.join(sorted(PURPOSES))}", "purpose")
    try:
        return save_stream(session, settings, stream=stream, filename=base_name(filename), purpose=purpose)
    except TooLarge as e:
        raise ServiceError(400, str(e), "file", "file_too_large") from None


def require_file(session: Session, file_id: str, param: str = "file_id") -> File:
    file = repo.get_file(session, file_id=file_id)
    if file is None:
        raise ServiceError(404, f"no file with id '{file_id}'", param, "file_not_found")
    return file


def delete_file(session: Session, settings: Settings, *, file_id: str) -> None:
    file = require_file(session, file_id)
    users = repo.jobs_using_file(session, file_id=file_id)
    if users:
        raise ServiceError(409, f"file '{file_id}' is used by fine-tuning job {users[0].id}; it cannot be deleted",
                           "file_id", "file_in_use")
    path = content_path(settings, file)
    shared = [other for other in repo.files_with(session, sha256=file.sha256) if other.id != file.id
              and content_path(settings, other) == path]
    session.delete(file)
    session.commit()
    if not shared:
        path.unlink(missing_ok=True)
