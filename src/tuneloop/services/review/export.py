"""Reviewed records as training data: labelled text or chats from classification, SFT chats from corrected
answers, DPO pairs (corrected over draft, chosen over other), reward data from ratings."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.engine.tokenize import classification_messages
from tuneloop.services import ServiceError
from tuneloop.store import review as store
from tuneloop.store.tables import Annotation, Project, Record

KINDS = {"classification": ("classify", "chat", "sft"), "response": ("sft", "dpo"),
         "preference": ("dpo", "sft"), "rating": ("reward",)}


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _best(annotations: list[Annotation]) -> Annotation:
    """An accepted annotation if a reviewer accepted one, else the newest."""
    accepted = [a for a in annotations if a.status == "accepted"]
    return (accepted or annotations)[-1]


def _classification(project: Project, record: Record, kind: str) -> dict[str, Any] | None:
    if record.human_label is None:
        return None
    labels = record.human_label.split("|") if project.multi_label else [record.human_label]
    if kind == "classify":
        return {"text": record.text, **({"labels": labels} if project.multi_label else {"label": labels[0]})}
    # the prompt a chat model is scored with when it pre-labels (each label's likelihood), so training matches
    return {"messages": classification_messages(record.text, project.labels, ", ".join(labels))}


def _response(record: Record, chosen: Annotation, kind: str) -> dict[str, Any] | None:
    prompt = record.data.get("prompt", [])
    value = chosen.value
    if kind == "sft":
        return {"messages": [*prompt, *_assistant(value["text"])]}
    if not value.get("edited"):
        return None  # an unchanged draft says nothing about what is better
    return {"input": {"messages": prompt}, "preferred_output": _assistant(value["text"]),
            "non_preferred_output": _assistant(value["draft"])}


def _preference(record: Record, chosen: Annotation, kind: str) -> dict[str, Any]:
    prompt, answers = record.data["prompt"], record.data["answers"]
    value = chosen.value
    better = value.get("rewrite") or answers[value["preferred"]]
    if kind == "sft":
        return {"messages": [*prompt, *_assistant(better)]}
    return {"input": {"messages": prompt}, "preferred_output": _assistant(better),
            "non_preferred_output": _assistant(answers[1 - value["preferred"]])}


def _rating(record: Record, annotations: list[Annotation]) -> dict[str, Any]:
    ratings = [a.value["rating"] for a in annotations]
    comments = [a.value["comment"] for a in annotations if a.value.get("comment")]
    return {"messages": [*record.data["prompt"], *_assistant(record.data.get("answer") or "")],
            "rating": sum(ratings) / len(ratings), "ratings": ratings, "comments": comments}


def export_rows(session: Session, project: Project, kind: str, split: str = "pool") -> list[dict[str, Any]]:
    """One training example per reviewed record (records still open are left out). `split`: pool, holdout
    or all."""
    allowed = KINDS[project.task]
    if kind not in allowed:
        raise ServiceError(400, f"a {project.task} project exports as {', '.join(allowed)}, not '{kind}'", "as")
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
        if project.task == "classification":
            row = _classification(project, record, kind)
        elif project.task == "response":
            row = _response(record, _best(annotations), kind)
        elif project.task == "preference":
            row = _preference(record, _best(annotations), kind)
        else:
            row = _rating(record, annotations)
        if row is not None:
            rows.append(row)
    return rows
