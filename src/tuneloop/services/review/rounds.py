"""Closing the loop with people: train a fine-tuning job on what is reviewed, re-predict the remaining and
held-out records with the new model, and keep each round (labels used, model, accuracy against people).
Re-predicting runs in a background thread whose progress the UI polls."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import Settings
from tuneloop.data.problems import MIN_EXAMPLES
from tuneloop.services import ServiceError
from tuneloop.services import files as file_service
from tuneloop.services import jobs as job_service
from tuneloop.services.models import serving_ref
from tuneloop.services.review import export, prelabel
from tuneloop.services.review.loop import holdout_accuracy
from tuneloop.store import review as store
from tuneloop.store.tables import Job, Project, Round

TRAIN_AS = {"classification": "chat", "response": "sft", "preference": "sft"}


def train_on_reviewed(session: Session, settings: Settings, project: Project, *,
                      model: str = "smollm2-135m-instruct", epochs: int = 1, any_path: bool = False) -> Job:
    """A fine-tuning job (run by any worker) on the project's current export. `any_path`: the CLI may name any
    model folder; over the API, only what `job_service.check_model` allows."""
    kind = TRAIN_AS.get(project.task)
    if kind is None:
        raise ServiceError(400, "a rating project exports reward data; reward models are not trainable here yet",
                           "task")
    job_service.check_model(settings, model, any_path=any_path)
    rows = export.export_rows(session, project, kind)
    if not rows:
        raise ServiceError(409, f"project '{project.name}' has no reviewed records to train on yet", "project",
                           "nothing_reviewed")
    if len(rows) < MIN_EXAMPLES:
        raise ServiceError(409, f"project '{project.name}' has {len(rows)} reviewed example(s); at least "
                                f"{MIN_EXAMPLES} are needed to train", "project", "too_few_reviewed")
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    file = file_service.save_upload(session, settings, stream=io.BytesIO(body),
                                    filename=f"{project.name}-reviewed.jsonl", purpose="fine-tune")
    suffix = re.sub(r"[^A-Za-z0-9-]+", "-", project.name)[:40].strip("-") or None
    recipe = parse_recipe({"model": model, "method": "sft", "data": {"train": file.id}, "seed": 0,
                           "hyperparameters": {"epochs": epochs}, "checkpoints": {"each_epoch": True, "keep_last": 3},
                           "evaluation": {"each_epoch": False}})
    job = job_service.create_train_job(session, recipe, suffix=suffix,
                                       metadata={"project": project.id, "examples": str(len(rows))})
    return job_service.validate_files(session, settings, job.id)


def project_jobs(session: Session, project: Project) -> list[Job]:
    jobs = session.scalars(select(Job).where(Job.job_metadata.is_not(None)).order_by(Job.created_at.desc()))
    return [job for job in jobs if (job.job_metadata or {}).get("project") == project.id]


def _labels_used(session: Session, project: Project, model: str) -> int:
    """The examples the model was trained on, when a job of this project trained it; else what is reviewed."""
    for job in project_jobs(session, project):
        if job.fine_tuned_model and model.startswith(job.fine_tuned_model):
            return int((job.job_metadata or {}).get("examples", 0))
    return len(export.export_rows(session, project, TRAIN_AS.get(project.task, "reward")))


def repredict(session: Session, settings: Settings, project: Project, model: str,
              on_progress: Callable[[int, int], None] | None = None, ref: str | None = None) -> Round:
    """Pre-label the remaining and held-out records with `model`, then record the round. `ref`: what to load,
    when the caller resolved `model` already (the API does, by its own rules)."""
    started = time.time()
    predictor = prelabel.LocalModel(ref or serving_ref(session, model), settings, name=model)
    prelabel.prelabel(session, project, predictor, records="remaining", on_progress=on_progress)
    accuracy, macro_f1, _ = holdout_accuracy(session, project, model) if project.task == "classification" \
        else (None, None, 0)
    row = store.add_round(session, project_id=project.id, model=model,
                          labels_used=_labels_used(session, project, model), accuracy=accuracy, macro_f1=macro_f1,
                          seconds=time.time() - started)
    session.commit()
    return row


class Tasks:
    """Background work per project (one at a time), with progress the UI polls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._count = 0

    def start(self, project_id: str, kind: str, work: Callable[[Callable[[int, int], None]], Any]) -> dict[str, Any]:
        with self._lock:
            if any(t["project"] == project_id and t["status"] == "running" for t in self._tasks.values()):
                raise ServiceError(409, "this project is already re-predicting; wait for it to finish", "project",
                                   "busy")
            self._count += 1
            task = {"id": f"task-{self._count}", "project": project_id, "kind": kind, "status": "running",
                    "done": 0, "total": None, "error": None, "result": None, "started_at": time.time()}
            self._tasks[task["id"]] = task

        def progress(done: int, total: int) -> None:
            task["done"], task["total"] = done, total

        def run() -> None:
            try:
                task["result"] = work(progress)
                task["status"] = "succeeded"
            except ServiceError as e:
                task["status"], task["error"] = "failed", e.message
            except Exception as e:  # shown in the UI; the traceback goes to the server log
                traceback.print_exc()
                task["status"], task["error"] = "failed", f"{type(e).__name__}: {e}"
            task["finished_at"] = time.time()

        threading.Thread(target=run, name=f"tuneloop-{task['id']}", daemon=True).start()
        return dict(task)

    def for_project(self, project_id: str) -> list[dict[str, Any]]:
        return [dict(t) for t in self._tasks.values() if t["project"] == project_id][::-1]
