"""Repositories for people in the loop: users, projects, records, predictions, annotations and their
history, assignments and rounds. Keyword-only functions over a session; callers commit."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, and_, cast, delete, exists, func, insert, literal, literal_column, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH
from sqlalchemy.orm import Session

from tuneloop.store.repo import new_id
from tuneloop.store.tables import (Annotation, AnnotationChange, Assignment, Prediction, Project, ProjectMember,
                                   Record, Round, User)

COUNTED = ("submitted", "accepted")
"""Annotation statuses that count towards a record's overlap (skipped, rejected and withdrawn do not)."""
PEOPLE_ANSWERS = ("people", "majority", "adjudicated")
"""The answer sources that are people's judgement: what models are measured against."""
HOLDS = ("submitted", "skipped", "accepted")
"""Statuses that keep a record out of that person's queue."""
ASSIGNMENT_SECONDS = 30 * 60


# ---------------------------------------------------------------- users
def create_user(session: Session, *, username: str, password_hash: str, role: str) -> User:
    user = User(id=new_id("user"), username=username, password_hash=password_hash, role=role, created_at=time.time())
    session.add(user)
    return user


def user_by_name(session: Session, *, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def get_user(session: Session, *, user_id: str) -> User | None:
    return session.get(User, user_id)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.created_at)))


# ---------------------------------------------------------------- projects
def create_project(session: Session, *, name: str, task: str, labels: list[str], multi_label: bool,
                   guidelines: str, overlap: int) -> Project:
    project = Project(id=new_id("proj"), name=name, task=task, labels=labels, multi_label=multi_label,
                      guidelines=guidelines, overlap=overlap, created_at=time.time())
    session.add(project)
    return project


def find_project(session: Session, *, ref: str) -> Project | None:
    return session.get(Project, ref) or session.scalar(select(Project).where(Project.name == ref))


def list_projects(session: Session, *, member: str | None = None) -> list[Project]:
    query = select(Project).order_by(Project.created_at)
    if member is not None:
        query = query.join(ProjectMember, ProjectMember.project_id == Project.id).where(ProjectMember.user_id == member)
    return list(session.scalars(query))


def add_member(session: Session, *, project_id: str, user_id: str) -> None:
    if session.get(ProjectMember, (project_id, user_id)) is None:
        session.add(ProjectMember(project_id=project_id, user_id=user_id))


def remove_member(session: Session, *, project_id: str, user_id: str) -> bool:
    """Their answers stay; only their access goes. False when they were not a member."""
    member = session.get(ProjectMember, (project_id, user_id))
    if member is None:
        return False
    session.delete(member)
    session.execute(delete(Assignment).where(Assignment.user_id == user_id,
                                             Assignment.record_id.in_(select(Record.id).where(
                                                 Record.project_id == project_id))))
    return True


def is_member(session: Session, *, project_id: str, user_id: str) -> bool:
    return session.get(ProjectMember, (project_id, user_id)) is not None


def members(session: Session, *, project_id: str) -> list[User]:
    return list(session.scalars(select(User).join(ProjectMember, ProjectMember.user_id == User.id)
                                .where(ProjectMember.project_id == project_id).order_by(User.username)))


# ---------------------------------------------------------------- records
def add_records(session: Session, *, project_id: str, rows: Sequence[dict[str, Any]], seed: int = 0) -> int:
    """Bulk insert: each row has source, source_index, data, text and split."""
    rng = random.Random(seed)
    now = time.time()
    values = [{"project_id": project_id, "status": "open", "annotations": 0, "disagreement": False,
               "models_disagree": False, "uncertainty": 0.0, "random_key": rng.random(), "updated_at": now, **row}
              for row in rows]
    for start in range(0, len(values), 5000):
        session.execute(insert(Record), values[start : start + 5000])
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE records"))  # fresh statistics, so the planner uses the indexes at once
    return len(values)


def get_record(session: Session, *, project_id: str, record_id: int) -> Record | None:
    record = session.get(Record, record_id)
    return record if record is not None and record.project_id == project_id else None


def count_records(session: Session, *, project_id: str) -> dict[str, int]:
    """Records per status, per split and status, in all (`total`), and `partly`: open records that have some
    of the answers they need."""
    answered = Record.annotations > 0
    rows = session.execute(select(Record.split, Record.status, answered, func.count())
                           .where(Record.project_id == project_id).group_by(Record.split, Record.status, answered))
    counts: Counter[str] = Counter()
    for split, status, some, n in rows:
        if split == "gold":  # questions with known answers: never done, never part of the work
            counts["gold"] += n
            continue
        counts[status] += n
        counts[f"{split}:{status}"] += n
        counts["total"] += n
        if status == "open" and some:
            counts["partly"] += n
    return dict(counts)


def human_labels(session: Session, *, project_id: str, split: str | None = None) -> dict[int, list[str]]:
    """record id -> the people's labels (one, or the set of a multi-label project), for the records people
    labelled (a model's label a reviewer accepted never counts: it would score a model against itself);
    `split`: only the pool's or the held-out records."""
    query = select(Record.id, Record.human_label, Record.human_labels).where(
        Record.project_id == project_id, Record.answer_source.in_(PEOPLE_ANSWERS),
        or_(Record.human_label.is_not(None), Record.human_labels.is_not(None)))
    if split:
        query = query.where(Record.split == split)
    return {record_id: labels if labels is not None else [label] for record_id, label, labels in session.execute(query)}


def texts_of(session: Session, *, project_id: str, ids: Sequence[int]) -> dict[int, str]:
    """record id -> text, for these records only."""
    wanted = set(ids)
    if not wanted:
        return {}
    rows = session.execute(select(Record.id, Record.text).where(Record.project_id == project_id))
    return {record_id: text for record_id, text in rows if record_id in wanted}


def answer_source_counts(session: Session, *, project_id: str) -> dict[tuple[bool, str | None], int]:
    """(settled, answer_source) -> records: one grouped count, not a load of every record."""
    rows = session.execute(select(Record.status, Record.answer_source, func.count())
                           .where(Record.project_id == project_id, Record.split != "gold")
                           .group_by(Record.status, Record.answer_source))
    counts: Counter[tuple[bool, str | None]] = Counter()
    for status, source, n in rows:
        counts[(status != "open", source)] += n
    return dict(counts)


def settled_ids(session: Session, *, project_id: str) -> set[int]:
    return set(session.scalars(select(Record.id).where(Record.project_id == project_id, Record.status != "open")))


def disagreement_counts(session: Session, *, project_id: str) -> dict[str, int]:
    row = session.execute(select(func.count().filter(Record.disagreement.is_(True)),
                                 func.count().filter(Record.models_disagree.is_(True)))
                          .where(Record.project_id == project_id)).one()
    return {"people_or_model": row[0], "models": row[1]}


def records_by_id(session: Session, *, project_id: str, ids: Iterable[int]) -> list[Record]:
    return list(session.scalars(select(Record).where(Record.project_id == project_id, Record.id.in_(list(ids)))))


def all_records(session: Session, *, project_id: str, split: str | None = None) -> list[Record]:
    query = select(Record).where(Record.project_id == project_id)
    if split:
        query = query.where(Record.split == split)
    return list(session.scalars(query.order_by(Record.id)))


@dataclass
class TableQuery:
    status: str | None = None
    label: str | None = None
    prediction: str | None = None
    annotator: str | None = None
    disagreement: bool | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    search: str | None = None
    split: str | None = None
    without_gold: bool = False
    """Leave gold questions out (what an annotator's table shows)."""
    sort: str = "id"
    descending: bool = False
    offset: int = 0
    limit: int = 50


def _text_contains(session: Session, needle: str) -> Any:
    """records.text contains `needle`, case-insensitively, through the trigram index where there is one."""
    special = any(c in needle for c in "%_\\")
    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if session.get_bind().dialect.name == "sqlite" and _has_search_table(session):
        # FTS5 uses its trigram index for LIKE only without an ESCAPE clause, so escape only when needed
        sql = "SELECT rowid FROM records_search WHERE text LIKE :pattern" + (" ESCAPE '\\'" if special else "")
        found = select(literal_column("rowid")).select_from(text(f"({sql}) AS found")).params(
            pattern=pattern if special else f"%{needle}%")
        return Record.id.in_(found)
    return Record.text.ilike(pattern, escape="\\")


def _has_search_table(session: Session) -> bool:
    return session.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'records_search'")).first() is not None


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _holds_label(session: Session, label: str) -> Any:
    """records.human_labels, a JSON list, holds `label`: as an item (a multi-label project) or as the label
    of a [start, end, label] span (a spans project)."""
    if session.get_bind().dialect.name == "postgresql":
        labels = cast(Record.human_labels, JSONB)
        return or_(labels.contains([label]),
                   func.jsonb_path_exists(labels, cast(literal("$[*][2] ? (@ == $label)"), JSONPATH),
                                          func.jsonb_build_object("label", label)))
    each = func.json_each(Record.human_labels).table_valued("value", "type")
    return exists(select(each.c.value).where(or_(each.c.value == label, and_(
        each.c.type == "array", func.json_extract(each.c.value, "$[2]") == label))))


SORTS = {"id": Record.id, "confidence": Record.confidence, "uncertainty": Record.uncertainty,
         "updated": Record.updated_at, "label": Record.human_label, "prediction": Record.pred_label,
         "annotations": Record.annotations}


def table_page(session: Session, *, project_id: str, query: TableQuery,
               label_lists: bool = False, prediction_keys: bool = False) -> tuple[list[Record], int]:
    """One page of records with the table view's filters and sort, and how many match in all. `label_lists`:
    the records keep the people's labels as lists (a multi-label project); the label filter finds a label
    among them, and the label sort orders by the list."""
    conditions = [Record.project_id == project_id]
    if query.status:
        conditions.append(Record.status == query.status)
    if query.split:
        conditions.append(Record.split == query.split)
    if query.without_gold:
        conditions.append(Record.split != "gold")
    if query.label:
        conditions.append(_holds_label(session, query.label) if label_lists else Record.human_label == query.label)
    if query.prediction:  # with prediction_keys, a label among the parts of a key ("6:14 ORDER|26:31 DATE")
        conditions.append(or_(Record.pred_label.like(f"% {_like(query.prediction)}|%", escape="\\"),
                              Record.pred_label.like(f"% {_like(query.prediction)}", escape="\\"))
                          if prediction_keys else Record.pred_label == query.prediction)
    if query.disagreement is not None:
        conditions.append(Record.disagreement.is_(query.disagreement))
    if query.min_confidence is not None:
        conditions.append(Record.confidence >= query.min_confidence)
    if query.max_confidence is not None:
        conditions.append(Record.confidence <= query.max_confidence)
    if query.search:
        conditions.append(_text_contains(session, query.search))
    if query.annotator:
        conditions.append(exists().where(Annotation.record_id == Record.id, Annotation.user_id == query.annotator,
                                         Annotation.status.in_(COUNTED + ("rejected",))))
    column = cast(Record.human_labels, String) if label_lists and query.sort == "label" else SORTS[query.sort]
    order = (column.desc(), Record.id.desc()) if query.descending else (column, Record.id)
    rows = list(session.scalars(select(Record).where(*conditions).order_by(*order)
                                .offset(query.offset).limit(query.limit)))
    total = session.scalar(select(func.count()).select_from(Record).where(*conditions)) or 0
    return rows, total


# ---------------------------------------------------------------- the queue
QUEUE_ORDERS = {
    "uncertainty": (Record.uncertainty.desc(), Record.random_key),
    "models": (Record.models_disagree.desc(), Record.uncertainty.desc(), Record.random_key),
    "random": (Record.random_key, Record.id),
    "id": (Record.id,),
}


def _mine(user_id: str) -> Any:
    """The person already answered or skipped this record."""
    return exists().where(Annotation.record_id == Record.id, Annotation.user_id == user_id,
                          Annotation.status.in_(HOLDS))


def active_assignment(session: Session, *, project_id: str, user_id: str, now: float) -> Record | None:
    return session.scalar(select(Record).join(Assignment, Assignment.record_id == Record.id)
                          .where(Assignment.project_id == project_id, Assignment.user_id == user_id,
                                 Assignment.expires_at > now, Record.status == "open", ~_mine(user_id)))


def claim_next(session: Session, *, project: Project, user_id: str, order: str, now: float) -> Record | None:
    """The next record for this person: their work a reviewer rejected, the record they already hold, held-out
    records (every round is measured on them), then the pool in `order`. A record is held by at most
    `overlap` people at a time, counting finished annotations, and never goes twice to one person. Commits."""
    others = (select(func.count()).select_from(Assignment)
              .where(Assignment.record_id == Record.id, Assignment.user_id != user_id, Assignment.expires_at > now)
              .scalar_subquery())
    has_room = Record.annotations + others < project.overlap
    rejected = select(Annotation.record_id).where(Annotation.user_id == user_id, Annotation.project_id == project.id,
                                                  Annotation.status == "rejected", Annotation.source == "person")
    rework = select(Record).where(Record.id.in_(rejected), Record.status == "open", ~_mine(user_id), has_room)
    for record in session.scalars(rework.order_by(Record.id).limit(5)).all():
        # work a reviewer sent back comes first, to the person who did it
        if take(session, project=project, record_id=record.id, user_id=user_id, now=now, drop_others=True):
            return record
    held = active_assignment(session, project_id=project.id, user_id=user_id, now=now)
    if held is not None:
        return held
    if project.gold_rate > 0 and _gold_due(session, project, user_id):
        gold = (select(Record).where(Record.project_id == project.id, Record.split == "gold", ~_mine(user_id))
                .order_by(Record.random_key, Record.id).limit(1))
        record = session.scalar(gold)
        if record is not None and take(session, project=project, record_id=record.id, user_id=user_id, now=now):
            return record
    for split in ("holdout", "pool"):
        query = (select(Record).where(Record.project_id == project.id, Record.split == split, Record.status == "open",
                                      ~_mine(user_id), has_room)
                 .order_by(*QUEUE_ORDERS[order]).limit(10))
        for _ in range(50):  # each pass leaves out what other people took in the meantime
            candidates = session.scalars(query).all()
            if not candidates:
                break
            for record in candidates:
                if take(session, project=project, record_id=record.id, user_id=user_id, now=now):
                    return record
    return None


def _gold_due(session: Session, project: Project, user_id: str) -> bool:
    """A gold question is due when fewer than `gold_rate` of the records this person answered (counting the
    next one) were gold: at 0.2, the 5th, the 10th, ... record they get is one."""
    rows = session.execute(select(Record.split, func.count()).join(Annotation, Annotation.record_id == Record.id)
                           .where(Record.project_id == project.id, Annotation.user_id == user_id,
                                  Annotation.status.in_(HOLDS), Annotation.source == "person")
                           .group_by(Record.split)).all()
    answered_gold = sum(n for split, n in rows if split == "gold")
    answered = sum(n for _, n in rows)
    return answered_gold < int((answered + 1) * project.gold_rate + 1e-9)


def gold_answers(session: Session, *, project_id: str) -> list[tuple[str, dict[str, Any], dict[str, Any], float]]:
    """(person's id, their answer, the known answer, when they answered) of each person's first answer to each
    gold question: an answer withdrawn (undone) and given again still counts as the first one."""
    return [tuple(row) for row in session.execute(  # type: ignore[misc]
        select(Annotation.user_id, Annotation.value, Record.gold, Annotation.created_at)
        .join(Record, Record.id == Annotation.record_id)
        .where(Record.project_id == project_id, Record.split == "gold", Annotation.source == "person",
               Annotation.status.in_((*COUNTED, "withdrawn", "rejected")),
               Annotation.id.in_(select(func.min(Annotation.id)).where(
                   Annotation.project_id == project_id, Annotation.value != None,  # noqa: E711
                   Annotation.status != "skipped").group_by(Annotation.record_id, Annotation.user_id)))
        .order_by(Annotation.id))]


def take(session: Session, *, project: Project, record_id: int, user_id: str, now: float,
         drop_others: bool = False) -> bool:
    """Hold a record if it has room: its annotations plus other people's live holds stay below the overlap.
    One writer decides at a time (the record's row is locked on PostgreSQL; SQLite admits one writer, and
    the first statement here is a write, so it reads only after taking the lock). Commits the hold, or rolls
    back everything pending and returns False."""
    session.execute(delete(Assignment).where(Assignment.record_id == record_id, Assignment.expires_at <= now))
    row = session.execute(select(Record.annotations, Record.status, Record.split).where(Record.id == record_id)
                          .with_for_update()).one()
    holders = session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.record_id == record_id, Assignment.user_id != user_id, Assignment.expires_at > now)) or 0
    full = row.annotations + holders >= project.overlap and row.split != "gold"  # everyone answers a gold question
    if row.status != "open" or full:
        session.rollback()
        return False
    if drop_others:
        session.execute(delete(Assignment).where(Assignment.project_id == project.id, Assignment.user_id == user_id,
                                                 Assignment.record_id != record_id))
    session.merge(Assignment(record_id=record_id, user_id=user_id, project_id=project.id,
                             expires_at=now + ASSIGNMENT_SECONDS))
    session.commit()
    return True


def holds(session: Session, *, record_id: int, user_id: str, now: float) -> bool:
    return session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.record_id == record_id, Assignment.user_id == user_id, Assignment.expires_at > now)) == 1


def release(session: Session, *, record_id: int, user_id: str) -> None:
    session.execute(delete(Assignment).where(Assignment.record_id == record_id, Assignment.user_id == user_id))


def release_all(session: Session, *, record_id: int) -> None:
    """Nobody holds the record any more (it is settled)."""
    session.execute(delete(Assignment).where(Assignment.record_id == record_id))


# ---------------------------------------------------------------- annotations
def _snapshot(annotation: Annotation) -> dict[str, Any]:
    return {"value": annotation.value, "status": annotation.status, "review_comment": annotation.review_comment,
            "source": annotation.source, **({"model": annotation.model} if annotation.model else {})}


def add_annotation(session: Session, *, record: Record, user_id: str, value: dict[str, Any], status: str,
                   source: str = "person", model: str | None = None) -> Annotation:
    now = time.time()
    annotation = Annotation(record_id=record.id, project_id=record.project_id, user_id=user_id, value=value,
                            status=status, source=source, model=model, created_at=now, updated_at=now)
    session.add(annotation)
    session.flush()
    session.add(AnnotationChange(annotation_id=annotation.id, record_id=record.id, user_id=user_id, action="create",
                                 before=None, after=_snapshot(annotation), at=now))
    return annotation


def change_status(session: Session, *, annotation: Annotation, by: str, status: str, action: str,
                  comment: str | None = None) -> None:
    """A new status (and review comment), with the before and after kept in the history."""
    before = _snapshot(annotation)
    annotation.status, annotation.updated_at = status, time.time()
    if comment is not None:
        annotation.review_comment, annotation.reviewer_id = comment, by
    session.add(AnnotationChange(annotation_id=annotation.id, record_id=annotation.record_id, user_id=by,
                                 action=action, before=before, after=_snapshot(annotation), at=annotation.updated_at))


def last_annotation(session: Session, *, project_id: str, user_id: str) -> Annotation | None:
    return session.scalar(select(Annotation).where(Annotation.project_id == project_id, Annotation.user_id == user_id,
                                                   Annotation.status.in_(("submitted", "skipped")))
                          .order_by(Annotation.id.desc()).limit(1))


def get_annotation(session: Session, *, project_id: str, annotation_id: int) -> Annotation | None:
    annotation = session.get(Annotation, annotation_id)
    return annotation if annotation is not None and annotation.project_id == project_id else None


def annotations_of(session: Session, *, record_ids: Sequence[int], statuses: Sequence[str] | None = None
                   ) -> list[Annotation]:
    query = select(Annotation).where(Annotation.record_id.in_(list(record_ids)))
    if statuses:
        query = query.where(Annotation.status.in_(list(statuses)))
    return list(session.scalars(query.order_by(Annotation.id)))


def project_annotations(session: Session, *, project_id: str, statuses: Sequence[str] = COUNTED) -> list[Annotation]:
    return list(session.scalars(select(Annotation).where(Annotation.project_id == project_id,
                                                         Annotation.status.in_(list(statuses)))
                                .order_by(Annotation.id)))


def history(session: Session, *, record_id: int) -> list[AnnotationChange]:
    return list(session.scalars(select(AnnotationChange).where(AnnotationChange.record_id == record_id)
                                .order_by(AnnotationChange.id)))


def recount(session: Session, *, record: Record, overlap: int) -> list[Annotation]:
    """Recount a record's annotations and set its status from them; returns the annotations that count (what
    the answer on the record follows from is the task type's to say). People's own answers count towards the
    overlap; a reviewer's adjudication, or a model's label a reviewer accepted, settles the record."""
    counted = annotations_of(session, record_ids=[record.id], statuses=COUNTED)
    people = [a for a in counted if a.source == "person"]
    record.annotations = len(people)
    if record.split == "gold":  # a gold question stays open to everyone
        record.status = "open"
    elif any(a.source != "person" for a in counted):
        record.status = "accepted"
    elif record.annotations < overlap:
        record.status = "open"
    else:
        record.status = "accepted" if any(a.status == "accepted" for a in people) else "annotated"
    record.updated_at = time.time()
    return counted


def per_person(session: Session, *, project_id: str) -> list[tuple[str, str, int]]:
    """(username, status, count) of every person's annotations in a project."""
    rows = session.execute(select(User.username, Annotation.status, func.count())
                           .join(User, User.id == Annotation.user_id)
                           .where(Annotation.project_id == project_id).group_by(User.username, Annotation.status))
    return [(name, status, n) for name, status, n in rows]


def submitted_times(session: Session, *, project_id: str) -> list[tuple[float, dict[str, Any]]]:
    rows = session.execute(select(Annotation.created_at, Annotation.value)
                           .where(Annotation.project_id == project_id, Annotation.status.in_(COUNTED))
                           .order_by(Annotation.created_at))
    return [(at, value) for at, value in rows]


# ---------------------------------------------------------------- predictions
def add_predictions(session: Session, *, project_id: str, rows: Sequence[dict[str, Any]]) -> None:
    now = time.time()
    session.execute(insert(Prediction), [{"project_id": project_id, "created_at": now, **row} for row in rows])


def predictions_of(session: Session, *, record_id: int) -> list[Prediction]:
    return list(session.scalars(select(Prediction).where(Prediction.record_id == record_id).order_by(Prediction.id)))


def predicted_ids(session: Session, *, project_id: str, model: str, since: float | None = None) -> set[int]:
    """The records `model` predicted (since `since`, when given)."""
    query = select(Prediction.record_id).where(Prediction.project_id == project_id, Prediction.model == model)
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    return set(session.scalars(query))


def latest_predictions(session: Session, *, project_id: str, model: str | None = None) -> list[Prediction]:
    """The newest prediction of each (record, model)."""
    newest = (select(func.max(Prediction.id)).where(Prediction.project_id == project_id)
              .group_by(Prediction.record_id, Prediction.model))
    query = select(Prediction).where(Prediction.id.in_(newest))
    if model:
        query = query.where(Prediction.model == model)
    return list(session.scalars(query.order_by(Prediction.record_id)))


def prediction_models(session: Session, *, project_id: str) -> list[str]:
    return list(session.scalars(select(Prediction.model).where(Prediction.project_id == project_id)
                                .group_by(Prediction.model).order_by(func.min(Prediction.id))))


# ---------------------------------------------------------------- rounds
def add_round(session: Session, *, project_id: str, model: str, labels_used: int | None, accuracy: float | None,
              macro_f1: float | None, seconds: float | None, job_id: str | None = None, predicted: int | None = None,
              replaced: str | None = None) -> Round:
    number = (session.scalar(select(func.max(Round.number)).where(Round.project_id == project_id)) or 0) + 1
    row = Round(project_id=project_id, number=number, model=model, labels_used=labels_used, accuracy=accuracy,
                macro_f1=macro_f1, seconds=seconds, job_id=job_id, predicted=predicted, replaced=replaced,
                created_at=time.time())
    session.add(row)
    return row


def get_round(session: Session, *, project_id: str, number: int) -> Round | None:
    return session.scalar(select(Round).where(Round.project_id == project_id, Round.number == number))


def list_rounds(session: Session, *, project_id: str) -> list[Round]:
    return list(session.scalars(select(Round).where(Round.project_id == project_id).order_by(Round.number)))
