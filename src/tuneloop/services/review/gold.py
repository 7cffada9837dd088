"""Gold questions: records whose answer is known, mixed into each person's queue at the project's rate (the
store's `claim_next` hands them out), never settled, exported or counted in agreement; each person's accuracy
on them, flagged below the project's threshold. A lead makes gold questions at creation (a fraction of the
labelled records) or from settled records whose people agreed."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.services.auth import require_reviewer
from tuneloop.services.review.queue import refresh_record
from tuneloop.services.review.tasks import task_of
from tuneloop.store import review as store
from tuneloop.store.tables import Project, User

GOLD_MIN_ANSWERS = 3
"""A person is flagged only once they answered this many gold questions (one slip is not a pattern)."""


def gold_report(session: Session, project: Project) -> dict[str, Any]:
    """Each person's accuracy on the gold questions, flagged below the project's threshold."""
    task = task_of(project)
    names = {u.id: u.username for u in store.list_users(session)}
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for user_id, value, known, at in store.gold_answers(session, project_id=project.id):
        if at < (known or {}).get("gold_since", 0):
            continue  # answered before the record became a gold question: it measured nobody
        tally[user_id][0] += 1
        tally[user_id][1] += int(task.answer_of(value) == task.answer_of(known or {}))
    people = []
    for user_id, (answered, correct) in sorted(tally.items(), key=lambda item: names.get(item[0], item[0])):
        accuracy = correct / answered
        people.append({"user": names.get(user_id, user_id), "answered": answered, "correct": correct,
                       "accuracy": round(accuracy, 4),
                       "flagged": answered >= GOLD_MIN_ANSWERS and accuracy < project.gold_threshold})
    return {"rate": project.gold_rate, "threshold": project.gold_threshold, "min_answers": GOLD_MIN_ANSWERS,
            "questions": len(store.all_records(session, project_id=project.id, split="gold")), "people": people}


def mark_gold(session: Session, project: Project, user: User, record_ids: list[int]) -> dict[str, Any]:
    """Reviewers turn settled records whose people agreed (or that a reviewer adjudicated) into gold questions,
    with that answer as the known one; other records are left as they are, counted by reason."""
    require_reviewer(user)
    task = task_of(project)
    left: dict[str, int] = defaultdict(int)
    made = 0
    for record in store.records_by_id(session, project_id=project.id, ids=record_ids):
        labels = record.human_labels if record.human_labels is not None else (
            [record.human_label] if record.human_label is not None else [])
        # an answer of no labels is one too where a record keeps lists (people agree a text has no spans)
        answer = task.gold_answer(project, labels) if labels or record.human_labels is not None else None
        if record.split == "gold":
            left["gold already"] += 1
        elif record.status == "open" or record.answer_source not in ("people", "adjudicated") or answer is None:
            left["no answer people agree on"] += 1
        else:
            record.split, record.gold = "gold", {**answer, "gold_since": time.time()}
            refresh_record(session, project, record)
            made += 1
    if made and project.gold_rate == 0:
        project.gold_rate = 0.1
    session.commit()
    return {"gold": made, "left": dict(left), "rate": project.gold_rate}
