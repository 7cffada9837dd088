"""Reviewed records as training data, in the formats the project's task type exports (see tasks/): labelled
text or chats from classification, SFT chats from corrected answers, DPO pairs (corrected over draft, chosen
over other), reward data from ratings."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import task_of
from tuneloop.store import review as store
from tuneloop.store.tables import Annotation, Project


def export_rows(session: Session, project: Project, kind: str, split: str = "pool") -> list[dict[str, Any]]:
    """One training example per reviewed record (records still open are left out). `split`: pool, holdout
    or all."""
    task = task_of(project)
    if kind not in task.exports:
        raise ServiceError(400, f"a {project.task} project exports as {', '.join(task.exports)}, not '{kind}'", "as")
    if split not in ("pool", "holdout", "all"):
        raise ServiceError(400, f"split '{split}' is not one of pool, holdout, all", "split")
    records = [r for r in store.all_records(session, project_id=project.id, split=None if split == "all" else split)
               if r.status != "open"]
    by_record: dict[int, list[Annotation]] = defaultdict(list)
    for a in store.project_annotations(session, project_id=project.id):
        by_record[a.record_id].append(a)
    rows = []
    for record in records:
        annotations = by_record.get(record.id)
        if not annotations:
            continue
        row = task.export_row(project, record, annotations, kind)
        if row is not None:
            rows.append(row)
    return rows
