"""Supervised fine-tuning: next-token cross-entropy on the answer tokens.

The LM head runs only at positions that carry a label: for short answers after long prompts that
skips most of the (vocab x hidden) head, the largest single matmul of a small model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.engine.tokenize import IGNORE, Example


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch: input_ids, attention_mask and labels, each (B, T)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def causal_parts(model: Any) -> tuple[Any, Any]:
    """(decoder that returns hidden states, LM head) of a causal LM, under any peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    return decoder, base.get_output_embeddings()


def target_count(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def labelled_logits(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, V), targets (N,)) at the positions that carry a label, N over the whole batch."""
    decoder, head = causal_parts(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    hidden = hidden[:, :-1]                      # (B, T-1, H): position t predicts token t+1
    targets = batch["labels"][:, 1:]             # (B, T-1)
    keep = targets != IGNORE                     # (B, T-1)
    return head(hidden[keep]).float(), targets[keep]  # the head runs only where there is a label


def sft_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of target tokens) for one micro-batch."""
    logits, targets = labelled_logits(model, batch)
    return F.cross_entropy(logits, targets, reduction="sum"), len(targets)
