"""Closing the loop with people: train a fine-tuning job on what is reviewed, re-predict the remaining and
held-out records with the new model, and keep each round (labels used, model, accuracy against people).
Re-predicting is a job of kind `repredict` on the worker queue; its progress lives in the database."""

from __future__ import annotations

import io
import json
import re
import time
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
from tuneloop.services.review.tasks import task_of
from tuneloop.store import repo
from tuneloop.store import review as store
from tuneloop.store.tables import Job, Project, Round
from tuneloop.worker.kinds import job_session, register as register_kind

def train_on_reviewed(session: Session, settings: Settings, project: Project, *,
                      model: str | None = None, epochs: int | None = None, classifier: str = "auto",
                      any_path: bool = False, method: str | None = None) -> Job:
    """A fine-tuning job (run by any worker) on the project's current export. A classification project trains
    a classifier (the classify method): a head on an encoder such as minilm-l6 or on a decoder, or a chat model
    answering with the label (`classifier`: auto picks head for encoders, generative for chat models). Other
    types fine-tune a chat model on their `train_as` export. `epochs`: None leaves it to the method's defaults.
    `any_path`: the CLI may name any model folder; over the API, only what `job_service.check_model` allows.
    `model` None: minilm-l6 for a classifier, smollm2-135m-instruct otherwise. `method` "dpo": a project whose
    reviewed records export preference pairs (preferences, corrected drafts) trains the dpo method on them;
    "reward": a reward model on those pairs (or on a rating project's answers to the same prompt, the better rated
    preferred, by the difference in mean rating); "kto": a rating project's answers, rated 4 or 5 desirable and 1
    or 2 not."""
    task = task_of(project)
    if method not in (None, "auto", "dpo", "reward", "kto"):
        raise ServiceError(400, f"method '{method}' is not one of auto, dpo, reward, kto", "method")
    if method == "dpo":
        return _train_dpo(session, settings, project, model=model, epochs=epochs, any_path=any_path)
    if method in ("reward", "kto"):
        return _train_feedback(session, settings, project, method, model=model, epochs=epochs, any_path=any_path)
    model = model or ("minilm-l6" if (task.classifier_export or task.trains) and classifier != "generative" else
                      "smollm2-135m-instruct")
    if task.classifier_export is None and task.train_as is None and task.trains is None:
        raise ServiceError(400, task.not_trainable, "task")
    if classifier not in ("auto", "head", "generative"):
        raise ServiceError(400, f"classifier '{classifier}' is not one of auto, head, generative", "classifier")
    if task.trains is not None and classifier == "generative":
        raise ServiceError(400, f"a {task.name} project trains {task.trains} (a head on an encoder or a decoder); "
                                "it has no generative classifier", "classifier")
    if task.classifier_export is None and task.trains is None and classifier == "head":
        raise ServiceError(400, f"a {task.name} project trains a chat model on its {task.train_as} export, not a "
                                "classifier head", "classifier")
    spec = job_service.check_model(settings, model, any_path=any_path,
                                   encoders=task.classifier_export is not None or task.trains is not None)
    if spec.kind == "encoder" and classifier == "generative":
        raise ServiceError(400, f"model '{model}' is an encoder: it cannot answer with a label; train a classifier "
                                "head on it (classifier: head or auto)", "classifier")
    kind = task.classifier_export or task.train_as or task.exports[0]
    rows = export.export_rows(session, project, kind)
    if not rows:
        raise ServiceError(409, f"project '{project.name}' has no reviewed records to train on yet", "project",
                           "nothing_reviewed")
    if len(rows) < MIN_EXAMPLES:
        raise ServiceError(409, f"project '{project.name}' has {len(rows)} reviewed example(s); at least "
                                f"{MIN_EXAMPLES} are needed to train", "project", "too_few_reviewed")
    method = ({"method": "classify", "classifier": classifier} if task.classifier_export else
              {"method": task.trains} if task.trains else {"method": "sft"})
    return _queue_training(session, settings, project, rows, "reviewed", {"model": model, **method}, epochs)


def _queue_training(session: Session, settings: Settings, project: Project, rows: list[dict[str, Any]], what: str,
                    fields: dict[str, Any], epochs: int | None, api_method: dict[str, Any] | None = None) -> Job:
    """Upload the exported `rows` as the training file and queue a train job on them: the recipe's `fields`
    (model, method and its options), the method's defaults unless `epochs` is given."""
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    file = file_service.save_upload(session, settings, stream=io.BytesIO(body),
                                    filename=f"{project.name}-{what}.jsonl", purpose="fine-tune")
    suffix = re.sub(r"[^A-Za-z0-9-]+", "-", project.name)[:40].strip("-") or None
    recipe = parse_recipe({**fields, "data": {"train": file.id}, "seed": 0,
                           "hyperparameters": {"epochs": epochs} if epochs else {},
                           "checkpoints": {"each_epoch": True, "keep_last": 3}, "evaluation": {"each_epoch": False}})
    return job_service.create_train_job(session, recipe, suffix=suffix, method=api_method,
                                        metadata={"project": project.id, "examples": str(len(rows))})


def _train_dpo(session: Session, settings: Settings, project: Project, *, model: str | None, epochs: int | None,
               any_path: bool) -> Job:
    """A dpo job on the project's preference pairs (what people chose over the other answer, or their
    correction over the model's draft), from the chat model `model` (default smollm2-135m-instruct)."""
    task = task_of(project)
    if "dpo" not in task.exports:
        raise ServiceError(400, f"a {task.name} project's reviewed records are not preference pairs; DPO trains "
                                "on preference and response projects", "method")
    model = model or "smollm2-135m-instruct"
    job_service.check_model(settings, model, any_path=any_path)
    rows = export.export_rows(session, project, "dpo")
    if len(rows) < MIN_EXAMPLES:
        raise ServiceError(409, f"project '{project.name}' has {len(rows)} preference pair(s) to train on; at least "
                                f"{MIN_EXAMPLES} are needed", "project", "too_few_reviewed")
    shown = {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto", "n_epochs": epochs or "auto",
                                                        "batch_size": "auto", "learning_rate_multiplier": "auto"}}}
    return _queue_training(session, settings, project, rows, "pairs", {"model": model, "method": "dpo"}, epochs,
                           shown)


def _train_feedback(session: Session, settings: Settings, project: Project, method: str, *, model: str | None,
                    epochs: int | None, any_path: bool) -> Job:
    """A reward model (method reward, default on minilm-l6) on the project's pairs, or KTO (default on
    smollm2-135m-instruct) on a rating project's rated answers."""
    task = task_of(project)
    kind = {"reward": "reward_pairs" if "reward_pairs" in task.exports else "dpo", "kto": "kto"}[method]
    if kind not in task.exports:
        what = {"reward": "preference pairs or ratings", "kto": "ratings"}[method]
        raise ServiceError(400, f"a {task.name} project's reviewed records are not {what}; {method} trains on "
                                f"{'preference, response and rating' if method == 'reward' else 'rating'} projects",
                           "method")
    model = model or ("minilm-l6" if method == "reward" else "smollm2-135m-instruct")
    job_service.check_model(settings, model, any_path=any_path, encoders=method == "reward")
    rows = export.export_rows(session, project, kind)
    if len(rows) < MIN_EXAMPLES:
        unit = "pair(s)" if method == "reward" else "rated answer(s) (ratings of 3 are left out)"
        raise ServiceError(409, f"project '{project.name}' has {len(rows)} {unit} to train a {method} model on; at "
                                f"least {MIN_EXAMPLES} are needed", "project", "too_few_reviewed")
    shown = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs or "auto"}},
             "tuneloop_method": method}  # not an OpenAI method type: the jobs list shows which one it is
    return _queue_training(session, settings, project, rows, kind.replace("_", "-"), {"model": model, "method": method},
                           epochs, shown)


def project_jobs(session: Session, project: Project) -> list[Job]:
    jobs = session.scalars(select(Job).where(Job.job_metadata.is_not(None)).order_by(Job.created_at.desc()))
    return [job for job in jobs if (job.job_metadata or {}).get("project") == project.id]


def _labels_used(session: Session, project: Project, model: str) -> int | None:
    """The examples the model was trained on, when a job of this project trained it; None (unknown) for a
    model trained elsewhere."""
    for job in project_jobs(session, project):
        if job.fine_tuned_model and model.startswith(job.fine_tuned_model):
            return int((job.job_metadata or {}).get("examples", 0))
    return None


def holdout_accuracy(session: Session, project: Project, model: str) -> tuple[float | None, float | None, int]:
    """The model's accuracy and macro-F1 against the people's labels on the held-out records, as the task type
    scores them (None where it scores none), and how many records that rests on."""
    task = task_of(project)
    predictions = {p.record_id: answer for p in store.latest_predictions(session, project_id=project.id, model=model)
                   if (answer := task.predicted_answer(p)) is not None}
    human = store.human_labels(session, project_id=project.id, split="holdout")
    pairs = [(gold, predictions[record_id]) for record_id, gold in sorted(human.items()) if record_id in predictions]
    if not pairs:
        return None, None, 0
    accuracy, macro_f1 = task.holdout_score(pairs, project.labels)  # type: ignore[arg-type]
    return accuracy, macro_f1, len(pairs)


def record_round(session: Session, project: Project, model: str, *, labels_used: int | None, seconds: float,
                 job: Job | None = None, predicted: int | None = None, take_over: bool = True) -> Round:
    """Keep one round of the loop: the model, how many reviewed examples trained it, its accuracy and macro-F1
    on the held-out records, how many records it scored, how long the round took, and the job it ran for. Every
    way a round happens (a re-predict job, the CLI, the simulated loop) records it here, so rounds compare. The
    job's result is written in the same transaction as the round, so a restarted job finds its round instead of
    adding one. With `take_over`, the round's model pre-fills the queue from now on unless it scores below the
    model that does (on the held-out records); the round keeps which model it replaced. Commits."""
    accuracy, macro_f1, _ = holdout_accuracy(session, project, model)
    in_use, replaced = project.prefill_model, None
    if take_over and in_use != model:
        before = holdout_accuracy(session, project, in_use)[0] if in_use else None
        if accuracy is None or before is None or accuracy >= before:
            prelabel.use_model(session, project, model)
            replaced = in_use
    row = store.add_round(session, project_id=project.id, model=model, labels_used=labels_used, accuracy=accuracy,
                          macro_f1=macro_f1, seconds=seconds, job_id=job.id if job is not None else None,
                          predicted=predicted, replaced=replaced)
    if job is not None:
        session.flush()
        job.result = {"round": row.number, "accuracy": row.accuracy, "labels_used": row.labels_used,
                      "predicted": predicted, "in_use": project.prefill_model}
    session.commit()
    return row


def round_view(row: Round, project: Project, rounds: list[Round]) -> dict[str, Any]:
    """A round as the API, the CLI and the project page show it; `below` names the model that kept the queue
    when this round's model scored under it."""
    scores = {r.model: r.accuracy for r in rounds}
    in_use = project.prefill_model
    below = None
    if row.model != in_use and in_use is not None and row.accuracy is not None and \
            scores.get(in_use) is not None and row.accuracy < scores[in_use]:  # type: ignore[operator]
        below = {"model": in_use, "accuracy": scores[in_use]}
    return {"round": row.number, "model": row.model, "labels_used": row.labels_used, "accuracy": row.accuracy,
            "macro_f1": row.macro_f1, "metric": task_of(project).round_metric, "seconds": row.seconds,
            "predicted": row.predicted, "replaced": row.replaced,
            "in_use": row.model == in_use, "below": below, "created_at": row.created_at}


def rounds_view(session: Session, project: Project) -> list[dict[str, Any]]:
    rounds = store.list_rounds(session, project_id=project.id)
    return [round_view(r, project, rounds) for r in rounds]


def repredict(session: Session, settings: Settings, project: Project, model: str,
              on_progress: Callable[[int, int], None] | None = None, ref: str | None = None,
              job: Job | None = None) -> Round:
    """Score the remaining and held-out records again with `model` (even a model the project has used before:
    every record gets a new prediction), then record the round. `ref`: what to load, when the caller resolved
    `model` already (the API does, by its own rules). `job`: the re-predict job this runs for; a restarted job
    skips the records it predicted already and records the round once (its result is written with the round).
    A 409, and no round, when there is nothing to predict."""
    if job is not None and job.result and "round" in job.result:
        return store.get_round(session, project_id=project.id, number=job.result["round"])
    started = time.time()
    since = job.created_at if job is not None else started
    remaining = [r for r in store.all_records(session, project_id=project.id) if r.status == "open" or r.split == "holdout"]
    if not remaining:
        raise ServiceError(409, f"project '{project.name}' has no open or held-out records to re-predict; no round "
                                "was recorded", "project", "nothing_to_predict")
    if on_progress:  # the total is known before the model loads (which can take a while)
        on_progress(len(store.predicted_ids(session, project_id=project.id, model=model, since=since) &
                        {r.id for r in remaining}), len(remaining))
    predictor = prelabel.LocalModel(ref or serving_ref(session, model), settings, name=model)
    prelabel.prelabel(session, project, predictor, records="remaining", on_progress=on_progress, since=since,
                      use=False)
    predicted = len(store.predicted_ids(session, project_id=project.id, model=model, since=since))
    return record_round(session, project, model, labels_used=_labels_used(session, project, model),
                        seconds=time.time() - started, job=job, predicted=predicted)


# ---------------------------------------------------------------------- re-predicting as a job
ACTIVE = {"queued", "running"}


def start_repredict(session: Session, project: Project, model: str, ref: str) -> Job:
    """Queue a re-predict job (any worker runs it); a 409 while one is queued or running for the project."""
    busy = [j for j in repredict_jobs(session, project) if j.status in ACTIVE]
    if busy:
        raise ServiceError(409, f"this project is already re-predicting ({busy[0].id}); wait for it to finish",
                           "project", "busy")
    job = Job(id=repo.new_id("job"), kind="repredict", model=model, params={"project": project.id, "model": model,
              "ref": ref}, method={}, hyperparameters={}, extra={}, job_metadata={"project": project.id},
              status="queued", result_files=[], created_at=time.time(), cancel_requested=False,
              progress={"done": 0, "total": None, "unit": "records"})
    session.add(job)
    repo.add_event(session, job_id=job.id, message=f"Re-predict with {model} queued")
    session.commit()
    return job


@register_kind("repredict")
def run_repredict_job(job_id: str, settings: Settings) -> None:
    """What a worker's child runs for a re-predict job."""
    with job_session(job_id, settings) as (session, job):
        project = store.find_project(session, ref=job.params["project"])
        if project is None:
            raise ServiceError(404, f"project {job.params['project']} no longer exists", "project")

        def progress(done: int, total: int) -> None:  # prelabel commits after each batch; this rides along
            job.progress = {"done": done, "total": total, "unit": "records"}
            session.commit()

        repredict(session, settings, project, job.params["model"], progress, job.params["ref"], job=job)


def repredict_jobs(session: Session, project: Project) -> list[Job]:
    jobs = session.scalars(select(Job).where(Job.kind == "repredict").order_by(Job.created_at.desc()))
    return [job for job in jobs if (job.params or {}).get("project") == project.id]


def task_view(job: Job) -> dict[str, Any]:
    """A re-predict job as the project page shows it."""
    progress = job.progress or {}
    return {"id": job.id, "project": (job.params or {}).get("project"), "kind": job.kind, "status": job.status,
            "finished": job.status in {"succeeded", "failed", "cancelled"},
            "model": (job.params or {}).get("model"), "done": progress.get("done", 0), "total": progress.get("total"),
            "error": (job.error or {}).get("message"), "result": job.result, "started_at": job.started_at,
            "finished_at": job.finished_at}
