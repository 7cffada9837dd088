"""Metrics for evaluating a fine-tuned model: classification reports and generation scores.

Pure Python (plus numpy/matplotlib for the heat map, rouge-score for ROUGE); nothing here depends on the rest of tuneloop.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

OTHER_COLUMN = "(other)"
"""Name of the extra confusion column counting predictions outside the label set."""


@dataclass
class ClassificationReport:
    """Scores for one set of label predictions against the true labels.

    `confusion[i][j]` counts examples whose true label is `labels[i]` and whose predicted label is
    `labels[j]`; when `other_column` is True each row has one more, final cell counting predictions
    that are not in `labels` (shown as "(other)").
    """

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_label: dict[str, dict[str, float]]
    confusion: list[list[int]]
    other_column: bool
    n: int

    @property
    def column_labels(self) -> list[str]:
        """The predicted-label names heading the confusion columns, "(other)" included if present."""
        return self.labels + ([OTHER_COLUMN] if self.other_column else [])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (plain lists, dicts, floats, ints and bools)."""
        return asdict(self)


def _safe_ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, or 0.0 when the denominator is zero (scikit-learn zero_division=0)."""
    return numerator / denominator if denominator else 0.0


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> ClassificationReport:
    """Accuracy, per-label precision/recall/F1/support, macro-F1 and a confusion matrix.

    Use it after running a classifier over a labelled evaluation set. `labels` fixes the label set
    (it is sorted and de-duplicated); by default it is the sorted set of labels in `y_true`.
    A label that is never predicted gets precision 0.0; a label with no true examples gets recall
    0.0. Macro-F1 is the unweighted mean of F1 over `labels`. Predictions outside `labels` count as
    wrong and land in a final "(other)" confusion column.

    Raises ValueError if the inputs are empty, differ in length, or `y_true` holds a label that is
    missing from an explicit `labels`.
    """
    true_labels = [str(label) for label in y_true]
    predicted_labels = [str(label) for label in y_pred]
    if not true_labels and not predicted_labels:
        raise ValueError("classification_report needs at least one example: y_true and y_pred are empty")
    if len(true_labels) != len(predicted_labels):
        raise ValueError(
            f"y_true and y_pred must have the same length: got {len(true_labels)} true labels "
            f"and {len(predicted_labels)} predictions"
        )
    label_order = sorted({str(label) for label in labels}) if labels is not None else sorted(set(true_labels))
    if not label_order:
        raise ValueError("classification_report needs at least one label: labels is empty")
    index_of = {label: i for i, label in enumerate(label_order)}
    unknown_true = sorted(set(true_labels) - set(index_of))
    if unknown_true:
        raise ValueError(f"y_true contains labels not in labels: {unknown_true}")

    other_index = len(label_order)
    confusion = [[0] * (len(label_order) + 1) for _ in label_order]
    for true_label, predicted_label in zip(true_labels, predicted_labels):
        confusion[index_of[true_label]][index_of.get(predicted_label, other_index)] += 1
    other_column = any(row[other_index] for row in confusion)
    if not other_column:
        confusion = [row[:other_index] for row in confusion]

    per_label: dict[str, dict[str, float]] = {}
    for i, label in enumerate(label_order):
        true_positives = confusion[i][i]
        predicted_count = sum(row[i] for row in confusion)
        support = sum(confusion[i])
        precision = _safe_ratio(true_positives, predicted_count)
        recall = _safe_ratio(true_positives, support)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}

    correct = sum(t == p for t, p in zip(true_labels, predicted_labels))
    return ClassificationReport(
        labels=label_order,
        accuracy=correct / len(true_labels),
        macro_f1=sum(scores["f1"] for scores in per_label.values()) / len(label_order),
        per_label=per_label,
        confusion=confusion,
        other_column=other_column,
        n=len(true_labels),
    )


def format_confusion(report: ClassificationReport) -> str:
    """The confusion matrix as a plain-text table for a terminal or log: true rows, predicted columns."""
    corner = "true \\ predicted"
    columns = report.column_labels
    first_width = max(len(corner), *(len(label) for label in report.labels))
    widths = [max(len(label), *(len(str(row[j])) for row in report.confusion)) for j, label in enumerate(columns)]
    header = corner.ljust(first_width) + "".join("  " + label.rjust(w) for label, w in zip(columns, widths))
    lines = [header, "-" * len(header)]
    for label, row in zip(report.labels, report.confusion):
        lines.append(label.ljust(first_width) + "".join("  " + str(count).rjust(w) for count, w in zip(row, widths)))
    return "\n".join(lines)


def plot_confusion(report: ClassificationReport, path: str | Path) -> Path:
    """Write the confusion matrix as a PNG heat map with counts in the cells; returns the file path.

    Use it for reports and the web UI. Rows are true labels, columns predicted labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_path = Path(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    counts = np.array(report.confusion, dtype=int)
    columns = report.column_labels
    size = max(4.0, 0.6 * max(len(columns), len(report.labels)) + 2.0)
    figure, axes = plt.subplots(figsize=(size, size))
    try:
        image = axes.imshow(counts, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
        axes.set_xticks(range(len(columns)), labels=columns, rotation=45, ha="right")
        axes.set_yticks(range(len(report.labels)), labels=report.labels)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), count in np.ndenumerate(counts):
            colour = "white" if count > threshold else "black"
            axes.text(col, row, str(count), ha="center", va="center", color=colour)
        figure.tight_layout()
        figure.savefig(out_path, format="png", dpi=100)
    finally:
        plt.close(figure)
    return out_path


class _Words:
    """rouge-score's tokenizer protocol, on lowercased words of any script (its default keeps only a-z and 0-9)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


def words(text: str) -> list[str]:
    """The lowercased words of a text, in any script (the tokens ROUGE and GLEU count)."""
    return _Words().tokenize(text)


def rouge(kind: str, prediction: str, reference: str) -> float:
    """rouge-score's F-measure of `kind` ("rougeL", "rouge1" .. "rouge5") on words of any script; 0 when either is empty."""
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer([kind], tokenizer=_Words()).score(reference, prediction)[kind].fmeasure)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta=1) of a generated text against a reference, for free-text outputs (rouge-score)."""
    return rouge("rougeL", prediction, reference)


def exact_match(prediction: str, reference: str) -> bool:
    """True if the texts are equal after stripping surrounding whitespace and lowercasing."""
    return prediction.strip().lower() == reference.strip().lower()
