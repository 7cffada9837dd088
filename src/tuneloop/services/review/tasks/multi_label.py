"""Multi-label classification: people pick one or more labels of the project's set for each text (a
classification project with `multi_label`). The answer is kept as a list of labels, in the order of the
project's label set, so the same set is always the same answer. Pre-labels and export are classification's,
with the label list in place of the label; a model's one label is measured by whether it is one of the
people's."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import Gold, Shown, register
from tuneloop.services.review.tasks.classification import Classification
from tuneloop.store.tables import Project, Record


@register
class MultiLabel(Classification):
    name = "multi-label"
    title = "pick every label that applies to a text"
    widget = "labels"
    multi_label_of = "classification"
    label_lists = True
    classifier_export = None  # the classify method learns one label per text: a chat model learns the list

    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        allowed = shown.project.labels
        labels = value.get("labels")
        if not isinstance(labels, list) or not labels:
            raise ServiceError(400, "value.labels: give one or more labels", "value.labels")
        unknown = [label for label in labels if label not in allowed]
        if unknown:
            raise ServiceError(400, f"value.labels: {unknown} not in the project's labels {allowed}", "value.labels")
        return {"labels": sorted(set(labels), key=allowed.index)}

    def labels_of(self, value: dict[str, Any]) -> list[str]:
        return list(value.get("labels") or [])

    def answer_of(self, value: dict[str, Any]) -> Hashable | None:
        """The label set, as a sorted tuple: two people agree when they gave the same set, whatever the order
        (the project's label order may change after they answered)."""
        labels = self.labels_of(value)
        return tuple(sorted(set(labels))) if labels else None

    def keep_answer(self, record: Record, answer: Hashable | None) -> None:
        record.human_label, record.human_labels = None, list(answer) if answer else None  # type: ignore[call-overload]

    def model_disagrees(self, answer: Hashable | None, predicted: str | None) -> bool:
        return answer is not None and predicted is not None and predicted not in answer  # type: ignore[operator]

    def answer_with(self, label: str) -> dict[str, Any]:
        return {"labels": [label]}

    def gold_answer(self, project: Project, labels: Gold) -> dict[str, Any] | None:
        return {"labels": [label for label in project.labels if label in labels]} if labels else None

    def people_labels(self, record: Record) -> Gold | None:
        return record.human_labels

    def labelled_text(self, record: Record, labels: Gold) -> dict[str, Any]:
        return {"text": record.text, "labels": labels}

    def agreement_labels(self, project: Project, answers: set[Hashable]) -> dict[str, Hashable]:
        """Per label, the set that is exactly that label (a set with others counts as 'not this label')."""
        return {label: (label,) for label in project.labels}

    def model_report(self, pairs: list[tuple[Gold, str]], labels: list[str]) -> dict[str, Any]:
        """A model's one label against the people's label set: accuracy is how often it is one of theirs;
        per label, precision and recall count the label present in the set. Kappa is not defined here."""
        sets = [(set(gold), predicted) for gold, predicted in pairs]
        index = {label: i for i, label in enumerate(labels)}
        confusion = [[0] * len(labels) for _ in labels]
        for gold, predicted in sets:
            for label in gold:
                if label in index and predicted in index:
                    confusion[index[label]][index[predicted]] += 1
        per_label = {label: _scores(sets, label) for label in labels}
        hits = sum(1 for gold, predicted in sets if predicted in gold) / len(sets)
        return {"accuracy": round(hits, 4),
                "macro_f1": round(sum(v["f1"] for v in per_label.values()) / len(labels), 4),
                "kappa": {"value": None, "records": len(sets)}, "per_label": per_label, "labels": labels,
                "confusion": confusion}

    def holdout_score(self, pairs: list[tuple[Gold, str]], labels: list[str]) -> tuple[float | None, float | None]:
        """How often the model's one label is one of the people's (macro-F1 is not defined for one label
        against a set)."""
        return sum(predicted in gold for gold, predicted in pairs) / len(pairs), None


def _scores(sets: list[tuple[set[str], str]], label: str) -> dict[str, float]:
    tp = sum(1 for gold, p in sets if p == label and label in gold)
    predicted_n = sum(1 for _, p in sets if p == label)
    support = sum(1 for gold, _ in sets if label in gold)
    precision = tp / predicted_n if predicted_n else 0.0
    recall = tp / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}
