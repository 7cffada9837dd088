"""/v1/files: upload (streamed to disk), list, retrieve, content, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import FileResponse

from tuneloop.api.deps import SessionDep, SettingsDep
from tuneloop.services import files as file_service
from tuneloop.store import repo
from tuneloop.store.tables import File

router = APIRouter(tags=["files"])


def file_public(file: File) -> dict:
    return {"id": file.id, "object": "file", "bytes": file.bytes, "created_at": int(file.created_at),
            "filename": file.filename, "purpose": file.purpose, "status": file.status, "status_details": None,
            "expires_at": None}


Purpose = Literal[tuple(sorted(file_service.PURPOSES))]  # type: ignore[valid-type]


@router.post("/files")
def upload(session: SessionDep, settings: SettingsDep, file: UploadFile, purpose: Annotated[Purpose, Form()]) -> dict:
    stored = file_service.save_upload(session, settings, stream=file.file, filename=file.filename or "upload",
                                      purpose=purpose)
    return file_public(stored)


@router.get("/files")
def list_files(session: SessionDep, purpose: str | None = None, limit: int = 10000, after: str | None = None,
               order: Literal["asc", "desc"] = "desc") -> dict:
    rows, more = repo.list_files(session, purpose=purpose, after=after, limit=max(1, min(limit, 10000)),
                                 newest_first=order == "desc")
    data = [file_public(f) for f in rows]
    return {"object": "list", "data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


@router.get("/files/{file_id}")
def retrieve(session: SessionDep, file_id: str) -> dict:
    return file_public(file_service.require_file(session, file_id))


@router.get("/files/{file_id}/content")
def content(session: SessionDep, settings: SettingsDep, file_id: str) -> FileResponse:
    file = file_service.require_file(session, file_id)
    return FileResponse(file_service.content_path(settings, file), media_type="application/octet-stream",
                        filename=file_service.base_name(file.filename))  # files stored before names were cut


@router.delete("/files/{file_id}")
def delete(session: SessionDep, settings: SettingsDep, file_id: str) -> dict:
    file_service.delete_file(session, settings, file_id=file_id)
    return {"id": file_id, "object": "file", "deleted": True}
