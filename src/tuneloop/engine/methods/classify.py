"""Classification, two ways; `method: classify` picks one by `classifier` and the model's kind.

- A head (classify_head.py): a sequence-classification layer on an encoder (e.g. minilm-l6) or on a decoder's last
  token; the loss is cross-entropy over the label set.
- Generative (classify_generative.py): a chat model answers with the label (trained as SFT, see sft.py) and is scored by the
  likelihood of each label as its answer, never by parsing free text. The prompt runs once per
  example; the label continuations reuse its KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.config.recipe import Recipe
from tuneloop.data.records import LabelledRecord, Record
from tuneloop.engine.methods import Method, register
from tuneloop.engine.tokenize import classification_messages


@dataclass
class LabelExample:
    input_ids: list[int]
    label: int
    """Index into the run's label set."""

    n_target_tokens = 1


def tokenize_labelled(tokenizer: Any, records: list[Record], label_set: list[str],
                      max_length: int) -> list[LabelExample]:
    """The text of each record (truncated to max_length tokens) and the index of its first label."""
    index = {label: i for i, label in enumerate(label_set)}
    examples = []
    for record in records:
        assert isinstance(record, LabelledRecord)
        label = index.get(record.labels[0])
        if label is None:
            raise ValueError(f"label '{record.labels[0]}' is not in the training label set ({', '.join(label_set)})")
        ids = tokenizer(record.text, truncation=True, max_length=max_length)["input_ids"]
        examples.append(LabelExample(ids, label))
    return examples


def collate_labelled(examples: list[LabelExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask (B, T); labels (B,)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([e.label for e in examples])}


def head_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def head_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of example losses, number of examples)."""
    logits = head_logits(model, batch)
    return F.cross_entropy(logits, batch["labels"], reduction="sum"), len(batch["labels"])


# ---------------------------------------------------------------------- generative: label likelihood
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
    device = next(model.parameters()).device
    out = model(input_ids=prompt.to(device), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)           # (V,) for each label's first token
    width = max(len(ids) for ids in label_ids)
    n = len(label_ids)
    cont = torch.full((n, width), tokenizer.pad_token_id or 0, dtype=torch.long)
    for i, ids in enumerate(label_ids):
        cont[i, : len(ids)] = torch.tensor(ids)
    cache = out.cache
    cache.batch_repeat_interleave(n)                                          # (1, ...) -> (n, ...)
    mask = torch.ones((n, prompt.shape[1] + width), dtype=torch.long, device=device)
    rest = model(input_ids=cont.to(device), attention_mask=mask, cache=cache).logits.float()
    rest = torch.log_softmax(rest, dim=-1)                                    # (n, width, V)
    scores = []
    for i, ids in enumerate(label_ids):
        total = float(first[ids[0]])
        for j in range(1, len(ids)):
            total += float(rest[i, j - 1, ids[j]])                          # position j-1 predicts token j
        scores.append(total)
    return scores


def softmax(scores: Sequence[float]) -> list[float]:
    """Scores normalised over the label set (the model's confidence in each label)."""
    top = max(scores)
    exp = [math.exp(s - top) for s in scores]
    return [e / sum(exp) for e in exp]


# ---------------------------------------------------------------------- choosing the way
def uses_head(recipe: Recipe, model_kind: str) -> bool:
    """Whether `classify` trains a classification head on a model of this kind; errors for a bad pairing."""
    if recipe.classifier == "generative" and model_kind in {"encoder", "classifier"}:
        raise ValueError(f"classifier 'generative' needs a chat model; '{recipe.model}' is an encoder or a "
                         "classifier. Use classifier: head (or auto)")
    return recipe.classifier == "head" or (recipe.classifier == "auto" and model_kind in {"encoder", "classifier"})


@register("classify")
def classify(recipe: Recipe, model_kind: str) -> Method:
    """A head for encoders and trained classifiers (or `classifier: head`), else the label as generated text."""
    from tuneloop.engine.methods.classify_generative import GenerativeClassifier
    from tuneloop.engine.methods.classify_head import HeadClassifier

    return (HeadClassifier if uses_head(recipe, model_kind) else GenerativeClassifier)(recipe, model_kind)


def label_set_of(records: Any) -> list[str]:
    """The labels of the training records (sorted); ValueError naming the first record that has none."""
    for name, part in (("training", records.train), ("validation", records.validation)):
        bad = next((i for i, r in enumerate(part) if not isinstance(r, LabelledRecord)), None)
        if bad is not None:
            raise ValueError(f"method 'classify' needs labelled data (text + label); {name} example "
                             f"{bad + 1} is a {part[bad].kind} record")
    return sorted({label for r in records.train for label in r.labels})
