"""KTO: learning from answers marked desirable or undesirable one by one, with no pairs (Ethayarajh et al., 2024).
Data: `{"prompt", "completion", "label": true|false}` (the `unpaired` format).

With r = log pi(answer) - log ref(answer) (summed over the answer's tokens) and z a batch estimate of the KL from
the reference to the policy:

    desirable:    w_D * (1 - sigmoid(beta * (r - z)))
    undesirable:  w_U * (1 - sigmoid(beta * (z - r)))

z is the mean of log pi - log ref over mismatched pairs (each example's prompt with the previous example's answer
in the batch, as TRL builds them), without gradient, clamped at 0. A batch of one (the last of an epoch, say) pairs
the example with itself, as TRL does; `batch_size` is at least 2. The loss is the mean over the batch. The
weights default from the class counts so that w_D * n_D / (w_U * n_U) = 1 (the paper asks for 1 to 4/3): the
smaller class is weighted up. The reference is the model with its adapter switched off, or a frozen copy for full
and freeze fine-tuning, as for DPO."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tuneloop.data.records import UnpairedRecord
from tuneloop.engine.methods import Defaults, EvalContext, Prepared, register
from tuneloop.engine.methods.dpo import DPO
from tuneloop.engine.methods.dpo import sequence_logps
from tuneloop.engine.methods.sft import collate, epochs_reason, scaled_epochs
from tuneloop.engine.tokenize import IGNORE, Example, record_messages, tokenize_messages

ADAPTER_LEARNING_RATES = {"lora": 1e-3, "dora": 1e-3, "qlora": 1e-3, "ia3": 3e-3, "full": 5e-6, "freeze": 5e-6}
"""DPO's rates: the same kind of update (a log-ratio to the reference pushed through a sigmoid)."""
TARGET_EPOCHS, MIN_SEEN, MAX_EPOCHS = 2, 800, 5
"""Two passes, more on few answers (toward 800 seen: two answers stand for one pair) but at most five."""


@dataclass
class UnpairedExample:
    prompt: list[int]
    completion: list[int]
    completion_labels: list[int]
    desirable: bool
    index: int

    n_target_tokens = 1

    def joined(self, completion: "UnpairedExample | None" = None, max_length: int | None = None) -> Example:
        """The example's prompt with its own answer, or with another example's (a mismatched pair for z)."""
        other = completion or self
        ids = self.prompt + other.completion
        labels = [IGNORE] * len(self.prompt) + other.completion_labels
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        return Example(ids, labels)


def tokenize_unpaired(tokenizer: Any, records: list[Any], max_length: int, first_index: int = 0,
                      split: str = "training") -> tuple[list[UnpairedExample], int]:
    """Answers that keep a token after truncation, and how many were dropped; ValueError naming the first example
    that is not an unpaired answer."""
    out, dropped = [], 0
    for n, record in enumerate(records):
        if not isinstance(record, UnpairedRecord):
            raise ValueError(f"method 'kto' needs answers marked desirable or not (prompt, completion, label: "
                             f"true|false); {split} example {n + 1} is a {record.kind} record")
        prompt = [{**m, "weight": 0} if m["role"] == "assistant" else m
                  for m in record_messages(record.model_copy(update={"completion": []}))]
        answer = [{"role": m.role, "content": m.content} for m in record.completion]
        example = tokenize_messages(tokenizer, [*prompt, *answer], max_length)
        first = next((t for t, label in enumerate(example.labels) if label != IGNORE), None)
        if first is None:
            dropped += 1
            continue
        out.append(UnpairedExample(example.input_ids[:first], example.input_ids[first:], example.labels[first:],
                                   record.label, first_index + len(out)))
    return out, dropped


def class_weights(examples: list[UnpairedExample]) -> tuple[float, float]:
    """(w_D, w_U) with w_D * n_D = w_U * n_U, the larger class at 1."""
    desirable = sum(e.desirable for e in examples)
    undesirable = len(examples) - desirable
    if not desirable or not undesirable:
        return 1.0, 1.0
    if desirable >= undesirable:
        return 1.0, desirable / undesirable
    return undesirable / desirable, 1.0


def kto_losses(policy: torch.Tensor, reference: torch.Tensor, kl: torch.Tensor, desirable: torch.Tensor,
               beta: float, weights: tuple[float, float]) -> torch.Tensor:
    """Each example's loss (see the module's docstring), from summed log-probabilities."""
    ratio = policy - reference
    good = 1 - torch.sigmoid(beta * (ratio - kl))
    bad = 1 - torch.sigmoid(beta * (kl - ratio))
    return torch.where(desirable, weights[0] * good, weights[1] * bad)


@register("kto")
class KTO(DPO):
    name = "kto"

    def __init__(self, recipe: Any, model_kind: str):
        if recipe.dpo.precompute_reference:
            raise ValueError("method 'kto' computes its reference as it goes (the KL estimate pairs answers anew in "
                             "each batch); leave dpo.precompute_reference off")
        super().__init__(recipe, model_kind)
        self.weights = (1.0, 1.0)

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        if self.recipe.hyperparameters.batch_size < 2:
            raise ValueError("method 'kto' needs batch_size 2 or more: the KL estimate pairs each prompt with another "
                             "example's answer in the same batch")
        max_length = self.recipe.hyperparameters.max_length
        train, dropped = tokenize_unpaired(tokenizer, records.train, max_length)
        validation, _ = tokenize_unpaired(tokenizer, records.validation, max_length, len(train), "validation")
        if not train:
            raise ValueError("no training answer keeps a token after truncation to max_length")
        section = self.recipe.kto
        counted = class_weights(train)
        self.weights = (section.desirable_weight if section.desirable_weight is not None else counted[0],
                        section.undesirable_weight if section.undesirable_weight is not None else counted[1])
        return Prepared(train, validation, dropped)

    def defaults(self, examples: int) -> Defaults:
        adapter = self.recipe.adapter.type
        epochs = scaled_epochs(examples, TARGET_EPOCHS, MIN_SEEN, cap=MAX_EPOCHS)
        return Defaults({"learning_rate": ADAPTER_LEARNING_RATES[adapter], "epochs": epochs, "warmup_ratio": 0.1},
                        {"learning_rate": f"KTO with {adapter} (DPO's rate)",
                         "epochs": epochs_reason(examples, epochs, TARGET_EPOCHS, MIN_SEEN),
                         "warmup_ratio": "10% of the steps"})

    def start(self, model: Any, data: Prepared, run_dir: Any, ctx: EvalContext) -> None:
        if self.reference is not None:
            self.reference.to(ctx.device)

    def length(self, example: Any) -> int:
        return len(example.prompt) + len(example.completion)

    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        """The examples, and the mismatched pairs for z (each prompt with the previous example's answer), each
        right-padded; `desirable` per example."""
        max_length = self.recipe.hyperparameters.max_length
        main = collate([e.joined() for e in examples], pad_id)
        mismatched = collate([e.joined(examples[i - 1], max_length) for i, e in enumerate(examples)], pad_id)
        return {**main, **{f"kl_{k}": v for k, v in mismatched.items()},
                "desirable": torch.tensor([e.desirable for e in examples], dtype=torch.bool),
                "pair_index": torch.tensor([e.index for e in examples], dtype=torch.long)}

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum() + batch["kl_attention_mask"].sum())

    @torch.no_grad()
    def _reference(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.reference is not None:
            return sequence_logps(self.reference, batch)[0]
        with model.disable_adapter():
            return sequence_logps(model, batch)[0]

    def terms(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        main = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
        mismatched = {k: batch[f"kl_{k}"] for k in ("input_ids", "attention_mask", "labels")}
        policy = sequence_logps(model, main)[0]
        with torch.no_grad():
            kl = (sequence_logps(model, mismatched)[0] - self._reference(model, mismatched)).mean().clamp(min=0)
        reference = self._reference(model, main)
        beta = self.recipe.kto.beta
        losses = kto_losses(policy, reference, kl, batch["desirable"], beta, self.weights)
        return {"losses": losses, "rewards": beta * (policy - reference).detach(), "kl": kl}

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        terms = self.terms(model, batch)
        self._collect(self.window, terms, batch["desirable"])
        return terms["losses"].sum(), len(terms["losses"])

    @staticmethod
    def _collect(into: dict[str, list[float]], terms: dict[str, torch.Tensor], desirable: torch.Tensor) -> None:
        rewards = terms["rewards"].float()
        into.setdefault("rewards/chosen", []).extend(rewards[desirable].tolist())
        into.setdefault("rewards/rejected", []).extend(rewards[~desirable].tolist())
        into.setdefault("kl", []).append(float(terms["kl"]))

    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["desirable"])

    def step_metrics(self, step: int = 0) -> dict[str, float]:
        return _summary(self._take())

    def _take(self) -> dict[str, list[float]]:
        window, self.window = self.window, {}
        return window

    @torch.no_grad()
    def evaluate(self, model: Any, data: Prepared, ctx: EvalContext) -> dict[str, float]:
        total, values = 0.0, {}
        for batch in self.eval_batches(data.validation, ctx):
            with ctx.autocast():
                terms = self.terms(model, batch)
            total += float(terms["losses"].sum())
            self._collect(values, terms, batch["desirable"])
        return {"eval_loss": total / max(len(data.validation), 1),
                **{f"eval_{k.replace('/', '_')}": v for k, v in _summary(values).items()}}

    def run_meta(self) -> dict[str, Any]:
        return {"classifier": None, "label_set": None,
                "preference": {"method": "kto", "beta": self.recipe.kto.beta, "desirable_weight": self.weights[0],
                               "undesirable_weight": self.weights[1]}}


def _summary(values: dict[str, list[float]]) -> dict[str, float]:
    """Means of what was collected; `rewards/margins` is the desirable answers' mean reward less the undesirable's."""
    out = {name: round(sum(v) / len(v), 6) for name, v in values.items() if v}
    if "rewards/chosen" in out and "rewards/rejected" in out:
        out["rewards/margins"] = round(out["rewards/chosen"] - out["rewards/rejected"], 6)
    return out
