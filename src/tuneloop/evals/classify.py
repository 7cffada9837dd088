"""Classify texts with a trained head, or with a chat model scored by the likelihood of each label."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from tuneloop.engine.methods.classify import collate_labelled, head_logits, label_logprobs, label_token_ids, softmax
from tuneloop.engine.methods.classify import LabelExample
from tuneloop.evals.metrics import ClassificationReport, classification_report

Progress = Callable[[int], None]


def has_head(model: Any) -> bool:
    """True for a sequence-classification model (a head over the label set), False for a causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


@torch.no_grad()
def head_probabilities(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 512,
                       batch_size: int = 32, on_progress: Progress | None = None) -> list[list[float]]:
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs: list[list[float]] = [[] for _ in texts]
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        examples = [LabelExample(tokenizer(texts[i], truncation=True, max_length=max_length)["input_ids"], 0)
                    for i in part]
        batch = {k: v.to(device) for k, v in collate_labelled(examples, tokenizer.pad_token_id or 0).items()}
        for i, row in zip(part, torch.softmax(head_logits(model, batch), dim=-1).tolist()):
            probs[i] = row
        if on_progress:
            on_progress(len(part))
    return probs


def predict_labels(model: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[str],
                   on_progress: Progress | None = None) -> list[tuple[str, list[float]]]:
    """The most likely label of each text, with the probabilities of all labels."""
    model.eval()
    if has_head(model):
        all_probs = head_probabilities(model, tokenizer, texts, on_progress=on_progress)
    else:
        ids = label_token_ids(tokenizer, labels)
        all_probs = []
        for text in texts:
            all_probs.append(softmax(label_logprobs(model, tokenizer, text, labels, ids)))
            if on_progress:
                on_progress(1)
    return [(labels[max(range(len(labels)), key=p.__getitem__)], p) for p in all_probs]


def evaluate_classification(model: Any, tokenizer: Any, texts: Sequence[str], gold: Sequence[str],
                            labels: Sequence[str], on_progress: Progress | None = None) -> ClassificationReport:
    predictions = [label for label, _ in predict_labels(model, tokenizer, texts, labels, on_progress)]
    return classification_report(list(gold), predictions, list(labels))
