"""Fine-tuning jobs: create (checking every field), validate their files, map them to an engine recipe."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.recipe import RecipeError
from tuneloop.config.settings import Settings
from tuneloop.data.dataset import Source
from tuneloop.data.validate import validate
from tuneloop.models.registry import ModelError, resolve
from tuneloop.services import ServiceError
from tuneloop.services.files import require_file
from tuneloop.store.blobs import content_path
from tuneloop.store import repo
from tuneloop.store.tables import Job
from tuneloop.worker.jobs import ORG, build_recipe, fine_tuned_name

__all__ = ["ORG", "build_recipe", "fine_tuned_name", "create_job", "validate_files", "request_cancel", "require_job"]

OURS: dict[str, tuple[type, Any]] = {
    "adapter": (str, {"lora", "dora", "ia3", "qlora", "full", "freeze"}),
    "lora_rank": (int, (1, 1024)), "lora_alpha": (int, (1, 4096)), "max_length": (int, (8, 131072)),
    "max_steps": (int, (1, 10_000_000)), "checkpoint_steps": (int, (1, 10_000_000)),
}
FINAL = {"succeeded", "failed", "cancelled"}


def _check_openai(hp: dict[str, Any], where: str) -> dict[str, Any]:
    limits = {"n_epochs": (int, 1, 50), "batch_size": (int, 1, 256), "learning_rate_multiplier": (float, 0, None)}
    out: dict[str, Any] = {}
    for name, value in hp.items():
        param = f"{where}.{name}"
        if name in limits:
            kind, low, high = limits[name]
            if value == "auto" or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ServiceError(400, f"{param} must be {'an integer' if kind is int else 'a number'} or 'auto', "
                                        f"got {value!r}", param, "invalid_hyperparameter")
            if value < low or (high is not None and value > high) or (name == "learning_rate_multiplier" and value <= 0):
                bounds = f"between {low} and {high}" if high is not None else "greater than 0"
                raise ServiceError(400, f"{param} must be {bounds}, got {value!r}", param, "invalid_hyperparameter")
            out[name] = value
        elif name in OURS:
            kind, allowed = OURS[name]
            ok = (isinstance(value, str) and value in allowed) if kind is str else (
                isinstance(value, int) and not isinstance(value, bool) and allowed[0] <= value <= allowed[1])
            if not ok:
                expected = ", ".join(sorted(allowed)) if kind is str else f"an integer from {allowed[0]} to {allowed[1]}"
                raise ServiceError(400, f"{param} must be {expected}, got {value!r}", param, "invalid_hyperparameter")
            out[name] = value
        elif name != "beta":
            known = ", ".join([*limits, *OURS])
            raise ServiceError(400, f"{param} is not a known hyperparameter (known: {known})", param,
                               "invalid_hyperparameter")
    return out


def _method(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(method as stored, its checked hyperparameters)."""
    method = body.get("method") or {"type": "supervised", "supervised": {"hyperparameters":
                                                                         body.get("hyperparameters") or {}}}
    if not isinstance(method, dict):
        raise ServiceError(400, "method must be an object like {'type': 'supervised', ...}", "method")
    kind = method.get("type", "supervised")
    if kind in {"dpo", "reinforcement"}:
        raise ServiceError(400, f"method.type '{kind}' is not available in this build yet; use 'supervised'",
                           "method.type", "unsupported_method")
    if kind != "supervised":
        raise ServiceError(400, f"method.type must be 'supervised', 'dpo' or 'reinforcement', got {kind!r}",
                           "method.type")
    section = method.get("supervised") or {}
    hp = section.get("hyperparameters") or {}
    if not isinstance(hp, dict):
        raise ServiceError(400, "method.supervised.hyperparameters must be an object",
                           "method.supervised.hyperparameters")
    checked = _check_openai(hp, "method.supervised.hyperparameters")
    return {"type": "supervised", "supervised": {"hyperparameters": {**{"n_epochs": "auto", "batch_size": "auto",
            "learning_rate_multiplier": "auto"}, **hp}}}, checked


def create_job(session: Session, settings: Settings, body: dict[str, Any]) -> Job:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ServiceError(400, "model is required: a base model id from GET /v1/models", "model")
    try:
        spec = resolve(model)
    except ModelError as e:
        raise ServiceError(400, str(e), "model", "model_not_found") from None
    if spec.kind == "encoder":
        raise ServiceError(400, f"model '{model}' is an encoder; fine-tuning jobs train chat models", "model")
    if not isinstance(body.get("training_file"), str):
        raise ServiceError(400, "training_file is required: the id of an uploaded file", "training_file")
    require_file(session, body["training_file"], "training_file")
    if body.get("validation_file") is not None:
        require_file(session, body["validation_file"], "validation_file")
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
        raise ServiceError(400, "suffix must be a string of at most 64 characters", "suffix")
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16):
        raise ServiceError(400, "metadata must be an object of at most 16 pairs", "metadata")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ServiceError(400, f"seed must be an integer, got {seed!r}", "seed")
    method, checked = _method(body)
    job = Job(id=repo.new_id("ftjob"), model=model, training_file=body["training_file"],
              validation_file=body.get("validation_file"), suffix=suffix, seed=seed or 0, method=method,
              hyperparameters=checked, extra={}, job_metadata=metadata, status="validating_files",
              result_files=[], created_at=time.time(), cancel_requested=False)
    try:
        build_recipe(session, job, settings)
    except RecipeError as e:
        raise ServiceError(400, str(e), "method.supervised.hyperparameters") from None
    session.add(job)
    repo.add_event(session, job_id=job.id, message=f"Created fine-tuning job: {job.id}")
    session.commit()
    return job


def validate_files(session: Session, settings: Settings, job_id: str) -> Job:
    """validating_files -> queued, or failed with every problem and its line."""
    job = repo.get_job(session, job_id=job_id)
    assert job is not None
    for param in ("training_file", "validation_file"):
        file_id = getattr(job, param)
        if file_id is None:
            continue
        file = require_file(session, file_id, param)
        report = validate(Source(content_path(settings, file)))
        if not report.ok:
            problems = [p for kept in report.problems.values() for p in kept if p.severity == "error"]
            lines = "; ".join(f"{p.where or 'file'}: {p.message}" for p in problems[:20])
            message = f"{param} {file.filename} has {report.errors} error(s): {lines}"
            job.status, job.finished_at = "failed", time.time()
            job.error = {"code": "invalid_training_file" if param == "training_file" else "invalid_validation_file",
                         "message": message, "param": param}
            repo.add_event(session, job_id=job.id, message=message, level="error")
            session.commit()
            return job
    job.status = "queued"
    repo.add_event(session, job_id=job.id, message="Files validated; job queued")
    session.commit()
    return job


def request_cancel(session: Session, job_id: str) -> Job:
    job = require_job(session, job_id)
    if job.status in FINAL:
        raise ServiceError(400, f"job {job_id} is already {job.status}", "fine_tuning_job_id")
    if job.status in {"validating_files", "queued", "paused"} or (job.status == "running" and job.worker_id is None):
        job.status, job.finished_at = "cancelled", time.time()
        repo.add_event(session, job_id=job.id, message="Job cancelled")
    else:
        job.cancel_requested = True
    session.commit()
    return job


def request_pause(session: Session, job_id: str) -> Job:
    job = require_job(session, job_id)
    if job.status != "running":
        raise ServiceError(400, f"only a running job can be paused; job {job_id} is {job.status}",
                           "fine_tuning_job_id")
    job.pause_requested = True
    repo.add_event(session, job_id=job.id, message="Pause requested: saving a checkpoint")
    session.commit()
    return job


def request_resume(session: Session, job_id: str) -> Job:
    job = require_job(session, job_id)
    if job.status != "paused":
        raise ServiceError(400, f"only a paused job can be resumed; job {job_id} is {job.status}",
                           "fine_tuning_job_id")
    job.status = "queued"
    repo.add_event(session, job_id=job.id, message="Resume requested: queued to continue from its checkpoint")
    session.commit()
    return job


def require_job(session: Session, job_id: str) -> Job:
    job = repo.get_job(session, job_id=job_id)
    if job is None:
        raise ServiceError(404, f"no fine-tuning job with id '{job_id}'", "fine_tuning_job_id", "job_not_found")
    return job


