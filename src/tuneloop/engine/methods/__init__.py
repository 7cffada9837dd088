"""Training methods: each supplies its batch building and its loss; engine/loop.py does the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tuneloop.engine.methods.classify import collate_labelled, head_loss
from tuneloop.engine.methods.sft import collate, sft_loss, target_count


@dataclass(frozen=True)
class Method:
    name: str
    collate: Callable[[list[Any], int], dict[str, torch.Tensor]]
    """Examples and the pad id -> a batch of tensors."""
    loss: Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, int]]
    """(model, batch) -> (sum of losses, how many targets they cover)."""
    targets: Callable[[dict[str, torch.Tensor]], int]
    """How many targets a batch has (the loss is their mean over an optimizer step)."""
    task_type: str
    """The peft task type of the model this method trains."""


CAUSAL_LM = Method("causal_lm", collate, sft_loss, target_count, "CAUSAL_LM")
"""sft, and generative classification (the label as the answer)."""
SEQUENCE_CLASSIFICATION = Method("sequence_classification", collate_labelled, head_loss,
                                 lambda batch: len(batch["labels"]), "SEQ_CLS")
"""A classification head over the label set."""
