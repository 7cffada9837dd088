"""Review projects: create one from any dataset the data layer reads, add people, summarise progress."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.data.formats import detect_format, dump_record, parse_object
from tuneloop.data.problems import DataError, Problem
from tuneloop.data.readers import iter_rows
from tuneloop.data.records import LabelledRecord, PreferenceRecord, Record, SpanRecord
from tuneloop.data.versions import Version, resolve_version
from tuneloop.services import ServiceError
from tuneloop.services.files import require_file
from tuneloop.services.review.tasks import Item, TaskType, Unfit, check_task, for_task, task_of
from tuneloop.store import review as store
from tuneloop.store.blobs import content_path
from tuneloop.store.tables import Project, User

PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")




def _messages(obj: Any) -> list[dict[str, Any]] | None:
    if not isinstance(obj, list) or not obj:
        return None
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
               for m in obj):
        return None
    return [{"role": m["role"], "content": m["content"]} for m in obj]


def item_from_record(record: Record, original: dict[str, Any]) -> Item:
    if isinstance(record, LabelledRecord):
        return {"original": original, "text": record.text, "labels": record.labels}
    if isinstance(record, SpanRecord):  # only a spans project reads its spans (and their labels)
        return {"original": original, "text": record.text, "spans": [s.model_dump() for s in record.spans]}
    if isinstance(record, PreferenceRecord):
        prompt = [m.model_dump(exclude_none=True) for m in record.messages]
        return {"original": original, "prompt": prompt,
                "answers": ["\n".join(m.content for m in record.chosen), "\n".join(m.content for m in record.rejected)]}
    messages = [m.model_dump(exclude_none=True) for m in record.to_messages()]
    if messages and messages[-1]["role"] == "assistant":
        return {"original": original, "prompt": messages[:-1], "answer": messages[-1]["content"]}
    return {"original": original, "prompt": messages}


def item_from_object(obj: Any, number: int, where: str) -> tuple[Item | None, list[Problem]]:
    """Any training format, and also what is not labelled yet: {"text"}, {"prompt"}, or messages that end
    with the user (people or a model will answer)."""
    fmt = detect_format(obj)
    if fmt is not None:
        record, problems = parse_object(obj, fmt, number, where)
        errors = [p for p in problems if p.severity == "error"]
        if record is not None:
            return item_from_record(record, obj), []
        prompt = _messages(obj.get("messages")) if fmt == "chat" else None
        if prompt is not None and all(p.code == "no_assistant" for p in errors):
            return {"original": obj, "prompt": prompt}, []
        return None, errors
    if isinstance(obj, dict) and isinstance(obj.get("text"), str) and obj["text"].strip():
        return {"original": obj, "text": obj["text"]}, []
    if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
        return {"original": obj, "prompt": [{"role": "user", "content": obj["prompt"]}]}, []
    keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
    return None, [Problem("unknown_format", f"cannot tell what to review: keys {keys}; give 'text', 'prompt', "
                                            "'messages', or any training format", number, where)]


def read_source(settings: Settings, ref: str) -> tuple[str, list[tuple[int, Item]]]:
    """(source, [(line, item)]) of any file path on the server or an imported dataset version: what the CLI
    reads. ServiceError lists every bad line."""
    if Path(ref).exists():
        return read_file(Path(ref))
    try:
        version = resolve_version(settings.datasets_dir, ref)
    except DataError as e:
        raise ServiceError(400, f"'{ref}' is neither a file nor a dataset version: {e}", "data",
                           "invalid_data") from None
    return read_version(version)


CLIENT_DATA = ("give an uploaded file id (file-..., from POST /v1/files), an imported dataset version or name, or a "
               "file in a folder the server allows (TUNELOOP_ALLOWED_PATHS); or upload the file to "
               "POST /api/projects/upload")
"""The one answer to data an API client may not name: it says nothing about the path, not even whether it exists."""


def read_client_source(session: Session, settings: Settings, ref: str) -> tuple[str, list[tuple[int, Item]]]:
    """read_source for API clients, who may name only what is theirs to read: an uploaded file id, an imported
    dataset version, or a file under settings.allowed_paths. Other server paths are never opened."""
    if ref.startswith("file-"):
        upload = require_file(session, ref, "data")
        return read_file(content_path(settings, upload), upload.filename)
    version = _plain_version(settings, ref)
    if version is not None:
        return read_version(version)
    if settings.allows(ref):
        return read_file(Path(ref))
    raise ServiceError(404, f"data: {CLIENT_DATA}", "data", "data_not_found")


def _plain_version(settings: Settings, ref: str) -> Version | None:
    """The dataset version of an id or name; only a plain name, so '../x' or '/x' never reaches a folder outside."""
    if ref in {"", ".", ".."} or Path(ref).name != ref:
        return None
    try:
        return resolve_version(settings.datasets_dir, ref)
    except (DataError, OSError, ValueError):  # not a version, or a folder there that is not one (no meta.json)
        return None


def read_version(version: Version) -> tuple[str, list[tuple[int, Item]]]:
    fmt = version.meta["format"]
    return version.id, [(line, item_from_record(r, dump_record(r, fmt))) for line, r in version.records()]


def read_file(path: Path, name: str | None = None) -> tuple[str, list[tuple[int, Item]]]:
    """(name@content hash, [(line, item)]) of a data file. `name` is an upload's own name: it stands for the file
    in messages, so where the server keeps uploads never reaches a client."""
    label = name or path.name

    def named(text: str) -> str:
        return text.replace(str(path), label).replace(path.name, label) if name else text

    items, errors = [], []
    try:
        for row in iter_rows(path):
            item, problems = (None, [row.problem]) if row.problem else item_from_object(row.obj, row.number, row.where)
            errors += problems
            if item is not None:
                items.append((row.number, item))
    except DataError as e:
        raise ServiceError(400, named(str(e)), "data", "invalid_data") from None
    if errors:
        shown = "; ".join(named(str(p)) for p in errors[:10])
        more = f"; and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise ServiceError(400, f"{label}: {len(errors)} problem(s): {shown}{more}", "data", "invalid_data")
    if not items:
        raise ServiceError(400, f"{label}: no records", "data", "invalid_data")
    return f"{label}@{_sha256(path)[:12]}", items


def _sha256(path: Path) -> str:
    """The file's content hash: the version of a record's source when it came from a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_row(task: TaskType, line: int, item: Item, source: str) -> dict[str, Any]:
    """What the store keeps for one record of a task; ServiceError naming the line when it does not fit."""
    try:
        text, data = task.read(item)
    except Unfit as e:
        raise ServiceError(400, f"{source} line {line}: {e}", "data", "invalid_data") from None
    if not text.strip():
        raise ServiceError(400, f"{source} line {line}: the text to review is empty", "data", "invalid_data")
    return {"source": source, "source_index": line, "data": {"original": item["original"], **data}, "text": text}


UNKNOWN_LABELS = ("refuse", "add", "drop")


def create_project(session: Session, settings: Settings, *, name: str, task: str, data: str,
                   labels: list[str] | None = None, multi_label: bool = False, guidelines: str = "",
                   overlap: int = 1, holdout: float = 0.0, seed: int = 0, client: bool = False,
                   unknown_labels: str = "refuse", gold: float = 0.0, gold_rate: float = 0.1,
                   items: list[tuple[int, Item]] | None = None) -> Project:
    """A project with the records of `data`: any file or a dataset version, or with `client` (an API client's
    request) only what read_client_source allows. Records labelled outside a given label set are refused
    (counted, with the labels), unless `unknown_labels` adds those labels to the set or drops those records.
    `gold`: the fraction of the labelled records kept as gold questions (their labels are the known answers),
    handed to each person at `gold_rate`. `items`: the records made already (an arena's pairs of answers, which
    may be empty or the same), `data` then naming where they came from. Nothing is stored on error."""
    if not 0.0 <= gold <= 0.5 or gold + holdout >= 1.0:
        raise ServiceError(400, f"gold {gold}: keep from 0 to 0.5 of the records as gold questions (with the "
                                "held-out fraction, below 1): the rest is the work", "gold")
    if not 0.0 <= gold_rate <= 0.5:
        raise ServiceError(400, f"gold_rate {gold_rate}: at most half of a person's records can be gold questions",
                           "gold_rate")
    if unknown_labels not in UNKNOWN_LABELS:
        raise ServiceError(400, f"unknown_labels '{unknown_labels}' is not one of {', '.join(UNKNOWN_LABELS)}",
                           "unknown_labels")
    try:
        check_task(task)
    except ValueError as e:
        raise ServiceError(400, str(e), "task") from None
    task_type = for_task(task, multi_label)
    if not PROJECT_NAME.match(name):
        raise ServiceError(400, f"project name '{name}': use 1-100 letters, digits, '_', '.' or '-' (it goes in "
                                "addresses)", "name")
    if store.find_project(session, ref=name) is not None:
        raise ServiceError(409, f"there is already a project '{name}'", "name", "project_exists")
    if not 1 <= overlap <= 20:
        raise ServiceError(400, f"overlap {overlap}: each record needs between 1 and 20 annotations", "overlap")
    if not 0.0 <= holdout < 1.0:
        raise ServiceError(400, f"holdout {holdout}: give the held-out fraction, from 0 to below 1", "holdout")
    if items is None:
        source, items = read_client_source(session, settings, data) if client else read_source(settings, data)
    else:
        source = data
    if task_type.takes_labels:
        given = bool(labels)
        labels = _label_set(labels, items, source, task_type)
        if given:
            labels, items = _outside_the_set(labels, items, source, unknown_labels, task_type)
    rows = [record_row(task_type, line, item, source) for line, item in items]
    rng = random.Random(seed)
    probe = Project(labels=labels or [])
    answers = [task_type.gold_of(probe, item) for _, item in items]
    can_be_gold = [i for i, answer in enumerate(answers) if answer is not None]
    wanted = int(round(len(rows) * gold))
    if wanted > len(can_be_gold):
        raise ServiceError(400, f"gold {gold}: {wanted} gold questions need labelled records, and {source} has "
                                f"{len(can_be_gold)} this project can use", "gold")
    golden = set(rng.sample(can_be_gold, wanted))
    rest = [i for i in range(len(rows)) if i not in golden]
    held = set(rng.sample(rest, int(round(len(rows) * holdout))))
    for i, row in enumerate(rows):
        row["split"] = "gold" if i in golden else "holdout" if i in held else "pool"
        row["gold"] = answers[i] if i in golden else None
    project = store.create_project(session, name=name, task=task, labels=labels or [], multi_label=multi_label,
                                   guidelines=guidelines, overlap=overlap)
    project.gold_rate = gold_rate if golden else 0.0
    session.flush()
    store.add_records(session, project_id=project.id, rows=rows, seed=seed)
    session.commit()
    return project


def _outside_the_set(labels: list[str], items: list[tuple[int, Item]], source: str,
                     policy: str, task: TaskType) -> tuple[list[str], list[tuple[int, Item]]]:
    """The label set and the records, once the records labelled outside the set are dealt with: refused (a 400
    that counts them and names the labels), their labels added to the set, or the records left out."""
    outside = Counter(label for _, item in items for label in task.item_labels(item) if label not in labels)
    if not outside:
        return labels, items
    records = sum(any(label in outside for label in task.item_labels(item)) for _, item in items)
    if policy == "add":
        return [*labels, *sorted(outside)], items
    if policy == "drop":
        return labels, [(line, item) for line, item in items if not any(l in outside for l in task.item_labels(item))]
    named = ", ".join(f"{label} ({n})" for label, n in outside.most_common(10))
    raise ServiceError(400, f"{source}: {records} record(s) carry labels outside the label set "
                            f"{', '.join(labels)}: {named}. Add those labels to the set, or leave those records out",
                       "labels", "unknown_labels")


def _label_set(labels: list[str] | None, items: list[tuple[int, Item]], source: str, task: TaskType) -> list[str]:
    found = sorted({label for _, item in items for label in task.item_labels(item)})
    least = task.least_labels
    if not labels:
        if not found:
            raise ServiceError(400, f"{source} has no labels to take the label set from; give the project's "
                                    "labels", "labels")
        if len(found) < least:
            raise ServiceError(400, f"{source} uses only the label '{found[0]}'; give the whole label set",
                               "labels")
        return found
    labels = [label.strip() for label in labels if label.strip()]
    if len(set(labels)) != len(labels):
        raise ServiceError(400, f"the labels repeat: {', '.join(labels)}", "labels")
    if len(labels) < least:
        raise ServiceError(400, f"a {task.name} project needs at least {least} label{'s' if least > 1 else ''}",
                           "labels")
    return labels


def update_project(session: Session, project: Project, *, prefill_model: str | None = None,
                   hide_predictions: bool | None = None, guidelines: str | None = None,
                   labels: list[str] | None = None, overlap: int | None = None, gold_rate: float | None = None,
                   gold_threshold: float | None = None) -> Project:
    """Change a project's settings: which model's predictions pre-fill the queue (one that predicted in this
    project), whether people see predictions, the guidelines, the label set (labels may be added or
    reordered; one that people used cannot go), and the overlap (every record's status follows). Checks
    everything before it changes anything. Commits."""
    from tuneloop.services.review.prelabel import use_model
    from tuneloop.services.review.queue import refresh_record

    task = task_of(project)
    if prefill_model is not None and prefill_model != project.prefill_model:
        known = store.prediction_models(session, project_id=project.id)
        if prefill_model not in known:
            raise ServiceError(400, f"prefill_model '{prefill_model}' has not predicted in project '{project.name}'; "
                                    f"models that have: {', '.join(known) or 'none yet'}", "prefill_model")
    if labels is not None:
        if not task.takes_labels:
            raise ServiceError(400, f"a {project.task} project has no label set", "labels")
        labels = [label.strip() for label in labels if label.strip()]
        if len(set(labels)) != len(labels) or len(labels) < task.least_labels:
            raise ServiceError(400, f"labels: give at least {task.least_labels} label(s), each once", "labels")
        used = Counter(label for a in store.project_annotations(session, project_id=project.id)
                       for label in task.labels_of(a.value))
        used.update(label for r in store.all_records(session, project_id=project.id, split="gold")
                    for label in task.labels_of(r.gold or {}))  # a gold question's known answer
        gone = {label: n for label, n in used.items() if label not in labels}
        if gone:
            named = ", ".join(f"{label} ({n} answers)" for label, n in sorted(gone.items()))
            raise ServiceError(409, f"labels: people used {named}; a label in use cannot be removed", "labels",
                               "label_in_use")
    if overlap is not None and not 1 <= overlap <= 20:
        raise ServiceError(400, f"overlap {overlap}: each record needs between 1 and 20 annotations", "overlap")
    if gold_rate is not None and not 0.0 <= gold_rate <= 0.5:
        raise ServiceError(400, f"gold_rate {gold_rate}: at most half of a person's records can be gold questions",
                           "gold_rate")
    if gold_threshold is not None and not 0.0 <= gold_threshold <= 1.0:
        raise ServiceError(400, f"gold_threshold {gold_threshold}: give an accuracy from 0 to 1", "gold_threshold")
    if prefill_model is not None and prefill_model != project.prefill_model:
        use_model(session, project, prefill_model)
    if gold_rate is not None:
        project.gold_rate = gold_rate
    if gold_threshold is not None:
        project.gold_threshold = gold_threshold
    if hide_predictions is not None:
        project.hide_predictions = hide_predictions
    if guidelines is not None:
        project.guidelines = guidelines
    if labels is not None:
        project.labels = labels
    if overlap is not None and overlap != project.overlap:
        project.overlap = overlap
        for record in store.all_records(session, project_id=project.id):
            refresh_record(session, project, record)
    session.commit()
    return project


def remove_member(session: Session, project: Project, username: str) -> None:
    """Take a person off a project: their answers stay, the records they held go back to the queue."""
    user = store.user_by_name(session, username=username)
    if user is None or not store.remove_member(session, project_id=project.id, user_id=user.id):
        raise ServiceError(404, f"'{username}' is not a member of project '{project.name}'", "username",
                           "not_a_member")
    session.commit()


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
        raise ServiceError(404, f"no user '{username}'; an admin creates people on the users page", "username",
                           "user_not_found")
    store.add_member(session, project_id=project.id, user_id=user.id)
    session.commit()
    return user


def counters(session: Session, project: Project) -> dict[str, Any]:
    """Records per status, and each person's annotations per status (cheap: two grouped counts)."""
    counts = store.count_records(session, project_id=project.id)
    people: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for username, status, n in store.per_person(session, project_id=project.id):
        people[username][status] += n
    task = task_of(project)
    return {"id": project.id, "name": project.name, "task": project.task, "labels": project.labels,
            "exports": list(task.exports), "prefill_model": project.prefill_model,
            "hide_predictions": project.hide_predictions,
            "multi_label": project.multi_label, "overlap": project.overlap, "guidelines": project.guidelines,
            "records": counts.get("total", 0), "open": counts.get("open", 0), "partly": counts.get("partly", 0),
            "gold": counts.get("gold", 0), "gold_rate": project.gold_rate, "gold_threshold": project.gold_threshold,
            "annotated": counts.get("annotated", 0), "accepted": counts.get("accepted", 0),
            "holdout": sum(n for k, n in counts.items() if k.startswith("holdout:")),
            "people": {name: dict(by_status) for name, by_status in sorted(people.items())}}


def summary(session: Session, project: Project) -> dict[str, Any]:
    """The counters, the label distribution and labels over time (each label of a multi-label answer counts)."""
    task = task_of(project)
    labelled = [(at, label) for at, value in store.submitted_times(session, project_id=project.id)
                for label in task.labels_of(value)]
    distribution: Counter[str] = Counter(label for _, label in labelled)
    return {**counters(session, project), "label_distribution": dict(distribution.most_common()),
            "timeline": timeline(labelled)}


def timeline(labelled: list[tuple[float, str]], buckets: int = 60) -> list[dict[str, Any]]:
    """Cumulative labels over time, in at most `buckets` evenly spaced points: [{"at": unix time, label: n}]."""
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
