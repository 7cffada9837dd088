"""Token classification (named entities): a token-classification head over BIO tags, on an encoder (e.g.
minilm-l6) or a decoder, trained with cross-entropy per token on span data (`{"text", "spans"}`).

Each token is tagged from the character spans it overlaps (the first token of a span B-, the rest I-;
special tokens are not scored). Evaluation reports entity-level precision, recall and F1 with seqeval's
matching (an entity counts when its type and both boundaries agree) on the model's own tokens. The head is
new, so it learns at `head_learning_rate` beside the base's rate, as a classification head does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.data.records import SpanRecord
from tuneloop.data.spans import OUTSIDE, tag
from tuneloop.engine.methods import EvalContext, Method, Prepared, register
from tuneloop.engine.methods.classify_head import HeadClassifier

IGNORE = -100
TARGET_EPOCHS, MIN_EXAMPLES_SEEN = 10, 4_000
"""A new token head sees each text's tokens as targets, but entities are rare among them: 10 passes, and at
least 4000 texts seen."""


@dataclass
class TokenExample:
    input_ids: list[int]
    tags: list[int]
    """Index into the run's tags per token; IGNORE for special tokens and tokens of whitespace alone."""

    @property
    def n_target_tokens(self) -> int:
        return sum(t != IGNORE for t in self.tags)


def tags_of(labels: list[str]) -> list[str]:
    """The BIO tags of a set of entity labels: O, then B- and I- of each label."""
    return [OUTSIDE, *(f"{p}-{label}" for label in labels for p in ("B", "I"))]


def token_offsets(tokenizer: Any, text: str, max_length: int) -> tuple[list[int], list[tuple[int, int] | None]]:
    """(input ids, the characters each token covers with surrounding spaces trimmed; None for special tokens)."""
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    offsets: list[tuple[int, int] | None] = []
    for (a, b), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]):
        if special:
            offsets.append(None)
            continue
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        offsets.append((a, b))
    return enc["input_ids"], offsets


def tokenize_spans(tokenizer: Any, records: list[Any], tag_set: list[str], max_length: int) -> list[TokenExample]:
    index = {t: i for i, t in enumerate(tag_set)}
    examples = []
    for n, record in enumerate(records):
        ids, offsets = token_offsets(tokenizer, record.text, max_length)
        tags = tag([o or (0, 0) for o in offsets], record.spans)
        missing = sorted({t for t in tags if t not in index})
        if missing:
            raise ValueError(f"example {n + 1}: label '{missing[0][2:]}' is not in the training label set "
                             f"({', '.join(t[2:] for t in tag_set[1::2])})")
        # special tokens, and tokens of whitespace alone (byte-level BPE has them), are neither in nor out of a span
        examples.append(TokenExample(ids, [IGNORE if o is None or o[1] <= o[0] else index[t]
                                           for o, t in zip(offsets, tags)]))
    return examples


def collate_tokens(examples: list[TokenExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and per-token labels (B, T); padding is IGNORE."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n], mask[row, :n], labels[row, :n] = torch.tensor(e.input_ids), 1, torch.tensor(e.tags)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def span_label_set(records: Any) -> list[str]:
    """The span labels of the training records (sorted); ValueError naming the first record without spans."""
    for name, part in (("training", records.train), ("validation", records.validation)):
        bad = next((i for i, r in enumerate(part) if not isinstance(r, SpanRecord)), None)
        if bad is not None:
            raise ValueError(f"method 'token_classify' needs span data ({{\"text\", \"spans\"}}); {name} example "
                             f"{bad + 1} is a {part[bad].kind} record")
    labels = sorted({s.label for r in records.train for s in r.spans})
    if not labels:
        raise ValueError("method 'token_classify': no training example marks a span; nothing to learn")
    return labels


@register("token_classify")
class TokenClassifier(HeadClassifier):
    """A head's defaults and parameter groups (HeadClassifier), on tokens."""

    name = "token_classify"
    task_type = "TOKEN_CLS"
    target_epochs, min_examples_seen, head_name = TARGET_EPOCHS, MIN_EXAMPLES_SEEN, "a token head"

    def __init__(self, recipe: Any, model_kind: str):
        Method.__init__(self, recipe, model_kind)
        if model_kind == "classifier":
            raise ValueError(f"'{recipe.model}' is a run with a sequence-classification head; token_classify trains "
                             "a token head: start from its base model")
        self.tag_set: list[str] = []

    def load(self, settings: Any, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        from tuneloop.models.loading import find_run_output, load_token_classifier, run_meta

        if four_bit:
            raise ValueError("adapter.type 'qlora' trains a causal LM from a base model in this build; use 'lora' "
                             "for token classification")
        tags = tags_of(span_label_set(records))
        if self.model_kind == "token-classifier":  # continuing a trained head keeps its tags
            tags = run_meta(find_run_output(self.recipe.model)).label_set or tags
        self.tag_set = tags
        model, tokenizer = load_token_classifier(self.recipe.model, settings, tags)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"'{self.recipe.model}' has no fast tokenizer: token classification needs each token's "
                             "character offsets")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        max_length = self.recipe.hyperparameters.max_length
        return Prepared(tokenize_spans(tokenizer, records.train, self.tag_set, max_length),
                        tokenize_spans(tokenizer, records.validation, self.tag_set, max_length))

    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_tokens(examples, pad_id)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logits = token_logits(model, batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE, reduction="sum")
        return loss, self.targets(batch)

    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    @torch.no_grad()
    def evaluate(self, model: Any, data: Prepared, ctx: EvalContext) -> dict[str, float]:
        from seqeval.metrics import f1_score, precision_score, recall_score

        total, targets = 0.0, 0
        gold: list[list[str]] = []
        predicted: list[list[str]] = []
        for batch in self.eval_batches(data.validation, ctx):
            with ctx.autocast():
                logits = token_logits(model, batch)
            labels = batch["labels"]
            total += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                           reduction="sum"))
            targets += int((labels != IGNORE).sum())
            best = logits.argmax(-1)
            for row in range(labels.shape[0]):
                keep = labels[row] != IGNORE
                gold.append([self.tag_set[i] for i in labels[row][keep].tolist()])
                predicted.append([self.tag_set[i] for i in best[row][keep].tolist()])
        return {"eval_loss": total / max(targets, 1),
                "eval_precision": float(precision_score(gold, predicted, zero_division=0)),
                "eval_recall": float(recall_score(gold, predicted, zero_division=0)),
                "eval_f1": float(f1_score(gold, predicted, zero_division=0))}

    def run_meta(self) -> dict[str, Any]:
        return {"classifier": "token", "label_set": self.tag_set}
