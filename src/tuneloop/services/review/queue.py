"""The review queue: hand out the next record, take annotations, skip, undo, accept or reject, bulk-accept
the model's labels, and the table view. Every change is kept in the history; nothing is overwritten."""

from __future__ import annotations

import difflib
import random
import time
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.services import ServiceError
from tuneloop.services.auth import require_reviewer
from tuneloop.store import review as store
from tuneloop.store.tables import Annotation, Project, Record, User

ORDERS = tuple(store.QUEUE_ORDERS)
PREFERENCE_KEYS = ("answer-1", "answer-2")


def _latest_prediction(session: Session, record: Record) -> dict[str, Any] | None:
    predictions = store.predictions_of(session, record_id=record.id)
    if not predictions:
        return None
    prediction = predictions[-1]
    return {"model": prediction.model, "label": prediction.label, "confidence": prediction.confidence,
            "probabilities": prediction.probabilities, "text": prediction.answer.get("text"),
            "mean_logprob": prediction.mean_logprob}


def record_view(session: Session, project: Project, record: Record, user: User | None = None) -> dict[str, Any]:
    """Everything a person needs to annotate one record. Preference answers come in an order that is random
    per record and person, and never with the models' names."""
    prediction = _latest_prediction(session, record)
    view: dict[str, Any] = {"id": record.id, "text": record.text, "split": record.split, "status": record.status,
                            "annotations": record.annotations, "source": record.source,
                            "source_index": record.source_index, "prediction": prediction}
    data = record.data
    if project.task in ("response", "rating", "preference"):
        view["prompt"] = data.get("prompt", [])
    if project.task == "response":
        drafted = prediction and prediction.get("text")
        view["draft"] = prediction["text"] if drafted else (data.get("answer") or "")
        view["draft_model"] = prediction["model"] if drafted else "dataset"
    if project.task == "rating":
        view["answer"] = data.get("answer") or ""
    if project.task == "preference":
        order = shown_order(record, user)
        view["options"] = [{"key": "AB"[shown], "text": data["answers"][i]} for shown, i in enumerate(order)]
        view["prediction"] = None  # which model wrote which answer stays hidden
    if user is not None:
        rejected = [a for a in store.annotations_of(session, record_ids=[record.id], statuses=["rejected"])
                    if a.user_id == user.id]
        if rejected:
            view["rejected"] = {"comment": rejected[-1].review_comment, "value": rejected[-1].value}
    return view


def shown_order(record: Record, user: User | None) -> list[int]:
    """The order one person sees a record's two answers in: random, but the same each time they see it."""
    order = [0, 1]
    random.Random(f"{record.id}:{user.id if user else ''}").shuffle(order)
    return order


def next_record(session: Session, project: Project, user: User, order: str = "uncertainty") -> dict[str, Any] | None:
    if order not in ORDERS:
        raise ServiceError(400, f"order '{order}' is not one of {', '.join(ORDERS)}", "order")
    record = store.claim_next(session, project=project, user_id=user.id, order=order, now=time.time())
    return None if record is None else record_view(session, project, record, user)


def normalise_value(project: Project, value: dict[str, Any], draft: str | None = None,
                    shown: list[int] | None = None) -> dict[str, Any]:
    """Check an annotation against the project's task; ServiceError naming the field when it does not fit.
    Every value gets a `label` (the label set, the preferred answer, the rating) that agreement compares."""
    if project.task == "classification":
        if project.multi_label:
            labels = value.get("labels")
            if not isinstance(labels, list) or not labels:
                raise ServiceError(400, "value.labels: give one or more labels", "value.labels")
            unknown = [label for label in labels if label not in project.labels]
            if unknown:
                raise ServiceError(400, f"value.labels: {unknown} not in the project's labels {project.labels}",
                                   "value.labels")
            chosen = sorted(set(labels), key=project.labels.index)
            return {"labels": chosen, "label": "|".join(chosen)}
        label = value.get("label")
        if label not in project.labels:
            raise ServiceError(400, f"value.label: '{label}' is not one of {', '.join(project.labels)}", "value.label")
        return {"label": label}
    if project.task == "response":
        text = value.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ServiceError(400, "value.text: the corrected answer is empty", "value.text")
        draft = value.get("draft", draft) or ""
        diff = list(difflib.unified_diff(draft.splitlines(), text.splitlines(), "draft", "corrected", lineterm=""))
        return {"text": text, "draft": draft, "draft_model": value.get("draft_model"), "edited": text != draft,
                "diff": "\n".join(diff)}
    if project.task == "preference":
        choice = value.get("preferred")
        if choice not in ("A", "B"):
            raise ServiceError(400, f"value.preferred: '{choice}' is not A or B (as shown)", "value.preferred")
        answer = shown[("A", "B").index(choice)]
        return {"preferred": answer, "label": PREFERENCE_KEYS[answer], "rewrite": value.get("rewrite") or None}
    rating = value.get("rating")
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
        raise ServiceError(400, f"value.rating: '{rating}' is not a whole number from 1 to 5", "value.rating")
    return {"rating": rating, "label": str(rating), "comment": value.get("comment") or ""}


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
    view = record_view(session, project, record) if project.task == "response" else {}
    normalised = normalise_value(project, value, view.get("draft"), shown_order(record, user))
    if project.task == "response" and not normalised["draft_model"]:
        normalised["draft_model"] = view.get("draft_model")
    _check_free(session, project, record, user)
    annotation = store.add_annotation(session, record=record, user_id=user.id, value=normalised, status="submitted")
    store.release(session, record_id=record.id, user_id=user.id)
    store.refresh_record(session, record=record, project=project)
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
    store.refresh_record(session, record=record, project=project)
    # the record comes back to this person only if nobody took its place meanwhile; otherwise nothing changes
    if not store.take(session, project=project, record_id=record.id, user_id=user.id, now=time.time(),
                      drop_others=True):
        raise ServiceError(409, f"record {record.id} went to someone else after your answer; it stays as it was",
                           None, "record_taken")
    session.refresh(record)
    view = record_view(session, project, record, user)
    view["previous"] = dict(annotation.value)
    if project.task == "preference" and "preferred" in annotation.value:  # as this person sees it: A or B
        view["previous"]["label"] = "AB"[shown_order(record, user).index(annotation.value["preferred"])]
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
    if annotation.user_id == reviewer.id:
        raise ServiceError(403, "a reviewer reviews other people's work, not their own", "annotation_id",
                           "own_work")
    if not accept and not comment.strip():
        raise ServiceError(400, "comment: say why the annotation is rejected", "comment")
    status = "accepted" if accept else "rejected"
    store.change_status(session, annotation=annotation, by=reviewer.id, status=status,
                        action="accept" if accept else "reject", comment=comment)
    store.refresh_record(session, record=_record(session, project, annotation.record_id), project=project)
    session.commit()
    return annotation


def bulk_accept(session: Session, project: Project, user: User, record_ids: list[int]) -> int:
    """Take the model's label as this person's annotation on each chosen record that has a prediction."""
    if project.task != "classification":
        raise ServiceError(400, "bulk accept takes the model's label; it is for classification projects", "task")
    done = 0
    for record in store.records_by_id(session, project_id=project.id, ids=record_ids):
        if record.pred_label is None:
            continue
        try:
            _check_free(session, project, record, user)
        except ServiceError:  # done by this person, finished, or held by others: left as it is
            continue
        value = {"labels": [record.pred_label], "label": record.pred_label} if project.multi_label else \
            {"label": record.pred_label}
        store.add_annotation(session, record=record, user_id=user.id, value={**value, "from_model": record.pred_model},
                             status="submitted")
        store.release(session, record_id=record.id, user_id=user.id)
        store.refresh_record(session, record=record, project=project)
        session.commit()
        done += 1
    return done


def record_detail(session: Session, project: Project, record_id: int) -> dict[str, Any]:
    """A record with all its annotations, predictions and the full history of changes."""
    record = _record(session, project, record_id)
    users = {u.id: u.username for u in store.list_users(session)}
    annotations = [{"id": a.id, "user": users.get(a.user_id, a.user_id), "value": a.value, "status": a.status,
                    "review_comment": a.review_comment, "created_at": a.created_at}
                   for a in store.annotations_of(session, record_ids=[record.id])]
    predictions = [{"model": p.model, "label": p.label, "confidence": p.confidence, "text": p.answer.get("text"),
                    "probabilities": p.probabilities, "created_at": p.created_at}
                   for p in store.predictions_of(session, record_id=record.id)]
    changes = [{"annotation_id": c.annotation_id, "user": users.get(c.user_id, c.user_id), "action": c.action,
                "before": c.before, "after": c.after, "at": c.at}
               for c in store.history(session, record_id=record.id)]
    return {**record_view(session, project, record), "human_label": record.human_label,
            "disagreement": record.disagreement, "data": record.data, "annotation_list": annotations,
            "predictions": predictions, "history": changes}


def table(session: Session, project: Project, query: store.TableQuery) -> dict[str, Any]:
    if query.sort not in store.SORTS:
        raise ServiceError(400, f"sort '{query.sort}' is not one of {', '.join(store.SORTS)}", "sort")
    if not 1 <= query.limit <= 500:
        raise ServiceError(400, f"limit {query.limit}: pages hold 1 to 500 rows", "limit")
    rows, total = store.table_page(session, project_id=project.id, query=query)
    users = {u.id: u.username for u in store.list_users(session)} if rows else {}
    by_record: dict[int, list[Annotation]] = {}
    for a in store.annotations_of(session, record_ids=[r.id for r in rows],
                                  statuses=("submitted", "accepted", "rejected")):
        by_record.setdefault(a.record_id, []).append(a)
    data = [{"id": r.id, "text": r.text[:300], "split": r.split, "status": r.status, "annotations": r.annotations,
             "human_label": r.human_label, "pred_label": r.pred_label, "pred_model": r.pred_model,
             "confidence": r.confidence, "uncertainty": r.uncertainty, "disagreement": r.disagreement,
             "work": [{"id": a.id, "user": users.get(a.user_id), "label": a.value.get("label"),
                       "status": a.status, "edited": a.value.get("edited"), "comment": a.review_comment}
                      for a in by_record.get(r.id, [])]}
            for r in rows]
    return {"object": "list", "data": data, "total": total, "offset": query.offset, "limit": query.limit}
