"""Classify texts with a trained head, or with a chat model scored by the likelihood of each label."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tuneloop.engine.methods.classify import (classification_prompt_ids, collate_labelled, head_logits,
                                              label_logprobs_batch, label_token_ids, softmax)
from tuneloop.data.records import LabelledRecord, Record
from tuneloop.engine.methods.classify import LabelExample
from tuneloop.evals.metrics import ClassificationReport, classification_report
from tuneloop.evals.sft import last_user_text, prompt_and_reference

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


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """A conversation's token ids up to where the assistant's answer starts."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])


def predict_labels(model: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[str],
                   on_progress: Progress | None = None,
                   prompts: Sequence[list[dict[str, str]]] | None = None) -> list[tuple[str, list[float]]]:
    """The most likely label of each text, with the probabilities of all labels. A head reads the texts; a chat
    model is scored by each label's likelihood as its answer to the classification prompt over the text, or to
    `prompts` (conversations up to the answer) when given."""
    model.eval()
    if has_head(model):
        all_probs = head_probabilities(model, tokenizer, texts, on_progress=on_progress)
    else:
        ids = ([chat_prompt_ids(tokenizer, messages) for messages in prompts] if prompts is not None else
               [classification_prompt_ids(tokenizer, text, labels) for text in texts])
        scores = label_logprobs_batch(model, tokenizer, ids, label_token_ids(tokenizer, labels),
                                      on_progress=on_progress)
        all_probs = [softmax(row) for row in scores]
    return [(labels[max(range(len(labels)), key=p.__getitem__)], p) for p in all_probs]


@dataclass
class LabelItems:
    """A classification test set in the form each kind of model reads it."""

    texts: list[str]
    """What a head reads: the record's text, or a conversation's last user message."""
    gold: list[str]
    prompts: list[list[dict[str, str]]] | None = None
    """Conversations up to their answer (chat data); None: the classification prompt over `texts`."""


def label_items(records: Sequence[Record]) -> LabelItems:
    """Labelled records (text + label), or conversations whose last assistant answer is the label."""
    if all(isinstance(r, LabelledRecord) for r in records):
        return LabelItems([r.text for r in records], [r.labels[0] for r in records])  # type: ignore[union-attr]
    texts, gold, prompts = [], [], []
    for record in records:
        found = prompt_and_reference(record)
        if found is None:
            raise ValueError("classification needs labelled records or conversations that end with an assistant "
                             "answer (the label)")
        before, answer = found
        prompts.append(before)
        gold.append(answer.strip())
        texts.append(last_user_text(before))
    return LabelItems(texts, gold, prompts)


def evaluate_classification(model: Any, tokenizer: Any, texts: Sequence[str], gold: Sequence[str],
                            labels: Sequence[str], on_progress: Progress | None = None,
                            prompts: Sequence[list[dict[str, str]]] | None = None) -> ClassificationReport:
    predictions = [label for label, _ in predict_labels(model, tokenizer, texts, labels, on_progress, prompts)]
    return classification_report(list(gold), predictions, list(labels))
