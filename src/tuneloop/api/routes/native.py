"""/api: what the OpenAI surface lacks: dataset versions with their statistics, training runs with
their recipes, events and evaluations (saved by `tuneloop eval`), and jobs of every kind."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.api.deps import SessionDep, SettingsDep
from tuneloop.services import catalog
from tuneloop.services import jobs as job_service
from tuneloop.services import rewards as reward_service
from tuneloop.services import searches as search_service
from tuneloop.store import repo

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


@router.get("/runs/{run_id}/rollouts")
def get_run_rollouts(settings: SettingsDep, run_id: str, limit: int = Query(20, ge=1, le=500)) -> dict:
    """An RL run's latest rollouts (prompt, completion, rewards, advantage): where reward hacking shows."""
    return catalog.run_rollouts(settings, run_id, limit)


@router.get("/runs/{run_id}/events")
def get_run_events(settings: SettingsDep, run_id: str, after: int = Query(0, ge=0),
                   limit: int = Query(1000, ge=1, le=10000)) -> dict:
    return catalog.run_events(settings, run_id, after, limit)


@router.get("/evals")
def list_evals(settings: SettingsDep) -> dict:
    return {"object": "list", "data": catalog.evaluations(settings)}


@router.get("/jobs")
def list_jobs(session: SessionDep, kind: job_service.JobKind | None = None, after: str | None = None,
              limit: int = Query(50, ge=1, le=1000)) -> dict:
    """Jobs of every kind (or one `kind`), newest first, with status and progress."""
    jobs, more = job_service.list_all_jobs(session, kind=kind, after=after, limit=limit)
    return {"object": "list", "data": [job_service.job_view(j) for j in jobs], "has_more": more}


@router.get("/jobs/{job_id}")
def get_job(session: SessionDep, job_id: str) -> dict:
    return job_service.job_view(job_service.require_job(session, job_id, kind=None))


@router.get("/jobs/{job_id}/events")
def get_job_events(session: SessionDep, job_id: str, since: int = Query(0, ge=0),
                   limit: int = Query(100, ge=1, le=1000)) -> dict:
    """The job's messages after sequence number `since`, oldest first; `next` is the `since` to ask next."""
    job_service.require_job(session, job_id, kind=None)
    events = repo.events_since(session, job_id=job_id, since=since, limit=limit)
    return {"object": "list", "data": [{"seq": e.seq, "created_at": e.created_at, "level": e.level,
                                        "message": e.message, "data": e.data} for e in events],
            "next": events[-1].seq if events else since}


@router.post("/jobs/{job_id}/cancel")
def cancel_job(session: SessionDep, job_id: str) -> dict:
    return job_service.job_view(job_service.request_cancel(session, job_id, kind=None))


class PromptMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(max_length=100_000)


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, description="A reward model: a run of method reward, or its fine-tuned id")
    messages: list[PromptMessage] = Field(min_length=1, max_length=256, description="The prompt the candidates answer")
    candidates: list[str] = Field(min_length=1, max_length=64, description="Answers to score")


@router.post("/rewards")
def score_candidates(body: RewardRequest, session: SessionDep, settings: SettingsDep) -> dict:
    """Each candidate's reward from a trained reward model, best first: `data: [{index, text, score}]`."""
    return reward_service.rank(session, settings, body.model, [m.model_dump() for m in body.messages],
                               body.candidates)


@router.post("/searches")
def create_search(body: search_service.SearchCreate, session: SessionDep, settings: SettingsDep) -> dict:
    """A hyperparameter search on Optuna: one `search-trial` job per trial on the worker queue (so several workers
    run trials together), the study in the project's database."""
    search = search_service.create_search_for_client(session, settings, body)
    return search_service.search_view(session, settings, search)


@router.get("/searches")
def list_searches(session: SessionDep) -> dict:
    rows = search_service.list_searches(session)
    return {"object": "list", "data": [{"id": r.id, "name": r.name, "sampler": r.sampler, "pruner": r.pruner,
                                        "metric": r.metric, "trials": r.trials, "created_at": r.created_at,
                                        "status": search_service.status(search_service.trial_jobs(session, r))}
                                       for r in rows]}


@router.get("/searches/{search_id}")
def get_search(session: SessionDep, settings: SettingsDep, search_id: str) -> dict:
    """The search with its trials (state, value, parameters, every evaluation, job, run, error) and its best
    trial's recipe as YAML."""
    return search_service.search_view(session, settings, search_service.require_search(session, search_id))


@router.get("/searches/{search_id}/plots/{name}", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "The plot as PNG"}})
def get_search_plot(session: SessionDep, settings: SettingsDep, search_id: str,
                    name: Literal["history", "parallel", "importances"]) -> Response:
    """Optuna's optimisation history, parallel coordinates or parameter importances (409 until enough trials are
    complete)."""
    search = search_service.require_search(session, search_id)
    study = search_service.load_study(settings, search)
    return Response(search_service.plot(study, name, search.metric), media_type="image/png")


@router.post("/searches/{search_id}/cancel")
def cancel_search(session: SessionDep, settings: SettingsDep, search_id: str) -> dict:
    """Cancel the trials not yet finished."""
    search = search_service.cancel_search(session, search_id)
    return search_service.search_view(session, settings, search)
