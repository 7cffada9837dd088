"""Reward models: a one-output sequence-classification head (on an encoder such as minilm-l6, or on a decoder's last
token) that scores a conversation, trained on preference pairs with the Bradley-Terry loss

    -log sigmoid(r(chosen) - r(rejected) - margin)

where `margin` is the pair's own `margin` field when the data has one (`reward.use_margin`), and, with
`reward.center_coefficient` c, plus c * (r(chosen) + r(rejected))^2, which keeps the rewards centred on 0 (TRL's
RewardTrainer computes the same, as a mean over the pairs). It reports pairwise accuracy (chosen scored above
rejected) and the mean margin, per step and on the validation pairs. A trained reward model scores texts through
the native API, ranks candidates, and can be the reward of an RL run.

A conversation is scored as the model reads it: the chat template's rendering when the tokenizer has one, else its
messages' texts, one per line. Truncation keeps the end (the answer being scored)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.data.records import PreferenceRecord
from tuneloop.engine.methods import Defaults, EvalContext, Prepared, register
from tuneloop.engine.methods.classify_head import HeadClassifier
from tuneloop.engine.methods.dpo import pair_messages
from tuneloop.engine.methods.sft import epochs_reason, scaled_epochs

REWARD_LABELS = ["reward"]
TARGET_EPOCHS, MIN_PAIRS_SEEN = 2, 1_000
"""Two passes, more on few pairs so that at least 1000 are seen (a fresh head, as for classification)."""


@dataclass
class RewardPair:
    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0

    n_target_tokens = 1


def conversation_text(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The conversation as the reward model reads it."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, tokenize=False)
    return "\n".join(m["content"] for m in plain)


def encode_conversation(tokenizer: Any, messages: list[dict[str, Any]], max_length: int) -> list[int]:
    """Token ids of the conversation, keeping its last `max_length` (the answer)."""
    ids = tokenizer(conversation_text(tokenizer, messages), add_special_tokens=not getattr(tokenizer, "chat_template",
                                                                                            None))["input_ids"]
    return ids[-max_length:]


def margin_of(record: PreferenceRecord, where: str) -> float:
    value = record.extra.get("margin", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        raise ValueError(f"{where}: field 'margin' must be a finite number, got {value!r}")
    return float(value)


def tokenize_reward_pairs(tokenizer: Any, records: list[Any], max_length: int, use_margin: bool,
                          split: str = "training") -> list[RewardPair]:
    out = []
    for n, record in enumerate(records):
        if not isinstance(record, PreferenceRecord):
            raise ValueError(f"method 'reward' needs preference pairs (prompt, chosen, rejected); {split} example "
                             f"{n + 1} is a {record.kind} record")
        chosen, rejected = pair_messages(record)
        out.append(RewardPair(encode_conversation(tokenizer, chosen, max_length),
                              encode_conversation(tokenizer, rejected, max_length),
                              margin_of(record, f"{split} example {n + 1}") if use_margin else 0.0))
    return out


def collate_reward_pairs(examples: list[RewardPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded (2B, T), and each pair's margin (B,)."""
    rows = [e.chosen for e in examples] + [e.rejected for e in examples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "margin": torch.tensor([e.margin for e in examples], dtype=torch.float32)}


def rewards(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One score per row (an encoder's head reads its pooled first token; a decoder's, the last token that is not
    padding)."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor,
                  center_coefficient: float) -> torch.Tensor:
    """Each pair's loss (see the module's docstring)."""
    losses = -F.logsigmoid(chosen - rejected - margin)
    if center_coefficient:
        losses = losses + center_coefficient * (chosen + rejected) ** 2
    return losses


@register("reward")
class RewardModel(HeadClassifier):
    name = "reward"
    target_epochs, min_examples_seen, head_name = TARGET_EPOCHS, MIN_PAIRS_SEEN, "a reward head"

    def __init__(self, recipe: Any, model_kind: str):
        super().__init__(recipe, model_kind)
        self.window: dict[str, list[float]] = {}

    def load(self, settings: Any, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        from tuneloop.models.loading import find_run_output, load_sequence_classifier, run_meta

        if four_bit:
            raise ValueError("adapter.type 'qlora' trains a causal LM from a base model in this build; use 'lora' "
                             "for a reward head")
        if self.model_kind == "classifier":
            raise ValueError(f"'{self.recipe.model}' is a classifier; a reward model starts from a base model or "
                             "from a reward model")
        if self.model_kind == "reward" and run_meta(find_run_output(self.recipe.model)).label_set != REWARD_LABELS:
            raise ValueError(f"'{self.recipe.model}' is not a reward model")
        self.label_set = REWARD_LABELS
        model, tokenizer = load_sequence_classifier(self.recipe.model, settings, REWARD_LABELS)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        max_length, use_margin = self.recipe.hyperparameters.max_length, self.recipe.reward.use_margin
        train = tokenize_reward_pairs(tokenizer, records.train, max_length, use_margin)
        if not train:
            raise ValueError("no training pairs")
        return Prepared(train, tokenize_reward_pairs(tokenizer, records.validation, max_length, use_margin,
                                                     "validation"))

    def defaults(self, examples: int) -> Defaults:
        out = super().defaults(examples)
        epochs = scaled_epochs(examples, TARGET_EPOCHS, MIN_PAIRS_SEEN)
        out.values["epochs"] = epochs
        out.reasons["epochs"] = epochs_reason(examples, epochs, TARGET_EPOCHS, MIN_PAIRS_SEEN)
        return out

    def length(self, example: Any) -> int:
        return len(example.chosen) + len(example.rejected)

    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_reward_pairs(examples, pad_id)

    def pair_rewards(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        scores = rewards(model, batch["input_ids"], batch["attention_mask"])
        half = len(batch["margin"])
        return scores[:half], scores[half:]

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        chosen, rejected = self.pair_rewards(model, batch)
        losses = bradley_terry(chosen, rejected, batch["margin"], self.recipe.reward.center_coefficient)
        for name, values in pair_metrics(chosen.detach(), rejected.detach()).items():
            self.window.setdefault(name, []).extend(values)
        return losses.sum(), len(losses)

    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["margin"])

    def step_metrics(self, step: int = 0) -> dict[str, float]:
        out = {name: round(sum(v) / len(v), 6) for name, v in self.window.items() if v}
        self.window = {}
        return out

    @torch.no_grad()
    def evaluate(self, model: Any, data: Prepared, ctx: EvalContext) -> dict[str, float]:
        total, values = 0.0, {}
        for batch in self.eval_batches(data.validation, ctx):
            with ctx.autocast():
                chosen, rejected = self.pair_rewards(model, batch)
            total += float(bradley_terry(chosen, rejected, batch["margin"], self.recipe.reward.center_coefficient).sum())
            for name, v in pair_metrics(chosen, rejected).items():
                values.setdefault(name, []).extend(v)
        n = max(len(data.validation), 1)
        return {"eval_loss": total / n, **{f"eval_{name}": sum(v) / len(v) for name, v in values.items() if v}}

    def run_meta(self) -> dict[str, Any]:
        return {"classifier": "reward", "label_set": REWARD_LABELS,
                "reward": {"use_margin": self.recipe.reward.use_margin,
                           "center_coefficient": self.recipe.reward.center_coefficient}}


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, list[float]]:
    """Per pair: whether chosen scores above rejected (`accuracy`), and by how much (`margin`)."""
    return {"accuracy": (chosen > rejected).float().tolist(), "margin": (chosen - rejected).tolist()}
