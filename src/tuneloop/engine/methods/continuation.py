"""Answers that continue shared prompts: each prompt runs once, and every answer to it continues from its KV cache
(transformers' own), one row per answer. DPO scores a pair's two answers this way, GRPO a prompt's group of
completions. (Label likelihood packs a prompt's labels into one row instead: `classify.label_logprobs_batch`.)"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.engine.methods.sft import causal_parts
from tuneloop.engine.tokenize import IGNORE


def continuation_logps(model: Any, batch: dict[str, torch.Tensor], order: torch.Tensor,
                       temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each labelled answer token, row-major; labelled tokens per answer row) for answers that
    continue shared prompts: `prompt_ids`/`prompt_mask` (P, W) left-padded run once, their KV cache (gradients
    flowing through it) is laid out as `order` says (answer row i continues prompt order[i]), and
    `answer_ids`/`answer_mask`/`answer_labels` (R, A) right-padded continue from it. DPO: chosen rows then
    rejected rows; GRPO: each prompt's completions together."""
    decoder, head = causal_parts(model)
    prompt_mask, answer_mask, labels = batch["prompt_mask"], batch["answer_mask"], batch["answer_labels"]
    positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
    out = decoder(input_ids=batch["prompt_ids"], attention_mask=prompt_mask, position_ids=positions, use_cache=True)
    cache = out.cache
    cache.reorder_cache(order)                                          # (P, ...) -> one row per answer
    # the prompt's last position predicts answer token 0; answer position j predicts answer token j + 1, so the
    # answers' last column predicts nothing and does not run
    fed = answer_mask.shape[1] - 1
    states = out.last_hidden_state[:, -1:][order]                       # (R, 1, H)
    if fed:
        lengths = prompt_mask.sum(1)[order]
        answer_positions = lengths[:, None] + torch.arange(fed, device=answer_mask.device)
        mask = torch.cat([prompt_mask[order], answer_mask[:, :fed]], dim=1)
        hidden = decoder(input_ids=batch["answer_ids"][:, :fed], attention_mask=mask, position_ids=answer_positions,
                         cache=cache, use_cache=True).last_hidden_state  # (R, A - 1, H)
        states = torch.cat([states, hidden], dim=1)                      # (R, A, H)
    keep = labels != IGNORE
    token_logps = -F.cross_entropy(head(states[keep]).float() / temperature, labels[keep], reduction="none")
    return token_logps, keep.sum(1)


def answer_sums(token_logps: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each answer row's summed log-probability, from `continuation_logps`' row-major tokens."""
    rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    return torch.zeros(len(counts), device=token_logps.device, dtype=token_logps.dtype).index_add(0, rows, token_logps)
