"""Model ids the API serves: registry base models, fine-tuned models ft:..., and their checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.models.loading import find_run_output
from tuneloop.models.registry import EMBEDDED, ModelError, resolve
from tuneloop.services import ServiceError
from tuneloop.services.jobs import ORG
from tuneloop.store import repo
from tuneloop.store.tables import Checkpoint, Job


def serving_ref(session: Session, model_id: str) -> str:
    """What the model cache loads for a model id; 404 naming the id when there is no such model."""
    if model_id.startswith("ft:"):
        base_name, _, step = model_id.partition(":ckpt-step-")
        job = repo.job_for_model(session, model=base_name)
        if job is None or not job.run_dir:
            raise ServiceError(404, f"no fine-tuned model '{base_name}'", "model", "model_not_found")
        if not step:
            return str(Path(job.run_dir) / "final")
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id,
                                                             Checkpoint.step == int(step) if step.isdigit() else -1))
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
        raise ServiceError(400, f"'{model_id}' is an encoder; it cannot chat", "model")
    return model_id


def list_models(session: Session) -> list[dict]:
    base = [{"id": name, "object": "model", "created": 0, "owned_by": "tuneloop"}
            for name, spec in EMBEDDED.items() if spec.kind == "chat"]
    tuned = [{"id": job.fine_tuned_model, "object": "model", "created": int(job.finished_at or job.created_at),
              "owned_by": ORG} for job in session.scalars(select(Job).where(Job.fine_tuned_model.is_not(None))
                                                          .order_by(Job.created_at.desc()))]
    return base + tuned


def delete_model(session: Session, model_id: str) -> None:
    if not model_id.startswith("ft:") or ":ckpt-step-" in model_id:
        raise ServiceError(400, f"only fine-tuned models can be deleted, not '{model_id}'", "model")
    job = repo.job_for_model(session, model=model_id)
    if job is None:
        raise ServiceError(404, f"no fine-tuned model '{model_id}'", "model", "model_not_found")
    if job.run_dir:
        shutil.rmtree(Path(job.run_dir) / "final", ignore_errors=True)
    job.fine_tuned_model = None
    session.commit()
