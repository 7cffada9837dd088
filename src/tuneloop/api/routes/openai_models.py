"""/v1/models: base models, fine-tuned models; delete a fine-tuned one."""

from __future__ import annotations

from fastapi import APIRouter

from tuneloop.api.deps import SessionDep, SettingsDep
from tuneloop.services import models as model_service

router = APIRouter(tags=["models"])


@router.get("/models")
def list_models(session: SessionDep) -> dict:
    return {"object": "list", "data": model_service.list_models(session), "has_more": False}


@router.get("/models/{model_id:path}")
def retrieve(session: SessionDep, settings: SettingsDep, model_id: str) -> dict:
    for model in model_service.list_models(session):
        if model["id"] == model_id:
            return model
    model_service.api_model_ref(session, settings, model_id)  # a checkpoint or a run: 404 if it is neither
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "tuneloop"}


@router.delete("/models/{model_id:path}")
def delete(session: SessionDep, model_id: str) -> dict:
    model_service.delete_model(session, model_id)
    return {"id": model_id, "object": "model", "deleted": True}

