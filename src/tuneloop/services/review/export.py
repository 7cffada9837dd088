"""Reviewed records as training data, in the formats the project's task type exports (see tasks/): labelled
text or chats from classification, SFT chats from corrected answers, DPO pairs (corrected over draft, chosen
over other), reward data from ratings. Each export says what it left out, and why.

Which answer a record exports is the `policy`'s:
- `final` (the default): the record's final answer: what a reviewer adjudicated, what people agreed on, or a
  model's label a reviewer accepted. A record whose people disagree and that nobody adjudicated is left out
  (a tie, or a disagreement with a majority).
- `majority`: as `final`, but an unadjudicated disagreement exports the majority's answer; ties are left out.
- `annotations`: every counted answer of every settled record, with who gave it and its source (a person, a
  model someone accepted, an adjudication), one row per record, whatever the task.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import task_of
from tuneloop.store import review as store
from tuneloop.store.tables import Annotation, Project

POLICIES = ("final", "majority", "annotations")
SPLITS = ("pool", "holdout", "all")


@dataclass
class Export:
    rows: list[dict[str, Any]]
    left_out: dict[str, int] = field(default_factory=dict)
    """reason -> records left out for it (only the reasons that occurred)."""
    policy: str = "final"
    split: str = "pool"

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.left_out.items())
        return f"{len(self.rows)} examples ({self.split}, {self.policy})" + (f"; left out: {reasons}" if reasons else "")


def export_rows(session: Session, project: Project, kind: str, split: str = "pool",
                policy: str = "final") -> list[dict[str, Any]]:
    return export_report(session, project, kind, split, policy).rows


def export_report(session: Session, project: Project, kind: str, split: str = "pool",
                  policy: str = "final") -> Export:
    """One training example per settled record of `split` (pool, holdout or all), and the count of the records
    left out per reason."""
    task = task_of(project)
    if policy != "annotations" and kind not in task.exports:
        raise ServiceError(400, f"a {project.task} project exports as {', '.join(task.exports)}, not '{kind}'", "as")
    if split not in SPLITS:
        raise ServiceError(400, f"split '{split}' is not one of {', '.join(SPLITS)}", "split")
    if policy not in POLICIES:
        raise ServiceError(400, f"policy '{policy}' is not one of {', '.join(POLICIES)}", "policy")
    by_record: dict[int, list[Annotation]] = defaultdict(list)
    for a in store.project_annotations(session, project_id=project.id):
        by_record[a.record_id].append(a)
    users = {u.id: u.username for u in store.list_users(session)}
    rows, left = [], Counter[str]()
    for record in store.all_records(session, project_id=project.id):
        if record.split == "gold":
            left["gold questions"] += 1
            continue
        if split != "all" and record.split != split:
            left[f"in the {record.split} split"] += 1
            continue
        if record.status == "open":
            left["still open"] += 1
            continue
        annotations = by_record.get(record.id, [])
        if policy == "annotations":
            rows.append({"record_id": record.id, "text": record.text, "split": record.split,
                         "answer_source": record.answer_source,
                         "annotations": [{"annotator": users.get(a.user_id, a.user_id), "source": a.source,
                                          **({"model": a.model} if a.model else {}), "answer": a.value}
                                         for a in annotations]})
            continue
        if record.answer_source == "tie":
            left["people tied (not adjudicated)"] += 1
            continue
        if record.answer_source == "majority" and policy == "final":
            left["people disagree (not adjudicated)"] += 1
            continue
        wanted = {"adjudicated": "adjudication", "model": "model"}.get(record.answer_source or "", "person")
        used = [a for a in annotations if a.source == wanted]
        if record.answer_source == "majority":  # the answers that made the majority
            top = Counter(task.answer_of(a.value) for a in used).most_common(1)[0][0]
            used = [a for a in used if task.answer_of(a.value) == top]
        row = task.export_row(project, record, used, "reward" if kind == "reward_pairs" else kind) if used else None
        if row is None:
            left["nothing to learn from"] += 1
        else:
            rows.append(row)
    if kind == "reward_pairs":  # a rating project's answers to the same prompt, paired (tasks/rating.py)
        pairs = task.export_pairs(rows)  # type: ignore[attr-defined]
        return Export(pairs, dict(left), policy, split)
    return Export(rows, dict(left), policy, split)
