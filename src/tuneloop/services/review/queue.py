"""The review queue: hand out the next record, take annotations, skip, undo, accept or reject, bulk-accept
the model's labels, and the table view. Every change is kept in the history; nothing is overwritten."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.services import ServiceError
from tuneloop.services.auth import require_reviewer
from tuneloop.services.review.tasks import Shown, task_of
from tuneloop.store import review as store
from tuneloop.store.tables import Annotation, Project, Record, User

ORDERS = tuple(store.QUEUE_ORDERS)


def shown_prediction(session: Session, project: Project, record: Record) -> dict[str, Any] | None:
    """The prediction people see on a record: the newest of the model that pre-fills the queue. None on a
    held-out record (its labels measure models: a pre-label would anchor them), and in a project that hides
    predictions, unless the model's answer is what people work on (a draft to correct)."""
    task = task_of(project)
    if (record.split == "holdout" or project.hide_predictions) and not task.draft_from_model:
        return None  # (a gold question shows one like any record: it measures people as they work)
    predictions = [p for p in store.predictions_of(session, record_id=record.id) if p.model == project.prefill_model]
    if not predictions:
        return None
    prediction = predictions[-1]
    return {"model": prediction.model, "label": prediction.label, "confidence": prediction.confidence,
            "probabilities": prediction.probabilities, "text": prediction.answer.get("text"), "answer": prediction.answer,
            "mean_logprob": prediction.mean_logprob}


def record_view(session: Session, project: Project, record: Record, user: User | None = None) -> dict[str, Any]:
    """Everything a person needs to annotate one record: what every record shows, and what its task type adds
    (the prompt, the draft to correct, the two answers in this person's order)."""
    prediction = shown_prediction(session, project, record)
    gold = record.split == "gold"  # a gold question looks like any other record
    view: dict[str, Any] = {"id": record.id, "text": record.text, "split": "pool" if gold else record.split,
                            "status": record.status, "annotations": 0 if gold else record.annotations, "source": record.source,
                            "source_index": record.source_index, "prediction": prediction}
    view.update(task_of(project).view(record, prediction, user))
    if user is not None:
        rejected = [a for a in store.annotations_of(session, record_ids=[record.id], statuses=["rejected"])
                    if a.user_id == user.id]
        if rejected:
            view["rejected"] = {"comment": rejected[-1].review_comment, "value": rejected[-1].value}
    return view


def next_record(session: Session, project: Project, user: User, order: str = "uncertainty") -> dict[str, Any] | None:
    if order not in ORDERS:
        raise ServiceError(400, f"order '{order}' is not one of {', '.join(ORDERS)}", "order")
    record = store.claim_next(session, project=project, user_id=user.id, order=order, now=time.time())
    return None if record is None else record_view(session, project, record, user)


def normalise_value(session: Session, project: Project, record: Record, user: User | None,
                    value: dict[str, Any]) -> dict[str, Any]:
    """Check an answer against the project's task type, as this person was shown the record; ServiceError
    naming the field when it does not fit."""
    task = task_of(project)
    shown = task.view(record, shown_prediction(session, project, record), user)
    return task.normalise(value, Shown(project, record, user, shown))


def refresh_record(session: Session, project: Project, record: Record) -> None:
    """Recount a record's annotations, and what follows from them: its answer and where it comes from (a
    reviewer's adjudication; else the people's, agreed, by majority, or none on a tie; else a model's label a
    reviewer accepted), and whether people disagree with each other or with the model's prediction."""
    task = task_of(project)
    counted = store.recount(session, record=record, overlap=project.overlap)
    if record.split == "gold":  # its answer is known; people's answers on it measure them (quality.gold_report)
        task.keep_answer(record, None)
        record.answer_source, record.disagreement = None, False
        return
    people = [a for a in counted if a.source == "person"]
    ranked = Counter(answer for a in people if (answer := task.answer_of(a.value)) is not None).most_common()
    decided = [a for a in counted if a.source == "adjudication"]
    models = [a for a in counted if a.source == "model"]
    if decided:
        answer, source = task.answer_of(decided[-1].value), "adjudicated"
    elif len(ranked) > 1 and task.settles_by_agreement:
        tie = ranked[0][1] == ranked[1][1]
        answer, source = (None, "tie") if tie else (ranked[0][0], "majority")
    elif people:
        answer, source = (ranked[0][0] if ranked else None), "people"
    elif models:
        answer, source = task.answer_of(models[-1].value), "model"
    else:
        answer, source = None, None
    task.keep_answer(record, answer)
    record.answer_source = source
    record.disagreement = len(ranked) > 1 or task.model_disagrees(answer, record.pred_label)


def _record(session: Session, project: Project, record_id: int) -> Record:
    record = store.get_record(session, project_id=project.id, record_id=record_id)
    if record is None:
        raise ServiceError(404, f"no record {record_id} in project '{project.name}'", "record_id", "record_not_found")
    return record


def _check_free(session: Session, project: Project, record: Record, user: User) -> None:
    """409 unless this person may annotate the record now: not done by them yet, still open, and held by
    them (or with room for them, which holds it)."""
    mine = [a for a in store.annotations_of(session, record_ids=[record.id], statuses=store.HOLDS)
            if a.user_id == user.id]
    if mine:
        raise ServiceError(409, f"'{user.username}' already annotated record {record.id}; undo it first",
                           "record_id", "already_annotated")
    if record.status != "open":
        raise ServiceError(409, f"record {record.id} has all the annotations it needs", "record_id", "record_done")
    now = time.time()
    if not store.holds(session, record_id=record.id, user_id=user.id, now=now) and \
            not store.take(session, project=project, record_id=record.id, user_id=user.id, now=now):
        raise ServiceError(409, f"record {record.id} is being annotated by other people; ask for the next record",
                           "record_id", "record_taken")


def submit(session: Session, project: Project, user: User, record_id: int, value: dict[str, Any]) -> Annotation:
    record = _record(session, project, record_id)
    normalised = normalise_value(session, project, record, user, value)
    _check_free(session, project, record, user)
    annotation = store.add_annotation(session, record=record, user_id=user.id, value=normalised, status="submitted")
    store.release(session, record_id=record.id, user_id=user.id)
    refresh_record(session, project, record)
    session.commit()
    return annotation


def skip(session: Session, project: Project, user: User, record_id: int) -> Annotation:
    record = _record(session, project, record_id)
    _check_free(session, project, record, user)
    annotation = store.add_annotation(session, record=record, user_id=user.id, value={}, status="skipped")
    store.release(session, record_id=record.id, user_id=user.id)
    session.commit()
    return annotation


def undo(session: Session, project: Project, user: User) -> dict[str, Any]:
    """Withdraw this person's last submit or skip; the record comes back to them next."""
    annotation = store.last_annotation(session, project_id=project.id, user_id=user.id)
    if annotation is None:
        raise ServiceError(409, "nothing to undo", None, "nothing_to_undo")
    store.change_status(session, annotation=annotation, by=user.id, status="withdrawn", action="undo")
    record = _record(session, project, annotation.record_id)
    refresh_record(session, project, record)
    # the record comes back to this person only if nobody took its place meanwhile; otherwise nothing changes
    if not store.take(session, project=project, record_id=record.id, user_id=user.id, now=time.time(),
                      drop_others=True):
        raise ServiceError(409, f"record {record.id} went to someone else after your answer; it stays as it was",
                           None, "record_taken")
    session.refresh(record)
    view = record_view(session, project, record, user)
    view["previous"] = task_of(project).shown_again(annotation.value, record, user)
    return view


def review(session: Session, project: Project, reviewer: User, annotation_id: int, accept: bool,
           comment: str = "") -> Annotation:
    """A reviewer accepts or rejects an annotation; a rejected record goes back to the queue."""
    require_reviewer(reviewer)
    annotation = store.get_annotation(session, project_id=project.id, annotation_id=annotation_id)
    if annotation is None:
        raise ServiceError(404, f"no annotation {annotation_id} in project '{project.name}'", "annotation_id",
                           "annotation_not_found")
    if annotation.status not in ("submitted", "accepted"):
        raise ServiceError(409, f"annotation {annotation_id} is {annotation.status}; only submitted (or accepted) "
                                "work is reviewed", "annotation_id", "not_reviewable")
    if annotation.user_id == reviewer.id and annotation.source == "person":  # a model's label they accepted: fine
        raise ServiceError(403, "a reviewer reviews other people's work, not their own", "annotation_id",
                           "own_work")
    if not accept and not comment.strip():
        raise ServiceError(400, "comment: say why the annotation is rejected", "comment")
    status = "accepted" if accept else "rejected"
    store.change_status(session, annotation=annotation, by=reviewer.id, status=status,
                        action="accept" if accept else "reject", comment=comment)
    refresh_record(session, project, _record(session, project, annotation.record_id))
    session.commit()
    return annotation


def bulk_accept(session: Session, project: Project, user: User, record_ids: list[int]) -> dict[str, Any]:
    """A reviewer (or admin) accepts the label of the model that pre-fills the queue on each chosen record:
    the record is settled with that label, kept as the model's (source `model`, accepted by this person), so it
    trains but is never counted as a person's answer. Records people have answered, records with no
    prediction, and records settled already are left as they are, counted by reason."""
    require_reviewer(user)
    task = task_of(project)
    if not task.bulk_accepts:
        raise ServiceError(400, f"bulk accept takes the model's answer; a {project.task} project's predictions are "
                                "drafts for people, not answers", "task")
    left: Counter[str] = Counter()
    records = store.records_by_id(session, project_id=project.id, ids=record_ids)
    left["not in this project"] = len(set(record_ids)) - len(records)
    accepted = 0
    for record in records:
        reason = _why_not_accept(session, record)
        if reason:
            left[reason] += 1
            continue
        shown = [p for p in store.predictions_of(session, record_id=record.id) if p.model == record.pred_model]
        value = task.model_answer(shown[-1]) if shown else None
        if value is None:
            left["no prediction"] += 1
            continue
        try:  # a model's answer is checked like a person's (a label set changed since, spans that overlap)
            value = task.normalise(value, Shown(project, record, user, {}))
        except ServiceError:
            left["the model's answer does not fit the project"] += 1
            continue
        store.add_annotation(session, record=record, user_id=user.id, value=value, status="accepted",
                             source="model", model=record.pred_model)
        store.release_all(session, record_id=record.id)
        refresh_record(session, project, record)
        session.commit()
        accepted += 1
    return {"accepted": accepted, "left": {reason: n for reason, n in left.items() if n}}


def _why_not_accept(session: Session, record: Record) -> str | None:
    if record.split == "gold":
        return "gold question"
    if record.status != "open":
        return "settled already"
    if record.split == "holdout":
        return "held out (people label those)"
    if record.pred_label is None:
        return "no prediction"
    if store.annotations_of(session, record_ids=[record.id], statuses=store.COUNTED):
        return "people answered it"
    return None


def record_detail(session: Session, project: Project, record_id: int) -> dict[str, Any]:
    """A record with all its annotations, predictions and the full history of changes."""
    record = _record(session, project, record_id)
    users = {u.id: u.username for u in store.list_users(session)}
    annotations = [{"id": a.id, "user": users.get(a.user_id, a.user_id), "value": a.value, "status": a.status,
                    "source": a.source, "model": a.model, "review_comment": a.review_comment,
                    "created_at": a.created_at}
                   for a in store.annotations_of(session, record_ids=[record.id])]
    predictions = [{"model": p.model, "label": p.label, "confidence": p.confidence, "text": p.answer.get("text"),
                    "probabilities": p.probabilities, "created_at": p.created_at}
                   for p in store.predictions_of(session, record_id=record.id)]
    changes = [{"annotation_id": c.annotation_id, "user": users.get(c.user_id, c.user_id), "action": c.action,
                "before": c.before, "after": c.after, "at": c.at}
               for c in store.history(session, record_id=record.id)]
    return {**record_view(session, project, record), "human_label": record.human_label,
            "human_labels": record.human_labels, "answer_text": task_of(project).answer_text(record),
            "disagreement": record.disagreement, "data": record.data, "annotation_list": annotations,
            "predictions": predictions, "history": changes}


def table(session: Session, project: Project, query: store.TableQuery) -> dict[str, Any]:
    if query.sort not in store.SORTS:
        raise ServiceError(400, f"sort '{query.sort}' is not one of {', '.join(store.SORTS)}", "sort")
    if not 1 <= query.limit <= 500:
        raise ServiceError(400, f"limit {query.limit}: pages hold 1 to 500 rows", "limit")
    task = task_of(project)
    rows, total = store.table_page(session, project_id=project.id, query=query, label_lists=task.label_lists,
                                   prediction_keys=task.prediction_keys)
    users = {u.id: u.username for u in store.list_users(session)} if rows else {}
    by_record: dict[int, list[Annotation]] = {}
    for a in store.annotations_of(session, record_ids=[r.id for r in rows],
                                  statuses=("submitted", "accepted", "rejected")):
        by_record.setdefault(a.record_id, []).append(a)
    data = [{"id": r.id, "text": r.text[:300], "split": r.split, "status": r.status, "annotations": r.annotations,
             "human_label": r.human_label, "human_labels": r.human_labels, "pred_label": r.pred_label,
             "answer_text": task.answer_text(r), "prediction_text": task.prediction_text(r),
             "pred_model": r.pred_model, "confidence": r.confidence, "uncertainty": r.uncertainty,
             "disagreement": r.disagreement,
             "answer_source": r.answer_source,
             "work": [{"id": a.id, "user": users.get(a.user_id), "label": ", ".join(task.labels_of(a.value)) or None,
                       "status": a.status, "edited": a.value.get("edited"), "comment": a.review_comment,
                       "source": a.source, "model": a.model}
                      for a in by_record.get(r.id, [])]}
            for r in rows]
    return {"object": "list", "data": data, "total": total, "offset": query.offset, "limit": query.limit}
