"""Review projects: create one from any dataset the data layer reads, add people, summarise progress."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.data.dataset import Source, load_records
from tuneloop.data.formats import dump_record
from tuneloop.data.problems import DataError
from tuneloop.data.records import LabelledRecord, PreferenceRecord, Record
from tuneloop.data.versions import resolve_version
from tuneloop.services import ServiceError
from tuneloop.store import review as store
from tuneloop.store.tables import Project, User

TASKS = ("classification", "response", "preference", "rating")


def read_source(settings: Settings, ref: str) -> tuple[str, str, list[tuple[int, Record]]]:
    """(source name, format, [(line, record)]) of a file path or an imported dataset version."""
    try:
        if Path(ref).exists():
            fmt, records = load_records(Source(Path(ref)))
            return Path(ref).name, fmt, records
        version = resolve_version(settings.datasets_dir, ref)
        return version.id, version.meta["format"], version.records()
    except DataError as e:
        raise ServiceError(400, str(e), "data", "invalid_data") from None


def _split_prompt(record: Record) -> tuple[list[dict[str, Any]], str | None]:
    """The conversation up to the last assistant answer, and that answer (None when it ends with the user)."""
    messages = [m.model_dump(exclude_none=True) for m in record.to_messages()]
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None


def _last_user(messages: list[dict[str, Any]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else (messages[-1]["content"] if messages else "")


def record_row(task: str, fmt: str, line: int, record: Record, source: str) -> dict[str, Any]:
    """What the store keeps for one record of a task; ServiceError naming the line when it does not fit."""
    original = dump_record(record, fmt)
    if task == "classification":
        text = record.text if isinstance(record, LabelledRecord) else _last_user(_split_prompt(record)[0])
        data: dict[str, Any] = {"original": original}
    elif task == "preference":
        if not isinstance(record, PreferenceRecord):
            raise ServiceError(400, f"{source} line {line}: a preference project needs two answers per prompt "
                                    f"(preference or prompt/chosen/rejected data), not a {record.kind} record",
                               "data", "invalid_data")
        prompt = [m.model_dump(exclude_none=True) for m in record.messages]
        answers = ["\n".join(m.content for m in record.chosen), "\n".join(m.content for m in record.rejected)]
        text, data = _last_user(prompt), {"original": original, "prompt": prompt, "answers": answers}
    else:
        if isinstance(record, LabelledRecord):
            raise ServiceError(400, f"{source} line {line}: a {task} project needs prompts (chat, instruction or "
                                    "prompt/completion data), not labelled text", "data", "invalid_data")
        prompt, answer = _split_prompt(record)
        if task == "rating" and answer is None:
            raise ServiceError(400, f"{source} line {line}: a rating project needs an answer to rate; this "
                                    "conversation ends with the user", "data", "invalid_data")
        text, data = _last_user(prompt), {"original": original, "prompt": prompt, "answer": answer}
    if not text.strip():
        raise ServiceError(400, f"{source} line {line}: the text to review is empty", "data", "invalid_data")
    return {"source": source, "source_index": line, "data": data, "text": text}


def create_project(session: Session, settings: Settings, *, name: str, task: str, data: str,
                   labels: list[str] | None = None, multi_label: bool = False, guidelines: str = "",
                   overlap: int = 1, holdout: float = 0.0, seed: int = 0) -> Project:
    """A project with the records of `data` (a file or a dataset version). Nothing is stored on error."""
    if task not in TASKS:
        raise ServiceError(400, f"task '{task}' is not one of {', '.join(TASKS)}", "task")
    if not name.strip():
        raise ServiceError(400, "the project needs a name", "name")
    if store.find_project(session, ref=name) is not None:
        raise ServiceError(409, f"there is already a project '{name}'", "name", "project_exists")
    if not 1 <= overlap <= 20:
        raise ServiceError(400, f"overlap {overlap}: each record needs between 1 and 20 annotations", "overlap")
    if not 0.0 <= holdout < 1.0:
        raise ServiceError(400, f"holdout {holdout}: give the held-out fraction, from 0 to below 1", "holdout")
    source, fmt, records = read_source(settings, data)
    if task == "classification":
        labels = _label_set(labels, records, source)
    rows = [record_row(task, fmt, line, record, source) for line, record in records]
    rng = random.Random(seed)
    held = set(rng.sample(range(len(rows)), int(round(len(rows) * holdout))))
    for i, row in enumerate(rows):
        row["split"] = "holdout" if i in held else "pool"
    project = store.create_project(session, name=name, task=task, labels=labels or [], multi_label=multi_label,
                                   guidelines=guidelines, overlap=overlap)
    session.flush()
    store.add_records(session, project_id=project.id, rows=rows, seed=seed)
    session.commit()
    return project


def _label_set(labels: list[str] | None, records: list[tuple[int, Record]], source: str) -> list[str]:
    found = sorted({label for _, r in records if isinstance(r, LabelledRecord) for label in r.labels})
    if not labels:
        if not found:
            raise ServiceError(400, f"{source} has no labels to take the label set from; give the labels "
                                    "(--labels a,b,c)", "labels")
        return found
    labels = [label.strip() for label in labels if label.strip()]
    if len(set(labels)) != len(labels):
        raise ServiceError(400, f"the labels repeat: {', '.join(labels)}", "labels")
    if len(labels) < 2:
        raise ServiceError(400, "a classification project needs at least two labels", "labels")
    return labels


def get_project(session: Session, ref: str) -> Project:
    project = store.find_project(session, ref=ref)
    if project is None:
        raise ServiceError(404, f"no project '{ref}'", "project", "project_not_found")
    return project


def visible_projects(session: Session, user: User | None) -> list[Project]:
    """Every project for admins (and API keys), the member projects for everyone else."""
    if user is None or user.role == "admin":
        return store.list_projects(session)
    return store.list_projects(session, member=user.id)


def add_member(session: Session, project: Project, username: str) -> User:
    user = store.user_by_name(session, username=username)
    if user is None:
        raise ServiceError(404, f"no user '{username}' (create one with `tuneloop users create`)", "username",
                           "user_not_found")
    store.add_member(session, project_id=project.id, user_id=user.id)
    session.commit()
    return user


def summary(session: Session, project: Project) -> dict[str, Any]:
    """Counters per status and per person, the label distribution and labels over time (per day)."""
    counts = store.count_records(session, project_id=project.id)
    people: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for username, status, n in store.per_person(session, project_id=project.id):
        people[username][status] += n
    times = store.submitted_times(session, project_id=project.id)
    distribution: Counter[str] = Counter(value.get("label") for _, value in times if value.get("label") is not None)
    return {"id": project.id, "name": project.name, "task": project.task, "labels": project.labels,
            "multi_label": project.multi_label, "overlap": project.overlap, "guidelines": project.guidelines,
            "records": counts.get("total", 0), "open": counts.get("open", 0),
            "annotated": counts.get("annotated", 0), "accepted": counts.get("accepted", 0),
            "holdout": sum(n for k, n in counts.items() if k.startswith("holdout:")),
            "people": {name: dict(by_status) for name, by_status in sorted(people.items())},
            "label_distribution": dict(distribution.most_common()),
            "timeline": timeline(times)}


def timeline(times: list[tuple[float, dict[str, Any]]], buckets: int = 60) -> list[dict[str, Any]]:
    """Cumulative labels over time, in at most `buckets` evenly spaced points: [{"at": unix time, label: n}]."""
    labelled = [(at, value["label"]) for at, value in times if value.get("label") is not None]
    if not labelled:
        return []
    start, end = labelled[0][0], labelled[-1][0]
    width = max((end - start) / buckets, 1e-9)
    points: list[dict[str, Any]] = []
    running: Counter[str] = Counter()
    for at, label in labelled:
        running[label] += 1
        bucket_end = start + width * (int((at - start) / width) + 1)
        if points and points[-1]["at"] >= at:
            points[-1].update(running)
        else:
            points.append({"at": min(bucket_end, end), **running})
    return points
