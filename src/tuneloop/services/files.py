"""Uploaded files: streamed to disk under their SHA-256 (identical uploads share bytes), size-limited."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.store import repo
from tuneloop.store.tables import File

PURPOSES = {"fine-tune", "fine-tune-results", "batch", "assistants", "vision", "user_data", "evals"}
CHUNK = 1 << 20


READABLE = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq"}


def _extension(filename: str) -> str:
    """Kept on the stored bytes so the data readers know the file type."""
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in READABLE else ""


def content_path(settings: Settings, file: File) -> Path:
    return settings.files_dir / f"{file.sha256}{_extension(file.filename)}"


def save_upload(session: Session, settings: Settings, *, stream: BinaryIO, filename: str, purpose: str) -> File:
    if purpose not in PURPOSES:
        raise ServiceError(400, f"purpose '{purpose}' is not one of {', '.join(sorted(PURPOSES))}", "purpose")
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=settings.files_dir, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise ServiceError(400, f"file is larger than the limit of {settings.max_upload_bytes} bytes "
                                            "(TUNELOOP_MAX_UPLOAD_BYTES)", "file", "file_too_large")
                digest.update(chunk)
                out.write(chunk)
        target = settings.files_dir / f"{digest.hexdigest()}{_extension(filename)}"
        if target.exists():
            os.unlink(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    file = repo.add_file(session, filename=filename, purpose=purpose, size=size, sha256=digest.hexdigest())
    session.commit()
    return file


def store_bytes(session: Session, settings: Settings, *, data: bytes, filename: str, purpose: str) -> File:
    import io

    return save_upload(session, settings, stream=io.BytesIO(data), filename=filename, purpose=purpose)


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
