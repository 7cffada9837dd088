"""/api: what the OpenAI surface lacks: dataset versions with their statistics, training runs with
their recipes, events and evaluations (saved by `tuneloop eval`)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from tuneloop.api.deps import SettingsDep
from tuneloop.services import catalog

router = APIRouter(tags=["native"])


@router.get("/datasets")
def list_datasets(settings: SettingsDep) -> dict:
    return {"object": "list", "data": catalog.datasets(settings)}


@router.get("/datasets/{ref}")
def get_dataset(settings: SettingsDep, ref: str) -> dict:
    return catalog.dataset(settings, ref)


@router.get("/runs")
def list_runs(settings: SettingsDep) -> dict:
    return {"object": "list", "data": catalog.runs(settings)}


@router.get("/runs/{run_id}")
def get_run(settings: SettingsDep, run_id: str) -> dict:
    return catalog.run(settings, run_id)


@router.get("/runs/{run_id}/events")
def get_run_events(settings: SettingsDep, run_id: str, after: int = Query(0, ge=0),
                   limit: int = Query(1000, ge=1, le=10000)) -> dict:
    return catalog.run_events(settings, run_id, after, limit)


@router.get("/evals")
def list_evals(settings: SettingsDep) -> dict:
    return {"object": "list", "data": catalog.evaluations(settings)}
