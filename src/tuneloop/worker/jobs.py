"""What a worker needs to run a job: its engine recipe, its model name, its results file."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.recipe import Recipe, parse_recipe
from tuneloop.config.settings import Settings
from tuneloop.engine.methods import method_for
from tuneloop.models.registry import resolve
from tuneloop.models.run_folder import Evaluation, RunFolder, Step
from tuneloop.store import repo
from tuneloop.store.blobs import content_path, store_bytes
from tuneloop.store.tables import Job

ORG = "tuneloop"


def _path(session: Session, settings: Settings, file_id: str) -> str:
    file = repo.get_file(session, file_id=file_id)
    if file is None:
        raise ValueError(f"file {file_id} no longer exists")
    return str(content_path(settings, file))


def build_recipe(session: Session, job: Job, settings: Settings) -> Recipe:
    """What was not given (OpenAI's 'auto') is left to the method's defaults; learning_rate_multiplier scales
    the method's default learning rate for the adapter."""
    hp = job.hyperparameters
    adapter = hp.get("adapter", "lora")
    data: dict[str, Any] = {"train": _path(session, settings, job.training_file)}
    if job.validation_file:
        data["validation"] = _path(session, settings, job.validation_file)
    recipe = parse_recipe({
        "model": job.model, "method": "sft", "data": data, "seed": job.seed,
        "adapter": {"type": adapter, **({"r": hp["lora_rank"]} if "lora_rank" in hp else {}),
                    **({"alpha": hp["lora_alpha"]} if "lora_alpha" in hp else {})},
        "hyperparameters": {"epochs": hp.get("n_epochs"), "batch_size": hp.get("batch_size", 8),
                            "max_length": hp.get("max_length", 512),
                            **({"max_steps": hp["max_steps"]} if "max_steps" in hp else {})},
        "checkpoints": {"each_epoch": True, "keep_last": 3,
                        **({"every_steps": hp["checkpoint_steps"]} if "checkpoint_steps" in hp else {})},
        "evaluation": {"each_epoch": bool(job.validation_file)},
    })
    if "learning_rate_multiplier" in hp:
        default = method_for(recipe, "chat").defaults(1).values["learning_rate"]
        recipe.hyperparameters.learning_rate = default * float(hp["learning_rate_multiplier"])
    return recipe


def fine_tuned_name(job: Job) -> str:
    return f"ft:{resolve(job.model).name}:{ORG}:{job.suffix or ''}:{job.id}"


def results_csv(run_dir: Path) -> bytes:
    """step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy from the run's events."""
    events = RunFolder(run_dir).read_events()
    evals = {e.step: e.metrics for e in events if isinstance(e, Evaluation)}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])
    for e in events:
        if isinstance(e, Step):
            valid = evals.get(e.step, {})
            writer.writerow([e.step, f"{e.loss:.6f}", "", valid.get("eval_loss", ""), ""])
    return out.getvalue().encode()


def store_results(session: Session, settings: Settings, job: Job) -> str:
    file = store_bytes(session, settings, data=results_csv(Path(job.run_dir or "")), filename=f"{job.id}-results.csv",
                       purpose="fine-tune-results")
    return file.id
