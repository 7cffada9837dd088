"""Training methods, chosen from a registry by a recipe's `method`.

A method is one module here that registers itself with `@register("name")`. It owns everything that
differs between methods: what records it accepts and how they become examples, which models it loads,
batches, the loss, evaluation metrics, hyperparameter defaults, and what it adds to `run.json`.
`engine/loop.py` owns the rest (optimizer, schedule, accumulation, precision, checkpoints, resume,
events, early stopping) and never asks which method it runs.

A new method is one new module in this package (found on first lookup), or a `register` call
anywhere before `train()` (a test registers a toy method that way).
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from tuneloop.config.recipe import Recipe, RecipeError
from tuneloop.config.settings import Settings


@dataclass
class Prepared:
    """A method's examples for one run."""

    train: list[Any]
    validation: list[Any]
    dropped: int = 0
    """Records with nothing to learn from after truncation (skipped)."""


@dataclass
class EvalContext:
    """What a method's `evaluate` needs from the loop."""

    device: str
    batch_size: int
    autocast: Callable[[], AbstractContextManager[Any]]
    """Mixed precision and attention kernels as in training: `with ctx.autocast(): ...`."""
    tokenizer: Any


@dataclass
class Defaults:
    """Hyperparameters a method picks when the recipe leaves them empty, with why (printed by `tuneloop train`)."""

    values: dict[str, Any]
    reasons: dict[str, str] = field(default_factory=dict)


class Method(ABC):
    """The method protocol. The loop calls, in order: `load` (policy, and whatever else the method needs:
    a reference or a teacher model), `prepare` (records to examples), `defaults` and `parameter_groups`,
    then per micro-batch `collate`, `rollout`, `targets`, `tokens` and `loss`, and `evaluate` and `run_meta` as it
    evaluates and saves. A subclass sets `name` and `task_type` and implements the ones marked so."""

    name: ClassVar[str] = ""
    task_type: ClassVar[str] = "CAUSAL_LM"
    """The peft task type of the model this method trains."""

    def __init__(self, recipe: Recipe, model_kind: str):
        self.recipe, self.model_kind = recipe, model_kind

    # ---------------------------------------------------------------- set-up
    @abstractmethod
    def load(self, settings: Settings, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        """(model, tokenizer) to train, before any adapter. `records`: the run's `RecipeRecords`."""

    @abstractmethod
    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        """The run's records (`RecipeRecords`) as examples; raise ValueError naming a bad record."""

    @abstractmethod
    def defaults(self, examples: int) -> Defaults:
        """Values for the hyperparameters the recipe left empty (epochs, learning_rate, head_learning_rate,
        warmup_ratio), given how many training examples there are."""

    def start(self, model: Any, data: Prepared, run_dir: Any, ctx: EvalContext) -> None:
        """Called once the model to train is on its device, before the first step and before a resume loads a
        checkpoint (the model is still the one the run started from): e.g. a reference model's log-probabilities
        computed once, at the training precision (`ctx.autocast`). By default nothing."""

    def step_metrics(self, step: int = 0) -> dict[str, float]:
        """What the method measured over the micro-batches since the last call (written with the event of optimizer
        step `step`, beside the loss); by default nothing."""
        return {}

    def rollout(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An online method makes its training batch here from the current model (generation and rewards), before
        `targets`, `tokens` and `loss` see it; by default the batch as collated."""
        return batch

    def parameter_groups(self, model: Any, hyperparameters: Any) -> list[dict[str, Any]]:
        """Optimizer parameter groups; by default every trainable parameter at the learning rate."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": hyperparameters.learning_rate}]

    # ---------------------------------------------------------------- training
    @abstractmethod
    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        """Examples -> a batch of tensors (on the CPU; the loop moves them)."""

    @abstractmethod
    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(sum of the losses, how many targets they cover)."""

    @abstractmethod
    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        """How many targets a batch holds; an optimizer step's loss is the mean over its targets."""

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens a batch processes (for tokens/s)."""
        return int(batch["attention_mask"].sum())

    def length(self, example: Any) -> int:
        """An example's size, for batching similar lengths together."""
        return len(example.input_ids)

    # ---------------------------------------------------------------- evaluation and output
    @torch.no_grad()
    def evaluate(self, model: Any, data: Prepared, ctx: EvalContext) -> dict[str, float]:
        """Metrics on the validation examples; by default eval_loss, the mean of `loss` over the targets."""
        total, targets = 0.0, 0
        for batch in self.eval_batches(data.validation, ctx):
            with ctx.autocast():
                loss_sum, n = self.loss(model, batch)
            total += float(loss_sum)
            targets += n
        return {"eval_loss": total / max(targets, 1)}

    def eval_batches(self, examples: list[Any], ctx: EvalContext) -> Iterator[dict[str, torch.Tensor]]:
        """Validation batches in length order (little padding), on the loop's device."""
        order = sorted(range(len(examples)), key=lambda i: self.length(examples[i]))
        for start in range(0, len(order), ctx.batch_size):
            batch = self.collate([examples[i] for i in order[start : start + ctx.batch_size]],
                                 ctx.tokenizer.pad_token_id)
            yield {k: v.to(ctx.device) for k, v in batch.items()}

    def run_meta(self) -> dict[str, Any]:
        """What this method adds to the model's `run.json` (beside base_model, method, adapter, steps)."""
        return {}


Factory = Callable[[Recipe, str], Method]
"""(recipe, model kind) -> the method instance for this run; raises ValueError for a model it cannot train."""

_REGISTRY: dict[str, Factory] = {}
_discovered = False


def register(name: str) -> Callable[[Factory], Factory]:
    """Register a method class (or a factory that picks one) under `name`."""

    def add(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return add


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True


def registered() -> list[str]:
    """The names a recipe's `method` may take."""
    _discover()
    return sorted(_REGISTRY)


def check_method(recipe: Recipe) -> None:
    """RecipeError naming the registered methods when `recipe.method` is not one of them."""
    names = registered()
    if recipe.method not in _REGISTRY:
        raise RecipeError(f"invalid recipe:\n  method: '{recipe.method}' is not a registered method; registered "
                          f"methods: {', '.join(names)}")


def method_for(recipe: Recipe, model_kind: str) -> Method:
    """The method that trains `recipe` on a model of this kind ('chat', 'causal', 'encoder', 'classifier')."""
    check_method(recipe)
    return _REGISTRY[recipe.method](recipe, model_kind)
