"""Model ids the API serves: registry base models, fine-tuned models ft:..., and their checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.models.loading import find_run_output
from tuneloop.models.registry import EMBEDDED, ModelError, ModelSpec, is_hub_id, resolve
from tuneloop.models.run_folder import RunFolder
from tuneloop.services import ServiceError
from tuneloop.store import repo
from tuneloop.store.tables import Checkpoint, Job
from tuneloop.worker.jobs import ORG


def serving_ref(session: Session, model_id: str) -> str:
    """What the model cache loads for a model id; 404 naming the id when there is no such model."""
    if model_id.startswith("ft:"):
        base_name, _, step = model_id.partition(":ckpt-step-")
        job = repo.job_for_model(session, model=base_name)
        if job is None or not job.run_dir:
            raise _unknown(model_id)
        if not step:
            return str(RunFolder(job.run_dir).final)
        number = int(step) if step.isdigit() and len(step) < 10 else -1
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.step == number))
        if checkpoint is None or not Path(checkpoint.path).exists():
            raise ServiceError(404, f"no checkpoint at step {step} of '{base_name}' (it may have been pruned)",
                               "model", "model_not_found")
        return checkpoint.path
    if find_run_output(model_id) is not None:  # a run trained from the CLI, by its folder
        return model_id
    try:
        spec = resolve(model_id)
    except ModelError as e:
        raise ServiceError(404, f"no model '{model_id}': {e}", "model", "model_not_found") from None
    if spec.kind == "encoder":
        raise ServiceError(400, f"'{model_id}' is an encoder with no trained head: it cannot chat or pre-label; "
                                "train a classifier on it first (for a review project: train on reviewed data) and "
                                "use that model", "model")
    return model_id


def _unknown(model_id: str) -> ServiceError:
    """One answer for every model the API cannot serve, whatever lies on the server's disks under that name."""
    return ServiceError(404, f"no model '{model_id}': use an id from GET /v1/models (a base model, a fine-tuned "
                                "model or one of its checkpoints) or a run of this server", "model", "model_not_found")


def _server_run(settings: Settings, model_id: str) -> str | None:
    """A training run of this server, by its name (`run-...`, `ftjob-...`) or its folder under the runs folder."""
    runs = settings.runs_dir.resolve()
    candidate = runs / model_id if "/" not in model_id and "\\" not in model_id else Path(model_id)
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if real != runs and real.is_relative_to(runs) and find_run_output(str(real)) is not None:
        return str(real)
    return None


def _cached_hub_model(model_id: str) -> bool:
    """A hub id whose files are in the local Hugging Face cache (the server never downloads on a request)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return False


def api_model_ref(session: Session, settings: Settings, model_id: str) -> str:
    """What a client may name as a model over the API: a registered base model, a fine-tuned model or one of
    its checkpoints, a run of this server, a hub model in the local cache, or a folder or .gguf file under
    TUNELOOP_ALLOWED_PATHS. Anything else is the same 404, so the API cannot be used to probe the disks."""
    if model_id.startswith("ft:") or model_id in EMBEDDED:
        return serving_ref(session, model_id)
    if (run := _server_run(settings, model_id)) is not None:
        return run
    if _nameable_local(settings, model_id):
        return serving_ref(session, model_id)
    raise _unknown(model_id)


def _nameable_local(settings: Settings, model_id: str) -> bool:
    """A hub model in the local cache, or a folder or .gguf file under TUNELOOP_ALLOWED_PATHS."""
    return (is_hub_id(model_id) and _cached_hub_model(model_id)) or settings.allows(model_id)


def api_base_model(settings: Settings, model_id: str) -> ModelSpec:
    """A base model to fine-tune, named over the API (the rules of `api_model_ref`, less fine-tuned models
    and runs); a 400 naming `model` otherwise."""
    if model_id not in EMBEDDED and not _nameable_local(settings, model_id):
        raise ServiceError(400, f"no base model '{model_id}' to fine-tune here: use a base model from GET /v1/models "
                                "(a hub model must be in this server's Hugging Face cache; a folder must be under "
                                "TUNELOOP_ALLOWED_PATHS)", "model", "model_not_found")
    try:
        return resolve(model_id)
    except ModelError as e:
        raise ServiceError(400, str(e), "model", "model_not_found") from None


def list_models(session: Session) -> list[dict]:
    base = [{"id": name, "object": "model", "created": 0, "owned_by": "tuneloop"}
            for name, spec in EMBEDDED.items() if spec.kind == "chat"]
    tuned = [{"id": job.fine_tuned_model, "object": "model", "created": int(job.finished_at or job.created_at),
              "owned_by": ORG} for job in session.scalars(select(Job).where(Job.fine_tuned_model.is_not(None))
                                                          .order_by(Job.created_at.desc()))]
    return base + tuned


def delete_model(session: Session, model_id: str) -> None:
    if model_id in EMBEDDED or (model_id.startswith("ft:") and ":ckpt-step-" in model_id):
        raise ServiceError(403, f"only fine-tuned models can be deleted, not '{model_id}'", "model", "not_deletable")
    if not model_id.startswith("ft:"):
        raise _unknown(model_id)
    job = repo.job_for_model(session, model=model_id)
    if job is None:
        raise _unknown(model_id)
    if job.run_dir:
        shutil.rmtree(RunFolder(job.run_dir).final, ignore_errors=True)
    job.fine_tuned_model = None
    session.commit()
