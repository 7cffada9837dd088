"""Spans (named entities): entity-level scores, and agreement between people.

Entity-level precision, recall and F1 are seqeval's (an entity counts only when its type and both boundaries
match), on the BIO tags of the words of each text or of a model's own tokens (data/spans.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch

from tuneloop.data.spans import OUTSIDE, SpanT, as_tuples, spans_from_tags, tag, words
from tuneloop.evals.agreement import Agreement, krippendorff_alpha


@dataclass
class EntityReport:
    precision: float
    recall: float
    f1: float
    per_label: dict[str, dict[str, float]]
    """label -> precision, recall, f1, support (entities the gold side has)."""
    entities: int

    def to_dict(self) -> dict[str, Any]:
        return {"precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4),
                "entities": self.entities, "per_label": self.per_label}


def entity_report(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> EntityReport:
    """Entity-level micro precision, recall and F1 (and per label) of predicted BIO sequences against gold ones,
    seqeval's default (conlleval) matching."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    gold, predicted = [list(t) for t in gold], [list(t) for t in predicted]
    per = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_label = {label: {"precision": round(float(v["precision"]), 4), "recall": round(float(v["recall"]), 4),
                         "f1": round(float(v["f1-score"]), 4), "support": int(v["support"])}
                 for label, v in per.items() if not label.endswith(" avg")}
    return EntityReport(float(precision_score(gold, predicted, zero_division=0)),
                        float(recall_score(gold, predicted, zero_division=0)),
                        float(f1_score(gold, predicted, zero_division=0)), per_label,
                        sum(v["support"] for v in per_label.values()))


def span_report(texts: Sequence[str], gold: Sequence[Sequence[Any]], predicted: Sequence[Sequence[Any]]) -> EntityReport:
    """Entity scores of predicted spans against gold spans, both tagged over the words of each text."""
    gold_tags, predicted_tags = [], []
    for text, g, p in zip(texts, gold, predicted):
        offsets = words(text)
        gold_tags.append(tag(offsets, g))
        predicted_tags.append(tag(offsets, p))
    return entity_report(gold_tags, predicted_tags)


# ---------------------------------------------------------------------- agreement between people
def _overlap(a: SpanT, b: SpanT) -> bool:
    return a[2] == b[2] and a[0] < b[1] and b[0] < a[1]


def pair_f1(first: Sequence[SpanT], second: Sequence[SpanT], partial: bool = False) -> tuple[int, int, int, int]:
    """(spans of `first` matched in `second`, spans of `first`, spans of `second` matched in `first`, spans of
    `second`): exact matches need both boundaries and the label; partial ones the label and any overlap."""
    if partial:
        hits_first = sum(any(_overlap(a, b) for b in second) for a in first)
        hits_second = sum(any(_overlap(a, b) for a in first) for b in second)
    else:
        shared = len(set(first) & set(second))
        hits_first = hits_second = shared
    return hits_first, len(first), hits_second, len(second)


def _f1(hits_first: int, n_first: int, hits_second: int, n_second: int) -> float | None:
    """F1 of two people's spans, each in turn the reference: precision = matched of the first's, recall =
    matched of the second's; None when neither marked anything."""
    if n_first == 0 and n_second == 0:
        return None
    precision = hits_first / n_first if n_first else 0.0
    recall = hits_second / n_second if n_second else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def span_agreement(texts: Mapping[Hashable, str],
                   units: Mapping[Hashable, Mapping[Hashable, Sequence[Any]]]) -> dict[str, Any]:
    """How much people agree on spans, over the records several people marked (`units`: record -> {person:
    spans}; `texts`: record -> text):
    - exact and partial F1 between each pair of people, summed over their shared records (micro), then the
      mean over pairs;
    - Krippendorff's alpha (nominal) on words: each word of each record is a unit, valued with the label of
      the span it falls in, or O."""
    totals: dict[tuple[Hashable, Hashable], list[list[int]]] = {}
    token_units: list[dict[Hashable, Hashable]] = []
    for record, people in units.items():
        marked = {who: as_tuples(spans) for who, spans in people.items()}
        if len(marked) < 2:
            continue
        for a, b in combinations(sorted(marked, key=str), 2):
            sums = totals.setdefault((a, b), [[0] * 4, [0] * 4])
            for i, partial in enumerate((False, True)):
                for j, n in enumerate(pair_f1(marked[a], marked[b], partial)):
                    sums[i][j] += n
        offsets = words(texts[record])
        tags = {who: tag(offsets, spans) for who, spans in marked.items()}
        for i in range(len(offsets)):
            token_units.append({who: t[i][2:] if t[i] != OUTSIDE else OUTSIDE for who, t in tags.items()})
    pairs = []
    for (a, b), (exact, partial) in totals.items():
        pairs.append({"people": [a, b], "exact_f1": _f1(*exact), "partial_f1": _f1(*partial)})

    def mean(key: str) -> float | None:
        values = [p[key] for p in pairs if p[key] is not None]
        return sum(values) / len(values) if values else None

    alpha: Agreement = krippendorff_alpha(token_units)
    records = sum(1 for people in units.values() if len(people) >= 2)
    return {"exact_f1": mean("exact_f1"), "partial_f1": mean("partial_f1"), "pairs": pairs,
            "token_alpha": alpha.value, "tokens": len(token_units), "records": records}


# ---------------------------------------------------------------------- a trained token head
@dataclass
class Predicted:
    spans: list[SpanT]
    scores: list[float]
    """Each span's probability: the mean over its tokens of the predicted tag's probability."""
    uncertainty: float
    """1 - the lowest margin between the two most likely tags over the text's tokens (0: sure of every token)."""


def has_token_head(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForTokenClassification")


@torch.no_grad()
def predict_spans(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 512,
                  batch_size: int = 32) -> list[Predicted]:
    """The spans a token-classification model finds in each text (its tags are `config.id2label`)."""
    from tuneloop.engine.methods.token_classify import TokenExample, collate_tokens, token_logits, token_offsets

    model.eval()
    device = next(model.parameters()).device
    tags = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    out: list[Predicted | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        encoded = [token_offsets(tokenizer, texts[i], max_length) for i in part]
        examples = [TokenExample(ids, [0] * len(ids)) for ids, _ in encoded]
        batch = {k: v.to(device) for k, v in collate_tokens(examples, tokenizer.pad_token_id or 0).items()}
        probs = torch.softmax(token_logits(model, batch), dim=-1)
        for row, (i, (_, offsets)) in enumerate(zip(part, encoded)):
            keep = [j for j, o in enumerate(offsets) if o is not None and o[1] > o[0]]
            p = probs[row, keep]
            top2 = p.topk(min(2, p.shape[-1]), dim=-1).values if len(keep) else p
            best = p.argmax(-1).tolist() if len(keep) else []
            pieces = [offsets[j] for j in keep]
            found = spans_from_tags(texts[i], pieces, [tags[b] for b in best])  # type: ignore[arg-type]
            scores = []
            for s, e, _ in found:
                inside = [k for k, (a, b) in enumerate(pieces) if a < e and b > s]  # type: ignore[misc]
                scores.append(float(p[inside].max(-1).values.mean()) if inside else 0.0)
            margin = (top2[:, 0] - top2[:, 1]).min().item() if len(keep) and top2.shape[-1] > 1 else 1.0
            out[i] = Predicted(found, scores, 1.0 - margin)
    return out  # type: ignore[return-value]


def evaluate_spans(model: Any, tokenizer: Any, texts: Sequence[str], gold: Sequence[Sequence[Any]],
                   max_length: int = 512) -> EntityReport:
    """Entity-level scores of a token-classification model on texts with their gold spans."""
    predicted = predict_spans(model, tokenizer, texts, max_length)
    return span_report(texts, gold, [p.spans for p in predicted])
