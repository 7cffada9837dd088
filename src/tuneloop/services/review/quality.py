"""How much people agree with each other, and how much each model agrees with people. What an answer is
compared by, and how a model's labels are scored against the people's, is the task type's (tasks/)."""

from __future__ import annotations

from collections import defaultdict
from statistics import median
from collections.abc import Hashable
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.evals.agreement import alpha_per_label, cohen_kappa, krippendorff_alpha
from tuneloop.services.review.tasks import Gold, agreement_dict, task_of
from tuneloop.store import review as store
from tuneloop.store.tables import Project


def human_units(session: Session, project: Project) -> dict[int, dict[str, Hashable]]:
    """record id -> {annotator: answer} over people's own counted answers (never a model's label someone
    accepted, nor an adjudication)."""
    task = task_of(project)
    units: dict[int, dict[str, Hashable]] = defaultdict(dict)
    gold = {r.id for r in store.all_records(session, project_id=project.id, split="gold")}
    for a in store.project_annotations(session, project_id=project.id):
        answer = task.answer_of(a.value) if a.source == "person" and a.record_id not in gold else None
        if answer is not None:
            units[a.record_id][a.user_id] = answer
    return units


def agreement(session: Session, project: Project) -> dict[str, Any]:
    """Krippendorff's alpha over everyone (and per label); Cohen's kappa for each pair of people, on the
    records both annotated. Each number comes with how many records it rests on."""
    units = human_units(session, project)
    names = {u.id: u.username for u in store.list_users(session)}
    people = sorted({who for unit in units.values() for who in unit})
    pairs = []
    for i, first in enumerate(people):
        for second in people[i + 1:]:
            shared = [unit for unit in units.values() if first in unit and second in unit]
            kappa = cohen_kappa([u[first] for u in shared], [u[second] for u in shared])
            if kappa.units:
                pairs.append({"people": [names.get(first, first), names.get(second, second)], **agreement_dict(kappa)})
    answers = {v for unit in units.values() for v in unit.values()}
    task = task_of(project)
    per_label = task.agreement_labels(project, answers)
    alphas = alpha_per_label(list(units.values()), list(per_label.values()))  # type: ignore[arg-type]
    out = {"alpha": agreement_dict(krippendorff_alpha(list(units.values()))),
           "alpha_per_label": {label: agreement_dict(alphas[answer]) for label, answer in per_label.items()},
           "kappa_pairs": pairs, "annotators": len(people)}
    shared = {record_id: unit for record_id, unit in units.items() if len(unit) > 1}
    extra = task.agreement_report(lambda ids: store.texts_of(session, project_id=project.id, ids=ids),
                                  {record_id: {names.get(who, who): answer for who, answer in unit.items()}
                                   for record_id, unit in shared.items()})
    if extra is not None:
        for pair in extra.get("pairs", []):
            pair.update({k: None if v is None else round(v, 4) for k, v in pair.items() if k != "people"})
        out[task.name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in extra.items()}
    return out


def model_vs_human(session: Session, project: Project) -> list[dict[str, Any]]:
    """Per model (its newest prediction per record): accuracy, Cohen's kappa with the people's label,
    per-label precision/recall and the confusion matrix, on the records people labelled."""
    task = task_of(project)
    human = store.human_labels(session, project_id=project.id)
    by_model: dict[str, list[tuple[Gold, str]]] = defaultdict(list)
    for p in store.latest_predictions(session, project_id=project.id):
        predicted = task.predicted_answer(p)
        if p.record_id in human and predicted is not None:
            by_model[p.model].append((human[p.record_id], predicted))  # type: ignore[arg-type]
    labels = project.labels or sorted({label for pairs in by_model.values() for gold, predicted in pairs
                                       for label in [*gold, predicted]})  # type: ignore[misc]
    return [{"model": model, "records": len(pairs), **task.model_report(pairs, labels)}
            for model, pairs in by_model.items()]


def disagreement_counts(session: Session, project: Project) -> dict[str, int]:
    return store.disagreement_counts(session, project_id=project.id)



BREAK_SECONDS = 600.0
"""A gap longer than this between one person's answers is a break, not time spent on a record."""


def throughput(session: Session, project: Project) -> dict[str, Any]:
    """How fast the work goes: per person, the median seconds per record (the gaps between their consecutive
    answers, breaks left out) and records per hour at that pace; for the project, the median time from a
    record's first answer to the answer that settled it (time to agreement)."""
    names = {u.id: u.username for u in store.list_users(session)}
    by_person: dict[str, list[float]] = defaultdict(list)
    by_record: dict[int, list[float]] = defaultdict(list)
    for a in store.project_annotations(session, project_id=project.id):
        if a.source == "person":
            by_person[a.user_id].append(a.created_at)
            by_record[a.record_id].append(a.created_at)
    people = []
    for user_id, times in sorted(by_person.items(), key=lambda item: names.get(item[0], item[0])):
        times.sort()
        gaps = [later - earlier for earlier, later in zip(times, times[1:]) if later - earlier <= BREAK_SECONDS]
        pace = median(gaps) if gaps else None
        people.append({"user": names.get(user_id, user_id), "records": len(times),
                       "seconds_per_record": round(pace, 1) if pace is not None else None,
                       "records_per_hour": round(3600 / pace, 1) if pace else None})
    settled = store.settled_ids(session, project_id=project.id)
    spans = [max(times) - min(times) for record_id, times in by_record.items() if record_id in settled and len(times) > 1]
    return {"people": people, "time_to_agreement": round(median(spans), 1) if spans else None,
            "settled_by_several": len(spans)}
