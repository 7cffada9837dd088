"""Classification: people pick one label of the project's set for each text. A model pre-labels with the
probability of each label; the export is labelled text, or chats in the prompt a chat model is scored with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tuneloop.engine.tokenize import classification_messages
from tuneloop.evals.agreement import cohen_kappa
from tuneloop.evals.metrics import classification_report
from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import (Gold, Item, Shown, TaskType, agreement_dict, last_user, register)
from tuneloop.store.tables import Annotation, Project, Record

if TYPE_CHECKING:
    from tuneloop.services.review.prelabel import Predictor


@register
class Classification(TaskType):
    name = "classification"
    title = "pick the label of a text"
    widget = "labels"
    takes_labels = True
    label_answers = True
    bulk_accepts = True
    exports = ("classify", "chat", "sft")
    classifier_export = "classify"
    train_as = "chat"
    prelabels = True

    def read(self, item: Item) -> tuple[str, dict[str, Any]]:
        return item.get("text") or last_user(item.get("prompt", [])), {}

    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        labels = shown.project.labels
        label = value.get("label")
        if label not in labels:
            raise ServiceError(400, f"value.label: '{label}' is not one of {', '.join(labels)}", "value.label")
        return {"label": label}

    # ---------------------------------------------------------------- export
    def people_labels(self, record: Record) -> Gold | None:
        """The labels the people gave a record (None before they did)."""
        return None if record.human_label is None else [record.human_label]

    def labelled_text(self, record: Record, labels: Gold) -> dict[str, Any]:
        return {"text": record.text, "label": labels[0]}

    def export_row(self, project: Project, record: Record, annotations: list[Annotation],
                   kind: str) -> dict[str, Any] | None:
        labels = self.people_labels(record)
        if labels is None:
            return None
        if kind == "classify":
            return self.labelled_text(record, labels)
        # the prompt a chat model is scored with when it pre-labels (each label's likelihood), so training matches
        return {"messages": classification_messages(record.text, project.labels, ", ".join(labels))}

    # ---------------------------------------------------------------- pre-labels
    def predict(self, project: Project, predictor: Predictor, records: list[Record],
                uncertainty: Callable[[Sequence[float]], float]) -> list[dict[str, Any]]:
        rows = []
        for record, probs in zip(records, predictor.classify([r.text for r in records], project.labels)):
            best = max(range(len(probs)), key=probs.__getitem__)
            rows.append({"record_id": record.id, "model": predictor.name, "answer": {"label": project.labels[best]},
                         "label": project.labels[best], "confidence": probs[best],
                         "probabilities": dict(zip(project.labels, probs)), "uncertainty": uncertainty(probs)})
        return rows

    # ---------------------------------------------------------------- quality
    def model_report(self, pairs: list[tuple[Gold, str]], labels: list[str]) -> dict[str, Any]:
        gold, predicted = [g[0] for g, _ in pairs], [p for _, p in pairs]
        report = classification_report(gold, predicted, labels)
        return {"accuracy": round(report.accuracy, 4), "macro_f1": round(report.macro_f1, 4),
                "kappa": agreement_dict(cohen_kappa(gold, predicted)), "per_label": report.per_label,
                "labels": labels, "confusion": report.confusion}

    def holdout_score(self, pairs: list[tuple[Gold, str]], labels: list[str]) -> tuple[float | None, float | None]:
        report = classification_report([g[0] for g, _ in pairs], [p for _, p in pairs], labels)
        return report.accuracy, report.macro_f1
