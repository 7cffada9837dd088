"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, events, checkpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tuneloop.api.deps import SessionDep, SettingsDep
from tuneloop.services import jobs as job_service
from tuneloop.store import repo
from tuneloop.store.tables import Checkpoint, Job, JobEvent

router = APIRouter(tags=["fine-tuning"])


def job_public(job: Job) -> dict[str, Any]:
    hp = job.method.get("supervised", {}).get("hyperparameters", {})
    return {"id": job.id, "object": "fine_tuning.job", "model": job.model, "created_at": int(job.created_at),
            "finished_at": int(job.finished_at) if job.finished_at else None,
            "fine_tuned_model": job.fine_tuned_model, "organization_id": job_service.ORG,
            "result_files": job.result_files, "status": job.status, "training_file": job.training_file,
            "validation_file": job.validation_file, "hyperparameters": hp, "trained_tokens": job.trained_tokens,
            "error": job.error, "seed": job.seed, "estimated_finish": None, "integrations": [],
            "metadata": job.job_metadata, "method": job.method, "suffix": job.suffix}


def event_public(event: JobEvent) -> dict[str, Any]:
    return {"object": "fine_tuning.job.event", "id": f"ftevent-{event.seq}", "created_at": int(event.created_at),
            "level": event.level, "message": event.message, "type": event.type, "data": event.data}


def checkpoint_public(checkpoint: Checkpoint, job: Job) -> dict[str, Any]:
    name = f"{job_service.fine_tuned_name(job)}:ckpt-step-{checkpoint.step}"
    return {"object": "fine_tuning.job.checkpoint", "id": checkpoint.id, "created_at": int(checkpoint.created_at),
            "fine_tuned_model_checkpoint": name, "fine_tuning_job_id": job.id, "step_number": checkpoint.step,
            "metrics": checkpoint.metrics}


def _page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


@router.post("/fine_tuning/jobs")
def create(body: job_service.JobCreate, session: SessionDep, settings: SettingsDep) -> dict:
    """The job starts as validating_files: a worker checks its files, then queues it (or fails it, naming
    every problem and its line)."""
    return job_public(job_service.create_job(session, settings, body))


@router.get("/fine_tuning/jobs")
def list_jobs(session: SessionDep, after: str | None = None, limit: int = 20) -> dict:
    rows, more = repo.list_jobs(session, after=after, limit=max(1, min(limit, 100)))
    return _page([job_public(j) for j in rows], more)


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve(session: SessionDep, job_id: str) -> dict:
    return job_public(job_service.require_job(session, job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel(session: SessionDep, job_id: str) -> dict:
    return job_public(job_service.request_cancel(session, job_id))


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause(session: SessionDep, job_id: str) -> dict:
    return job_public(job_service.request_pause(session, job_id))


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume(session: SessionDep, job_id: str) -> dict:
    return job_public(job_service.request_resume(session, job_id))


@router.get("/fine_tuning/jobs/{job_id}/events")
def events(session: SessionDep, job_id: str, after: str | None = None, limit: int = 20) -> dict:
    job_service.require_job(session, job_id)
    rows, more = repo.list_events(session, job_id=job_id, after=after, limit=max(1, min(limit, 1000)))
    return _page([event_public(e) for e in rows], more)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def checkpoints(session: SessionDep, job_id: str, after: str | None = None, limit: int = 10) -> dict:
    job = job_service.require_job(session, job_id)
    rows, more = repo.list_checkpoints(session, job_id=job_id, after=after, limit=max(1, min(limit, 100)))
    return _page([checkpoint_public(c, job) for c in rows], more)
