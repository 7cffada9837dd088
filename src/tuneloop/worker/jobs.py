"""What a worker needs to run a train job: its files checked, its recipe (files mapped), its model name, its
results file."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from tuneloop.config.recipe import Recipe, parse_recipe
from tuneloop.config.settings import Settings
from tuneloop.data.dataset import Source
from tuneloop.data.formats import FORMAT_HELP
from tuneloop.data.problems import DataError
from tuneloop.data.validate import validate
from tuneloop.models.registry import resolve
from tuneloop.models.run_folder import Evaluation, RunFolder, Step
from tuneloop.store import repo
from tuneloop.store.blobs import content_path, store_bytes
from tuneloop.store.tables import Job

ORG = "tuneloop"


PAIR_FORMATS = ("preference", "prompt_chosen")
MAX_FIELD_PROBLEMS = 20


def _grader_problems(recipe: dict, records: list) -> list[str]:
    """Lines whose fields the job's graders name but the line lacks ('line 7: lacks the field team ...')."""
    from tuneloop.evals import graders

    found = []
    parsed = [graders.parse(source["grader"], allow_python=True)  # checked when the job was created
              for source in ((recipe.get("grpo") or {}).get("rewards") or []) if source.get("grader")]
    for line, problem in graders.field_problems(parsed, ((line, record.item()) for line, record in records)):
        found.append(f"line {line}: {problem}")
        if len(found) >= MAX_FIELD_PROBLEMS:
            break
    return found


def validate_files(session: Session, settings: Settings, job_id: str,
                   beat: Callable[[], None] | None = None) -> Job:
    """validating_files -> queued, or failed with every problem and its line (a worker calls this). Messages
    name the file as it was uploaded, never the server's content-addressed copy. A job cancelled meanwhile
    stays cancelled."""
    job = repo.get_job(session, job_id=job_id)
    assert job is not None
    status, error, message = "queued", None, "Files validated; job queued"
    pairs_only = (job.recipe or {}).get("method") == "dpo"  # a dpo job's files are preference pairs, line by line
    prompts_only = (job.recipe or {}).get("method") == "grpo"  # a reinforcement job's: prompts, with graders' fields
    for param in ("training_file", "validation_file"):
        file_id = getattr(job, param)
        if file_id is None:
            continue
        file = repo.get_file(session, file_id=file_id)
        if file is None:
            problem = f"{param} {file_id} no longer exists"
            status, message = "failed", problem
            error = {"code": f"invalid_{param}", "message": problem, "param": param}
            break
        stored = content_path(settings, file)
        try:
            collected: list = []
            report = validate(Source(stored), on_progress=(lambda *_: beat()) if beat else None,
                              collect=collected if prompts_only else None)
            said = f"{param} {file.filename} has"
            if not (prompts_only or pairs_only) and report.format == "prompts":  # unanswered chats: say so per line
                collected = []
                report = validate(Source(stored, "chat"), on_progress=(lambda *_: beat()) if beat else None)
            if prompts_only and report.format != "prompts" and report.rows:
                said = (f"{param} {file.filename} looks like {report.format or 'unknown'} data; a reinforcement job "
                        f"trains on prompts ({FORMAT_HELP['prompts']}):")
                collected = []
                report = validate(Source(stored, "prompts"), on_progress=(lambda *_: beat()) if beat else None,
                                  collect=collected)
            if pairs_only and report.format not in PAIR_FORMATS and report.rows:  # every line as a pair, named
                said = (f"{param} {file.filename} looks like {report.format or 'unknown'} data; a dpo job trains on "
                        f"preference pairs ({FORMAT_HELP['preference']}, or {FORMAT_HELP['prompt_chosen']}):")
                report = validate(Source(stored, "preference"), on_progress=(lambda *_: beat()) if beat else None)
            problems = [p for kept in report.problems.values() for p in kept if p.severity == "error"]
            lines = "; ".join(f"{p.where or 'file'}: {p.message}" for p in problems[:20])
            problem = None if report.ok else f"{said} {report.errors} error(s): {lines}"
            if problem is None and prompts_only:
                missing = _grader_problems(job.recipe or {}, collected)
                if missing:
                    problem = f"{param} {file.filename} has lines the grader cannot read: {'; '.join(missing)}"
        except DataError as e:
            problem = f"{param} {file.filename} cannot be read: {e}"
        except Exception as e:  # noqa: BLE001  a reader's own error (a Parquet file broken half-way): the job fails
            problem = f"{param} {file.filename} cannot be read: {type(e).__name__}: {e}"
        if problem is not None:
            message = problem.replace(str(stored), file.filename).replace(stored.name, file.filename)
            status = "failed"
            error = {"code": "invalid_training_file" if param == "training_file" else "invalid_validation_file",
                     "message": message, "param": param}
            break
    done = session.execute(update(Job).where(Job.id == job.id, Job.status == "validating_files").values(
        status=status, error=error, worker_id=None, finished_at=time.time() if status == "failed" else None))
    if done.rowcount == 1:
        repo.add_event(session, job_id=job.id, message=message, level="error" if error else "info")
    session.commit()
    session.refresh(job)
    return job


def job_recipe(session: Session, settings: Settings, job: Job) -> Recipe:
    """The recipe a `train` job runs, with its uploaded file ids mapped to the stored files."""
    return recipe_with_files(session, settings, job.recipe or {})


def recipe_with_files(session: Session, settings: Settings, data: dict) -> Recipe:
    """A stored recipe with its uploaded file ids (`file-...`) mapped to the stored files."""
    recipe = parse_recipe(data)
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
