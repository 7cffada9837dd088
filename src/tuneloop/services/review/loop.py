"""The loop: people (or a simulation answering from gold labels) label the records the queue hands out,
a model trains on what is reviewed, re-predicts the rest and the held-out records, and each round's
accuracy against the people's labels on the held-out records is kept."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import Settings
from tuneloop.engine.loop import Listener, train
from tuneloop.services import ServiceError
from tuneloop.services.auth import create_user
from tuneloop.services.review import export, prelabel, queue
from tuneloop.services.review.rounds import record_round
from tuneloop.services.review.tasks import task_of
from tuneloop.store import review as store
from tuneloop.store.tables import Project, Round, User

SIMULATOR = "simulated-annotator"
Report = Callable[[str, dict[str, Any]], None]
"""Called with a stage name (labelling, training, predicting, round) and its numbers."""


@dataclass
class LoopSettings:
    model: str = "minilm-l6"
    """What each round trains: a head on the encoder by default (seconds per round on a CPU)."""
    epochs: float = 8
    learning_rate: float = 1e-3
    batch_size: int = 8
    order: str = "uncertainty"
    uncertainty: str = "margin"
    """How re-predictions rank records for the next round: margin or entropy of the label probabilities."""
    seed: int = 0


def _simulator(session: Session, project: Project) -> User:
    user = store.user_by_name(session, username=SIMULATOR)
    if user is None:
        user = create_user(session, username=SIMULATOR, password=secrets.token_urlsafe(24), role="annotator")
    store.add_member(session, project_id=project.id, user_id=user.id)
    session.commit()
    return user


def _gold(project: Project, data: dict[str, Any], field: str, record_id: int) -> str:
    original = data.get("original", {})
    value = original.get(field)
    if isinstance(value, list) and value:
        value = value[0]
    if value not in project.labels:
        raise ServiceError(400, f"record {record_id}: field '{field}' holds {value!r}, not one of the project's "
                                f"labels {project.labels}", "simulate_from")
    return value


def simulate_labels(session: Session, project: Project, user: User, field: str, count: int, order: str) -> int:
    """Answer up to `count` records from the queue with the gold label in `field`, as one annotator would."""
    done = 0
    while done < count:
        view = queue.next_record(session, project, user, order)
        if view is None:
            break
        record = store.get_record(session, project_id=project.id, record_id=view["id"])
        answer = task_of(project).answer_with(_gold(project, record.data, field, record.id))
        queue.submit(session, project, user, view["id"], answer)
        done += 1
    return done


def train_round(session: Session, settings: Settings, project: Project, config: LoopSettings, number: int,
                listener: Listener | None = None) -> Path:
    """Train on everything reviewed in the pool so far; returns the run folder."""
    rows = export.export_rows(session, project, "classify")
    if not rows:
        raise ServiceError(409, f"project '{project.name}' has no reviewed records to train on yet", "project")
    folder = settings.home / "review" / project.id
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"round-{number}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = parse_recipe({
        "model": config.model, "method": "classify", "data": {"train": [str(data)]}, "seed": config.seed,
        "hyperparameters": {"epochs": config.epochs, "learning_rate": config.learning_rate,
                            "batch_size": config.batch_size},
        "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False},
        "output_dir": str(settings.runs_dir / f"{project.name}-round-{number}-{int(time.time())}"),
    })
    return train(recipe, settings, listener=listener).run_dir


def run_simulation(session: Session, settings: Settings, project: Project, *, field: str, rounds: int,
                   per_round: int, config: LoopSettings, report: Report | None = None,
                   listener: Listener | None = None) -> list[Round]:
    """`rounds` turns of label → train → re-predict, answering from the gold labels in `field`."""
    if not task_of(project).label_answers:
        raise ServiceError(400, "the simulated loop answers with labels; it needs a classification project", "task")
    if rounds < 1 or per_round < 1:
        raise ServiceError(400, "rounds and per-round must be at least 1", "rounds")
    report = report or (lambda stage, numbers: None)
    user = _simulator(session, project)
    held = store.count_records(session, project_id=project.id)
    if not any(k.startswith("holdout:") for k in held):
        raise ServiceError(400, f"project '{project.name}' has no held-out records to measure rounds on; create it "
                                "with a holdout fraction (--holdout 0.2)", "holdout")
    report("labelling", {"what": "held-out records"})
    simulate_labels(session, project, user, field, held.get("holdout:open", 0), "id")
    done = []
    for number in range(1, rounds + 1):
        labelled = simulate_labels(session, project, user, field, per_round, config.order)
        report("labelling", {"round": number, "labelled": labelled})
        started = time.time()
        run_dir = train_round(session, settings, project, config, number, listener)
        predictor = prelabel.LocalModel(str(run_dir), settings)
        report("predicting", {"round": number, "model": str(run_dir)})
        prelabel.prelabel(session, project, predictor, records="remaining", uncertainty=config.uncertainty)
        used = len(export.export_rows(session, project, "classify"))
        row = record_round(session, project, predictor.name, labels_used=used, seconds=time.time() - started)
        report("round", {"round": number, "labels": used, "accuracy": row.accuracy, "macro_f1": row.macro_f1,
                         "seconds": row.seconds})
        done.append(row)
    return done
