"""How much people agree with each other, and how much each model agrees with people."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.evals.agreement import Agreement, alpha_per_label, cohen_kappa, krippendorff_alpha
from tuneloop.evals.metrics import classification_report
from tuneloop.store import review as store
from tuneloop.store.tables import Project


def _as_dict(agreement: Agreement) -> dict[str, Any]:
    return {"value": None if agreement.value is None else round(agreement.value, 4), "records": agreement.units}


def human_units(session: Session, project: Project) -> dict[int, dict[str, str]]:
    """record id -> {annotator: label} over counted annotations."""
    units: dict[int, dict[str, str]] = defaultdict(dict)
    for a in store.project_annotations(session, project_id=project.id):
        if a.value.get("label") is not None:
            units[a.record_id][a.user_id] = a.value["label"]
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
                pairs.append({"people": [names.get(first, first), names.get(second, second)], **_as_dict(kappa)})
    labels = project.labels or sorted({v for unit in units.values() for v in unit.values()})
    return {"alpha": _as_dict(krippendorff_alpha(list(units.values()))),
            "alpha_per_label": {label: _as_dict(a) for label, a in alpha_per_label(list(units.values()),
                                                                                  labels).items()},
            "kappa_pairs": pairs, "annotators": len(people)}


def model_vs_human(session: Session, project: Project) -> list[dict[str, Any]]:
    """Per model (its newest prediction per record): accuracy, Cohen's kappa with the people's label,
    per-label precision/recall and the confusion matrix, on the records people labelled."""
    human = store.human_labels(session, project_id=project.id)
    by_model: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for p in store.latest_predictions(session, project_id=project.id):
        if p.record_id in human and p.label is not None:
            by_model[p.model].append((human[p.record_id], p.label))
    out = []
    labels = project.labels or sorted({label for pairs in by_model.values() for pair in pairs for label in pair})
    for model, pairs in by_model.items():
        if project.multi_label:
            out.append({"model": model, "records": len(pairs), **_multi_label_report(pairs, labels)})
            continue
        gold, predicted = [g for g, _ in pairs], [p for _, p in pairs]
        report = classification_report(gold, predicted, labels)
        out.append({"model": model, "records": len(pairs), "accuracy": round(report.accuracy, 4),
                    "macro_f1": round(report.macro_f1, 4), "kappa": _as_dict(cohen_kappa(gold, predicted)),
                    "per_label": report.per_label, "labels": labels, "confusion": report.confusion})
    return out


def _multi_label_report(pairs: list[tuple[str, str]], labels: list[str]) -> dict[str, Any]:
    """A model's one label against the people's label set: accuracy is how often it is one of theirs;
    per label, precision and recall count the label present in the set. Kappa is not defined here."""
    sets = [(set(gold.split("|")), predicted) for gold, predicted in pairs]
    per_label: dict[str, dict[str, float]] = {}
    confusion = [[0] * len(labels) for _ in labels]
    index = {label: i for i, label in enumerate(labels)}
    for gold, predicted in sets:
        for label in gold:
            if label in index and predicted in index:
                confusion[index[label]][index[predicted]] += 1
    for label in labels:
        tp = sum(1 for gold, p in sets if p == label and label in gold)
        predicted_n = sum(1 for _, p in sets if p == label)
        support = sum(1 for gold, _ in sets if label in gold)
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    hits = sum(1 for gold, predicted in sets if predicted in gold) / len(sets)
    return {"accuracy": round(hits, 4), "macro_f1": round(sum(v["f1"] for v in per_label.values()) / len(labels), 4),
            "kappa": {"value": None, "records": len(sets)}, "per_label": per_label, "labels": labels,
            "confusion": confusion}


def disagreement_counts(session: Session, project: Project) -> dict[str, int]:
    return store.disagreement_counts(session, project_id=project.id)
