"""/api/comparisons: comparisons of models, fine-tunes and prompt baselines (`tuneloop compare` as a job), for API
keys and for people logged in to the UI (admins start them; admins and reviewers read them)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from tuneloop.api.deps import Actor, ActorDep, SessionDep, SettingsDep
from tuneloop.services import ServiceError
from tuneloop.services import comparison_jobs as service
from tuneloop.services import jobs as job_service
from tuneloop.services.auth import require_admin

router = APIRouter(tags=["comparisons"])


def _reader(actor: Actor) -> None:
    if actor.user is not None and actor.user.role == "annotator":
        raise ServiceError(403, f"'{actor.user.username}' is an annotator; comparisons are for admins and reviewers",
                           None, "forbidden")


@router.post("/comparisons")
def create_comparison(body: service.ComparisonCreate, session: SessionDep, settings: SettingsDep,
                      actor: ActorDep) -> dict:
    """Queue a comparison (a job of kind `compare`): each candidate scored on the test data, metrics with 95%
    intervals, paired tests against the first, latency; its id is ready at once (`GET /api/comparisons/{id}`)."""
    if actor.user is not None:
        require_admin(actor.user)
    job = service.start_comparison(session, settings, body)
    return {"id": job.params["output"], "job": job.id, "status": job.status}


@router.get("/comparisons")
def list_comparisons(session: SessionDep, settings: SettingsDep, actor: ActorDep) -> dict:
    _reader(actor)
    return {"object": "list", "data": service.list_comparisons(session, settings)}


@router.get("/comparisons/{comparison_id}")
def get_comparison(session: SessionDep, settings: SettingsDep, actor: ActorDep, comparison_id: str) -> dict:
    """The table (comparison.json: rows of metrics with intervals and paired tests), or its job's state."""
    _reader(actor)
    return service.get_comparison(session, settings, comparison_id)


@router.get("/comparisons/{comparison_id}/disagreements")
def get_disagreements(settings: SettingsDep, actor: ActorDep, comparison_id: str,
                      metric: str = Query(min_length=1, max_length=40), candidate: str | None = None,
                      limit: int = Query(50, ge=1, le=1000)) -> dict:
    """The items behind a metric's difference between a candidate and the first, side by side, largest first."""
    _reader(actor)
    return service.disagreements(settings, comparison_id, metric, candidate, limit)


@router.get("/comparisons/{comparison_id}/plot", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}, "description": "The table as a plot"}})
def get_plot(settings: SettingsDep, actor: ActorDep, comparison_id: str) -> FileResponse:
    _reader(actor)
    return FileResponse(service.plot_path(settings, comparison_id), media_type="image/png")


@router.post("/comparisons/{comparison_id}/cancel")
def cancel_comparison(session: SessionDep, actor: ActorDep, comparison_id: str) -> dict:
    if actor.user is not None:
        require_admin(actor.user)
    job = service._job_for(session, comparison_id)
    if job is None:
        raise ServiceError(404, f"no comparison job for '{comparison_id}'", "comparison_id", "comparison_not_found")
    job_service.request_cancel(session, job.id, kind="compare")
    return {"id": comparison_id, "job": job.id, "status": job.status}
