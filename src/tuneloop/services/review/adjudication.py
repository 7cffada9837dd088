"""Adjudication: where the people on a settled record disagree (a tie, or a majority), a reviewer or admin
sets the record's final answer. It is kept as an annotation of its own (source `adjudication`), so the
people's answers stay as they were, in the history and in agreement; the record's answer becomes the
adjudicated one (`answer_source` adjudicated), which export and the held-out score use. Adjudicating again
replaces the earlier decision (withdrawn, kept in the history)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.services import ServiceError
from tuneloop.services.auth import require_reviewer
from tuneloop.services.review.queue import normalise_value, record_view, refresh_record
from tuneloop.services.review.tasks import task_of
from tuneloop.store import review as store
from tuneloop.store.tables import Annotation, Project, Record, User

DISPUTED = ("tie", "majority")


def disputed(session: Session, project: Project, after: int = 0) -> list[Record]:
    """Settled records whose people disagree and that nobody adjudicated, in id order after `after`."""
    query = select(Record).where(Record.project_id == project.id, Record.status != "open",
                                 Record.answer_source.in_(DISPUTED), Record.id > after)
    return list(session.scalars(query.order_by(Record.id)))


def counts(session: Session, project: Project) -> dict[str, int]:
    counts = store.answer_source_counts(session, project_id=project.id)
    return {"to_adjudicate": sum(counts.get((True, source), 0) for source in DISPUTED),
            "ties": counts.get((True, "tie"), 0),
            "adjudicated": counts.get((True, "adjudicated"), 0) + counts.get((False, "adjudicated"), 0)}


def answers(session: Session, project: Project, record: Record) -> list[dict[str, Any]]:
    """Each person's answer on a record, by name (what the adjudicator weighs)."""
    task = task_of(project)
    users = {u.id: u.username for u in store.list_users(session)}
    return [{"user": users.get(a.user_id, a.user_id), "labels": task.labels_of(a.value), "value": a.value}
            for a in store.annotations_of(session, record_ids=[record.id], statuses=store.COUNTED)
            if a.source == "person"]


def view(session: Session, project: Project, record: Record, user: User) -> dict[str, Any]:
    return {**record_view(session, project, record, user), "answers": answers(session, project, record),
            "answer_source": record.answer_source}


def next_disputed(session: Session, project: Project, user: User, after: int = 0) -> dict[str, Any] | None:
    """The next record to adjudicate after `after` (a record skipped in the page is passed over)."""
    require_reviewer(user)
    found = disputed(session, project, after)
    return view(session, project, found[0], user) if found else None


def adjudicate(session: Session, project: Project, user: User, record_id: int, value: dict[str, Any]) -> Annotation:
    """Set the final answer of a record people disagree on (checked like any answer to this task)."""
    require_reviewer(user)
    record = store.get_record(session, project_id=project.id, record_id=record_id)
    if record is None:
        raise ServiceError(404, f"no record {record_id} in project '{project.name}'", "record_id", "record_not_found")
    if record.status == "open" or record.answer_source not in (*DISPUTED, "adjudicated"):
        raise ServiceError(409, f"record {record_id} has no disagreement to adjudicate (its people "
                                f"{'have not all answered' if record.status == 'open' else 'agree'})",
                           "record_id", "nothing_to_adjudicate")
    normalised = normalise_value(session, project, record, user, value)
    for earlier in store.annotations_of(session, record_ids=[record.id], statuses=store.COUNTED):
        if earlier.source == "adjudication":
            store.change_status(session, annotation=earlier, by=user.id, status="withdrawn", action="readjudicate")
    annotation = store.add_annotation(session, record=record, user_id=user.id, value=normalised,
                                      status="submitted", source="adjudication")
    refresh_record(session, project, record)
    session.commit()
    return annotation
