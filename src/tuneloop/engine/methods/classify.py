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
from tuneloop.engine.methods.sft import causal_parts
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


def classification_prompt_ids(tokenizer: Any, text: str, labels: Sequence[str]) -> list[int]:
    """The token ids of the prompt that asks for one of `labels`, up to where the answer starts."""
    return list(tokenizer.apply_chat_template(classification_messages(text, list(labels)), add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])


LIKELIHOOD_BATCH = 16
"""Prompts scored together. Sorted by length, rows in a batch differ little, so padding costs little."""


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share, leaving each at least its last token (which predicts the
    answer's first)."""
    if len(prompts) < 2:
        return 0
    first, shortest = prompts[0], min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


@torch.no_grad()
def label_logprobs_batch(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], label_ids: list[list[int]],
                         batch_size: int = LIKELIHOOD_BATCH,
                         on_progress: Any = None) -> list[list[float]]:
    """log p(label + end of turn | prompt) for each prompt and label: `label_logprobs` for many prompts at once.

    The prefix every prompt shares (the chat template's system message, which lists the labels) runs once per
    batch; each prompt's own tokens run once, left-padded beside prompts of similar length. Then all of a prompt's
    labels run together in one row after its KV cache: each label's tokens (but its last, which predicts nothing)
    see the prompt and the label's own earlier tokens, never another label's (a block mask), at the positions
    they would have after the prompt. The prompt's last position predicts every label's first token. Only those
    positions go through the LM head. Equal to `label_logprobs` one prompt at a time, up to float rounding
    (tests/engine/test_label_likelihood.py)."""
    decoder, head = causal_parts(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    owner = torch.tensor([j for j, ids in enumerate(label_ids) for _ in ids[:-1]], dtype=torch.long, device=device)
    offset = torch.tensor([o for ids in label_ids for o in range(len(ids) - 1)], dtype=torch.long, device=device)
    fed = torch.tensor([t for ids in label_ids for t in ids[:-1]], dtype=torch.long, device=device)
    target = torch.tensor([t for ids in label_ids for t in ids[1:]], dtype=torch.long, device=device)
    first = torch.tensor([ids[0] for ids in label_ids], dtype=torch.long, device=device)
    among = (owner[:, None] == owner[None, :]) & (offset[None, :] <= offset[:, None])  # label token i sees token k
    shared = common_prefix(prompts)
    order_all = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    scores: list[list[float]] = [[] for _ in prompts]
    for start in range(0, len(order_all), batch_size):
        part = order_all[start : start + batch_size]
        rows = [prompts[i][shared:] for i in part]
        longest = max(len(r) for r in rows)
        prompt_ids = torch.full((len(part), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(part), shared + longest), dtype=torch.long)
        mask[:, :shared] = 1
        for r, ids in enumerate(rows):
            prompt_ids[r, longest - len(ids):] = torch.tensor(ids)
            mask[r, shared + longest - len(ids):] = 1
        prompt_ids, mask = prompt_ids.to(device), mask.to(device)
        cache = None
        if shared:
            cache = decoder(input_ids=torch.tensor([list(prompts[part[0]][:shared])], device=device),
                            use_cache=True).cache
            cache.batch_repeat_interleave(len(part))
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        out = decoder(input_ids=prompt_ids, attention_mask=mask, position_ids=positions[:, shared:], cache=cache,
                      use_cache=True)
        sums = torch.log_softmax(head(out.last_hidden_state[:, -1]).float(), dim=-1)[:, first]   # (B, n)
        if len(fed):
            seen = torch.cat([mask.bool()[:, None, :].expand(-1, len(fed), -1),
                              among[None].expand(len(part), -1, -1)], dim=2)            # (B, L, kv + L)
            dtype = out.last_hidden_state.dtype
            bias = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, torch.finfo(dtype).min)
            hidden = decoder(input_ids=fed.expand(len(part), -1), attention_mask=bias[:, None],
                             position_ids=mask.sum(1, keepdim=True) + offset[None], cache=out.cache,
                             use_cache=True).last_hidden_state                           # (B, L, H)
            logps = torch.log_softmax(head(hidden).float(), dim=-1)
            picked = logps.gather(2, target[None, :, None].expand(len(part), -1, -1)).squeeze(2)  # (B, L)
            sums = sums.index_add(1, owner, picked)
        for i, row in zip(part, sums.tolist()):
            scores[i] = row
        if on_progress:
            on_progress(len(part))
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
