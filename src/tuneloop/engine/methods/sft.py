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


MIN_SHARED_PREFIX = 8
"""Shorter common prefixes are not worth an extra row in the batch."""
MIN_SHARED_FRACTION = 0.25
"""Nor are prefixes under this share of the batch's width: the extra row and the attention mask cost more
than the few tokens saved, above all on a GPU, where long rows after a short system prompt are usual."""


def shared_prefix_length(batch: dict[str, torch.Tensor]) -> int:
    """How many leading tokens every row of the batch has in common with no target among them (0: none
    worth sharing). Typical SFT data repeats one system prompt: those tokens then run once, not B times."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if ids.shape[0] < 2:
        return 0
    same = ((ids == ids[:1]).all(0) & (mask == 1).all(0)).tolist()
    prefix = same.index(False) if False in same else len(same)
    labelled = (labels != IGNORE).any(0).tolist()
    first_label = labelled.index(True) if True in labelled else len(labelled)
    # position t predicts token t+1: the prefix may not hold the position before a target
    prefix = min(prefix, first_label - 1, ids.shape[1] - 1)
    return prefix if prefix >= max(MIN_SHARED_PREFIX, MIN_SHARED_FRACTION * ids.shape[1]) else 0


def right_padded(mask: torch.Tensor) -> bool:
    """Every row is its tokens, then only padding (what `collate` builds)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


PREFIX_ATTENTION = "tuneloop_shared_prefix"


def _prefix_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention for a batch whose row 0 is the shared prefix and rows 1.. the rows' suffixes (see
    `hidden_states`). Row 0 is plain causal; every suffix attends to the prefix's keys and values (one
    copy, expanded, so its gradient sums over the rows) and causally to its own."""
    prefix = kwargs["shared_prefix"]
    gqa = query.shape[1] != key.shape[1]
    p = dropout if module.training else 0.0
    head = F.scaled_dot_product_attention(query[:1], key[:1], value[:1], dropout_p=p, is_causal=True, scale=scaling,
                                          enable_gqa=gqa)
    rows, width = query.shape[0] - 1, query.shape[2]
    keys = torch.cat([key[:1, :, :prefix].expand(rows, -1, -1, -1), key[1:]], dim=2)
    values = torch.cat([value[:1, :, :prefix].expand(rows, -1, -1, -1), value[1:]], dim=2)
    visible = torch.ones(width, prefix + width, dtype=torch.bool, device=query.device).tril(diagonal=prefix)
    tails = F.scaled_dot_product_attention(query[1:], keys, values, attn_mask=visible, dropout_p=p, scale=scaling,
                                           enable_gqa=gqa)
    return torch.cat([head, tails]).transpose(1, 2).contiguous(), None


def _register_prefix_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if PREFIX_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(PREFIX_ATTENTION, _prefix_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(PREFIX_ATTENTION, lambda *args, **kwargs: None)  # built in the call


def hidden_states(decoder: Any, batch: dict[str, torch.Tensor], prefix: int, right: bool = False) -> torch.Tensor:
    """Last hidden states (B, T - prefix, H) of positions prefix..T-1.

    With a shared prefix, one forward call runs a batch of B + 1 rows: the prefix once, then each row's
    suffix at positions prefix.., attending to the prefix's keys and values. The big matmuls stay batched
    and the prefix's cost is paid once instead of B times; gradients reach it from every row.
    right: the rows are right-padded (`right_padded`), so no padding mask is needed."""
    ids = batch["input_ids"]
    if prefix == 0:
        # Right padding: the causal mask alone keeps every real token from seeing a pad (pads come after it),
        # so the padding mask can go. Attention then runs as plain causal attention: flash kernels, no
        # (B, T, T) mask built. Pad positions compute garbage that no label reads.
        mask = None if right else batch["attention_mask"]
        return decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    _register_prefix_attention()
    rows, length = ids.shape
    width = max(prefix, length - prefix)
    packed = ids.new_zeros((rows + 1, width))  # padding: any token id, no label reads it
    packed[0, :prefix] = ids[0, :prefix]
    packed[1:, : length - prefix] = ids[:, prefix:]
    positions = torch.arange(width, device=ids.device).expand(rows + 1, width).clone()
    positions[1:] += prefix
    config = decoder.config
    before = config._attn_implementation
    config._attn_implementation = PREFIX_ATTENTION
    try:
        hidden = decoder(input_ids=packed, position_ids=positions, use_cache=False, shared_prefix=prefix).last_hidden_state
    finally:
        config._attn_implementation = before
    return hidden[1:, : length - prefix]


def labelled_logits(model: Any, batch: dict[str, torch.Tensor],
                    share_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, V), targets (N,)) at the positions that carry a label, N over the whole batch."""
    decoder, head = causal_parts(model)
    right = right_padded(batch["attention_mask"])  # the prefix path and the mask-free path both need it
    prefix = shared_prefix_length(batch) if share_prefix and right else 0
    hidden = hidden_states(decoder, batch, prefix, right)[:, :-1]  # (B, T-1-prefix, H): position t predicts t+1
    targets = batch["labels"][:, prefix + 1 :]               # (B, T-1-prefix)
    keep = targets != IGNORE
    return head(hidden[keep]).float(), targets[keep]         # the head runs only where there is a label


def sft_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of target tokens) for one micro-batch."""
    logits, targets = labelled_logits(model, batch)
    return F.cross_entropy(logits, targets, reduction="sum"), len(targets)
