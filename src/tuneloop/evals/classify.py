"""Generative classification scored by likelihood: the model's log-probability of each label as its
answer, instead of parsing free text. The prompt runs once per example; the labels reuse its cache."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tuneloop.engine.tokenize import classification_messages
from tuneloop.evals.metrics import ClassificationReport, classification_report


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> list[list[int]]:
    """Each label as the answer tokens the template produces: the label, then the end-of-turn token."""
    ids = []
    for label in labels:
        answer = tokenizer(label, add_special_tokens=False)["input_ids"]
        end = tokenizer.eos_token_id
        ids.append(answer + ([end] if end is not None else []))
    return ids


@torch.no_grad()
def label_logprobs(model: Any, tokenizer: Any, text: str, labels: Sequence[str],
                   label_ids: list[list[int]] | None = None) -> list[float]:
    """log p(label + end of turn | classification prompt) for each label."""
    label_ids = label_ids or label_token_ids(tokenizer, labels)
    prompt = tokenizer.apply_chat_template(classification_messages(text, list(labels)), add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    out = model(input_ids=prompt, use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)           # (V,) for each label's first token
    width = max(len(ids) for ids in label_ids)
    n = len(label_ids)
    cont = torch.full((n, width), tokenizer.pad_token_id or 0, dtype=torch.long)
    for i, ids in enumerate(label_ids):
        cont[i, : len(ids)] = torch.tensor(ids)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)                                          # (1, ...) -> (n, ...)
    mask = torch.ones((n, prompt.shape[1] + width), dtype=torch.long)
    rest = model(input_ids=cont, attention_mask=mask, past_key_values=cache).logits.float()
    rest = torch.log_softmax(rest, dim=-1)                                    # (n, width, V)
    scores = []
    for i, ids in enumerate(label_ids):
        total = float(first[ids[0]])
        for j in range(1, len(ids)):
            total += float(rest[i, j - 1, ids[j]])                          # position j-1 predicts token j
        scores.append(total)
    return scores


def label_probabilities(scores: list[float]) -> list[float]:
    """Scores normalised over the label set (the model's confidence in each label)."""
    top = max(scores)
    exp = [math.exp(s - top) for s in scores]
    return [e / sum(exp) for e in exp]


def predict_labels(model: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[str],
                   on_progress: Callable[[int], None] | None = None) -> list[tuple[str, list[float]]]:
    """The most likely label of each text, with the probabilities of all labels."""
    model.eval()
    ids = label_token_ids(tokenizer, labels)
    results = []
    for text in texts:
        probs = label_probabilities(label_logprobs(model, tokenizer, text, labels, ids))
        results.append((labels[max(range(len(labels)), key=probs.__getitem__)], probs))
        if on_progress:
            on_progress(1)
    return results


def evaluate_classification(model: Any, tokenizer: Any, texts: Sequence[str], gold: Sequence[str],
                            labels: Sequence[str], on_progress: Callable[[int], None] | None = None
                            ) -> ClassificationReport:
    predictions = [label for label, _ in predict_labels(model, tokenizer, texts, labels, on_progress)]
    return classification_report(list(gold), predictions, list(labels))
