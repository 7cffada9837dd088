"""Classification as generation: a chat model learns to answer a classification prompt with the label
(trained as SFT on that answer) and is scored by each label's likelihood as the answer, never by parsing
free text."""

from __future__ import annotations

from typing import Any

import torch

from tuneloop.engine.methods import Defaults, EvalContext, Prepared
from tuneloop.engine.methods.classify import (classification_prompt_ids, label_logprobs_batch, label_set_of,
                                              label_token_ids)
from tuneloop.engine.methods.sft import SFT, generative_defaults, tokenize_split

LABEL_LEARNING_RATES = {"lora": 5e-4, "dora": 5e-4, "qlora": 5e-4, "ia3": 3e-3, "full": 5e-5, "freeze": 5e-5}


class GenerativeClassifier(SFT):
    name = "classify"

    def __init__(self, recipe: Any, model_kind: str):
        super().__init__(recipe, model_kind)
        self.label_set: list[str] = []
        self.validation_records: list[Any] = []

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        self.label_set = label_set_of(records)
        self.validation_records = records.validation
        return tokenize_split(self.recipe, tokenizer, records, self.label_set)

    def defaults(self, examples: int) -> Defaults:
        """SFT's, with a larger learning rate: an answer of a label and an end of turn gives each example
        two or three target tokens, and at SFT's rate 3 epochs fall short (benchmarks/defaults.py)."""
        chosen = generative_defaults(self.recipe.adapter.type, examples)
        chosen.values["learning_rate"] = LABEL_LEARNING_RATES[self.recipe.adapter.type]
        chosen.reasons["learning_rate"] = f"for {self.recipe.adapter.type}, with answers of a label"
        return chosen

    @torch.no_grad()
    def evaluate(self, model: Any, data: Prepared, ctx: EvalContext) -> dict[str, float]:
        """eval_loss on the label answers, and eval_accuracy: the share of validation texts whose most
        likely label is the gold one."""
        metrics = super().evaluate(model, data, ctx)
        prompts = [classification_prompt_ids(ctx.tokenizer, r.text, self.label_set) for r in self.validation_records]
        with ctx.autocast():
            scores = label_logprobs_batch(model, ctx.tokenizer, prompts, label_token_ids(ctx.tokenizer, self.label_set))
        correct = sum(self.label_set[max(range(len(row)), key=row.__getitem__)] == record.labels[0]
                      for row, record in zip(scores, self.validation_records))
        metrics["eval_accuracy"] = correct / max(len(self.validation_records), 1)
        return metrics

    def run_meta(self) -> dict[str, Any]:
        return {"classifier": "generative", "label_set": self.label_set}
