"""Content-addressed bytes: every file lives once under files/<sha256><ext>, written by streaming."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.store import repo
from tuneloop.store.tables import File

READABLE = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq"}
CHUNK = 1 << 20


class TooLarge(ValueError):
    """The upload went past the size limit; nothing was stored."""


def _extension(filename: str) -> str:
    """Kept on the stored bytes so the data readers know the file type."""
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in READABLE else ""


def content_path(settings: Settings, file: File) -> Path:
    return settings.files_dir / f"{file.sha256}{_extension(file.filename)}"


def save_stream(session: Session, settings: Settings, *, stream: BinaryIO, filename: str, purpose: str) -> File:
    """Stream to a temp file while hashing, then move it into place (or drop it if the bytes exist)."""
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=settings.files_dir, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise TooLarge(f"file is larger than the limit of {settings.max_upload_bytes} bytes "
                                   "(TUNELOOP_MAX_UPLOAD_BYTES)")
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
    return save_stream(session, settings, stream=io.BytesIO(data), filename=filename, purpose=purpose)
