"""What a worker needs to run a train job: its recipe (files mapped), its model name, its results file."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sqlalchemy.orm import Session

from tuneloop.config.recipe import Recipe, parse_recipe
from tuneloop.config.settings import Settings
from tuneloop.models.registry import resolve
from tuneloop.models.run_folder import Evaluation, RunFolder, Step
from tuneloop.store import repo
from tuneloop.store.blobs import content_path, store_bytes
from tuneloop.store.tables import Job

ORG = "tuneloop"


def job_recipe(session: Session, settings: Settings, job: Job) -> Recipe:
    """The recipe a `train` job runs, with its uploaded file ids mapped to the stored files."""
    recipe = parse_recipe(job.recipe or {})
    sources = [*recipe.data.train, *([recipe.data.validation] if recipe.data.validation else [])]
    for source in sources:
        if source.path.startswith("file-"):
            file = repo.get_file(session, file_id=source.path)
            if file is None:
                raise ValueError(f"file {source.path} no longer exists")
            source.path = str(content_path(settings, file))
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
