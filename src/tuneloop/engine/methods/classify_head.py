"""Classification with a head: a sequence-classification layer over the label set, on an encoder
(e.g. minilm-l6) or on a decoder's last token, trained with cross-entropy. The head is new, so it
learns at its own, larger rate (`head_learning_rate`) beside the adapter's."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.engine.methods import Defaults, EvalContext, Method, Prepared
from tuneloop.engine.methods.classify import collate_labelled, head_logits, head_loss, label_set_of, tokenize_labelled
from tuneloop.engine.methods.sft import epochs_reason, scaled_epochs

HEAD_MODULES = ("classifier", "score")
"""Where transformers keeps a sequence-classification head (peft keeps a trainable copy inside it)."""
ADAPTER_LEARNING_RATES = {"lora": 5e-4, "dora": 5e-4, "ia3": 3e-3, "full": 5e-5, "freeze": 1e-3}
"""The base's learning rate under a head, by adapter type (freeze trains the last layers themselves)."""
HEAD_LEARNING_RATE = 2e-3
TARGET_EPOCHS, MIN_EXAMPLES_SEEN = 8, 2_000
"""A fresh head needs many more passes than an answer does: 8, and at least 2000 examples seen."""


def is_head(name: str) -> bool:
    return any(part in HEAD_MODULES for part in name.split("."))


class HeadClassifier(Method):
    name = "classify"
    task_type = "SEQ_CLS"
    target_epochs, min_examples_seen, head_name = TARGET_EPOCHS, MIN_EXAMPLES_SEEN, "a head"
    """Epochs and learning rates for a new head (a token head sets its own)."""

    def __init__(self, recipe: Any, model_kind: str):
        super().__init__(recipe, model_kind)
        self.label_set: list[str] = []

    def load(self, settings: Any, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        from tuneloop.models.loading import find_run_output, load_sequence_classifier, run_meta

        if four_bit:
            raise ValueError("adapter.type 'qlora' trains a causal LM from a base model in this build; use 'lora' "
                             "for classification heads")
        labels = label_set_of(records)
        if self.model_kind == "classifier":  # continuing a trained head keeps its labels
            labels = run_meta(find_run_output(self.recipe.model)).label_set
        self.label_set = labels
        model, tokenizer = load_sequence_classifier(self.recipe.model, settings, labels)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        max_length = self.recipe.hyperparameters.max_length
        return Prepared(tokenize_labelled(tokenizer, records.train, self.label_set, max_length),
                        tokenize_labelled(tokenizer, records.validation, self.label_set, max_length))

    def defaults(self, examples: int) -> Defaults:
        adapter = self.recipe.adapter.type
        epochs = scaled_epochs(examples, self.target_epochs, self.min_examples_seen)
        return Defaults({"learning_rate": ADAPTER_LEARNING_RATES[adapter], "head_learning_rate": HEAD_LEARNING_RATE,
                         "epochs": epochs, "warmup_ratio": 0.1},
                        {"learning_rate": f"for {adapter} under a head", "head_learning_rate": self.head_name,
                         "epochs": epochs_reason(examples, epochs, self.target_epochs, self.min_examples_seen),
                         "warmup_ratio": "10% of the steps"})

    def parameter_groups(self, model: Any, hyperparameters: Any) -> list[dict[str, Any]]:
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        head = [p for n, p in trainable if is_head(n)]
        rest = [p for n, p in trainable if not is_head(n)]
        groups = [{"params": rest, "lr": hyperparameters.learning_rate},
                  {"params": head, "lr": hyperparameters.head_learning_rate}]
        return [g for g in groups if g["params"]]

    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_labelled(examples, pad_id)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return head_loss(model, batch)

    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["labels"])

    @torch.no_grad()
    def evaluate(self, model: Any, data: Prepared, ctx: EvalContext) -> dict[str, float]:
        total, correct = 0.0, 0
        for batch in self.eval_batches(data.validation, ctx):
            with ctx.autocast():
                logits = head_logits(model, batch)
            total += float(F.cross_entropy(logits, batch["labels"], reduction="sum"))
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
        n = max(len(data.validation), 1)
        return {"eval_loss": total / n, "eval_accuracy": correct / n}

    def run_meta(self) -> dict[str, Any]:
        return {"classifier": "head", "label_set": self.label_set}
