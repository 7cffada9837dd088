"""Spans (named entities): people mark stretches of a text and give each a label of the project's set. A
token classifier (the token_classify method) pre-labels them; the export is the spans as character offsets,
or BIO tags over words; agreement between people is exact and partial span F1 and Krippendorff's alpha on
words; a model is scored with entity-level precision, recall and F1 (seqeval's matching)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuneloop.data.spans import as_tuples, bio
from tuneloop.evals.spans import entity_report, span_agreement
from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import Gold, Item, Shown, TaskType, Unfit, register
from tuneloop.store.tables import Annotation, Prediction, Project, Record, User

if TYPE_CHECKING:
    from tuneloop.services.review.prelabel import Predictor

Key = tuple[tuple[int, int, str], ...]
LABEL_WIDTH = 200
"""A prediction's label column holds the spans as a key (`6:14 ORDER|26:31 DATE`), within the column's width."""
PART = re.compile(r"^(\d+):(\d+) (.+)$")


def key_of(spans: Sequence[Any]) -> Key:
    return tuple(as_tuples(spans))


def key_label(key: Key) -> str:
    """The spans as a short, comparable string (a prediction's label, the table's prediction filter). When all
    of them do not fit the column, the whole spans that fit are followed by `|…` and a digest of the full key,
    so two keys are equal only when the spans are."""
    full = "|".join(f"{s}:{e} {label}" for s, e, label in key)
    if len(full) <= LABEL_WIDTH:
        return full or "(none)"
    digest = "|…" + hashlib.blake2b(full.encode(), digest_size=6).hexdigest()
    parts, kept = full.split("|"), ""
    for part in parts:
        if len(kept) + len(part) + 1 + len(digest) > LABEL_WIDTH:
            break
        kept = f"{kept}|{part}" if kept else part
    return kept + digest


def key_from_label(label: str | None) -> Key:
    """The spans a key names (those it kept whole, when it was cut)."""
    found = [PART.match(part) for part in (label or "").split("|")]
    return tuple((int(m[1]), int(m[2]), m[3]) for m in found if m)


def words_of(text: str, spans: Sequence[Any]) -> str:
    """Spans as the labelled words they mark: `ORDER “VC-48213”, DATE “3 May”`."""
    return ", ".join(f"{label} “{text[s:e]}”" for s, e, label in as_tuples(spans)) or "no spans"


def as_dicts(key: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"start": s, "end": e, "label": label} for s, e, label in as_tuples(key)]


def check_spans(value: Any, text: str, labels: Sequence[str], field: str) -> list[dict[str, Any]]:
    """Spans as stored (sorted, as dicts); ServiceError(400) naming the span and what is wrong with it."""
    if not isinstance(value, list):
        raise ServiceError(400, f"{field}: give a list of spans ({{start, end, label}}); an empty list marks none",
                           field)
    if len(value) > len(text):
        raise ServiceError(400, f"{field}: {len(value)} spans in a text of {len(text)} characters", field)
    spans = []
    for i, span in enumerate(value):
        here = f"{field}[{i}]"
        if not isinstance(span, Mapping) or set(span) - {"start", "end", "label", "text"}:
            raise ServiceError(400, f"{here}: a span is {{start, end, label}}", here)
        start, end, label = span.get("start"), span.get("end"), span.get("label")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise ServiceError(400, f"{here}: start and end are character offsets (whole numbers)", here)
        if not 0 <= start < end <= len(text):  # type: ignore[operator]
            raise ServiceError(400, f"{here}: {start} to {end} is not a stretch of the text (0 to {len(text)})", here)
        if text[start].isspace() or text[end - 1].isspace():  # type: ignore[index]
            raise ServiceError(400, f"{here}: {text[start:end]!r} starts or ends with whitespace; mark the words "  # type: ignore[misc]
                                    "alone", here)
        if label not in labels:
            raise ServiceError(400, f"{here}.label: '{label}' is not one of {', '.join(labels)}", f"{here}.label")
        spans.append((start, end, label))
    spans.sort()
    for (s1, e1, _), (s2, e2, _) in zip(spans, spans[1:]):
        if s2 < e1:
            raise ServiceError(400, f"{field}: the spans {s1}-{e1} and {s2}-{e2} overlap; a text's spans may not",
                               field)
    return as_dicts(spans)  # type: ignore[arg-type]


def _char_tags(key: Sequence[tuple[int, int, str]], width: int) -> list[str]:
    """BIO tags per character: entities read back from them are exactly the spans (seqeval scores them)."""
    tags = ["O"] * width
    for start, end, label in key:
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def span_scores(pairs: list[tuple[Gold, Hashable]]) -> tuple[Any, float]:
    """(seqeval's entity report, the share of records whose spans are all exactly right) of predicted spans
    against the people's, on character offsets."""
    gold_tags, predicted_tags, exact = [], [], 0
    for gold, predicted in pairs:
        g, p = key_of(gold), key_of(predicted)  # type: ignore[arg-type]
        width = max([e for _, e, _ in (*g, *p)], default=0) or 1
        gold_tags.append(_char_tags(g, width))
        predicted_tags.append(_char_tags(p, width))
        exact += g == p
    return entity_report(gold_tags, predicted_tags), exact / len(pairs)


@register
class Spans(TaskType):
    name = "spans"
    title = "mark and label stretches of a text (named entities)"
    widget = "spans"
    takes_labels = True
    least_labels = 1
    bulk_accepts = True
    label_lists = True
    exports = ("spans", "bio")
    trains = "token_classify"
    round_metric = "entity F1"
    prediction_keys = True
    prelabels = True

    def item_labels(self, item: Item) -> list[str]:
        return sorted({s["label"] for s in item.get("spans", [])})

    def answer_text(self, record: Record) -> str | None:
        return None if record.human_labels is None else words_of(record.text, record.human_labels)

    def prediction_text(self, record: Record) -> str | None:
        return None if record.pred_label is None else words_of(record.text, key_from_label(record.pred_label))

    def read(self, item: Item) -> tuple[str, dict[str, Any]]:
        text = item.get("text")
        if not isinstance(text, str):
            raise Unfit("a spans project needs texts ('text', with 'spans' where some are marked already)")
        return text, {}

    def view(self, record: Record, prediction: dict[str, Any] | None, user: User | None) -> dict[str, Any]:
        """The model's spans, as the draft people correct (none when no prediction is shown)."""
        answer = (prediction or {}).get("answer") or {}
        return {"draft_spans": answer.get("spans") or []}

    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        return {"spans": check_spans(value.get("spans"), shown.record.text, shown.project.labels, "value.spans")}

    def labels_of(self, value: dict[str, Any]) -> list[str]:
        return [s["label"] for s in value.get("spans") or []]

    def answer_of(self, value: dict[str, Any]) -> Hashable | None:
        """The spans, as a sorted tuple: two people agree on a record when they marked the same spans (the
        project's agreement section also scores partial agreement)."""
        spans = value.get("spans")
        return None if spans is None else key_of(spans)

    def keep_answer(self, record: Record, answer: Hashable | None) -> None:
        record.human_label = None
        record.human_labels = None if answer is None else [list(s) for s in answer]  # type: ignore[union-attr]

    def model_disagrees(self, answer: Hashable | None, predicted: str | None) -> bool:
        return answer is not None and predicted is not None and key_label(answer) != predicted  # type: ignore[arg-type]

    def model_answer(self, prediction: Prediction) -> dict[str, Any] | None:
        spans = (prediction.answer or {}).get("spans")
        return None if spans is None else {"spans": as_dicts(spans)}

    def predicted_answer(self, prediction: Prediction) -> Hashable | None:
        spans = (prediction.answer or {}).get("spans")
        return None if spans is None else key_of(spans)

    def gold_answer(self, project: Project, labels: Gold) -> dict[str, Any] | None:
        """A settled record's spans (`human_labels`: [start, end, label] lists) as a gold question's answer."""
        return {"spans": as_dicts(labels)}

    def gold_of(self, project: Project, item: Item) -> dict[str, Any] | None:
        return {"spans": as_dicts(item["spans"])} if "spans" in item else None

    # ---------------------------------------------------------------- export
    def export_row(self, project: Project, record: Record, annotations: list[Annotation],
                   kind: str) -> dict[str, Any] | None:
        if record.human_labels is None:
            return None
        spans = as_dicts([tuple(s) for s in record.human_labels])
        if kind == "spans":
            return {"text": record.text, "spans": spans}
        tokens, tags = bio(record.text, spans)
        return {"tokens": tokens, "tags": tags}

    # ---------------------------------------------------------------- pre-labels
    def predict(self, project: Project, predictor: Predictor, records: list[Record],
                uncertainty: Callable[[Sequence[float]], float]) -> list[dict[str, Any]]:
        """The token classifier's spans of the project's labels; its confidence is its least sure span's, and
        its uncertainty the smallest margin between two tags over the text's tokens."""
        rows = []
        for record, found in zip(records, predictor.spans([r.text for r in records], project.labels)):
            kept = [(span, score) for span, score in zip(found.spans, found.scores) if span[2] in project.labels]
            key = key_of([span for span, _ in kept])
            rows.append({"record_id": record.id, "model": predictor.name,
                         "answer": {"spans": as_dicts(key), "scores": [round(s, 4) for _, s in kept]},
                         "label": key_label(key), "confidence": min((s for _, s in kept), default=1.0),
                         "uncertainty": found.uncertainty})
        return rows

    # ---------------------------------------------------------------- quality
    def agreement_labels(self, project: Project, answers: set[Hashable]) -> dict[str, Hashable]:
        return {}  # per label, agreement is in `agreement_report` (alpha on words)

    def agreement_report(self, texts: Callable[[Sequence[int]], Mapping[int, str]],
                         units: Mapping[int, Mapping[str, Hashable]]) -> dict[str, Any] | None:
        return span_agreement(texts(list(units)), units)  # type: ignore[arg-type]

    def model_report(self, pairs: list[tuple[Gold, Hashable]], labels: list[str]) -> dict[str, Any]:
        report, exact = span_scores(pairs)
        return {"accuracy": round(exact, 4), "macro_f1": None, "entity": report.to_dict(),
                "kappa": {"value": None, "records": len(pairs)}, "per_label": report.per_label, "labels": labels}

    def holdout_score(self, pairs: list[tuple[Gold, Hashable]], labels: list[str]) -> tuple[float | None, float | None]:
        """(entity F1, None): a round is measured, and takes over the queue, by its entity-level F1."""
        report, _ = span_scores(pairs)
        return report.f1, None
