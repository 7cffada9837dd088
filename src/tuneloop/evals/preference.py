"""Preference pairs as a test set: how often a model scores the chosen answer above the rejected one.

- A reward model (method reward): its score of each side (`RewardScorer`).
- A policy trained on pairs (dpo, orpo): DPO's implicit reward, beta * (log pi(answer) - log ref(answer)), with the
  model's adapter switched off as the reference (the base it was trained from). With no adapter to switch off (full
  fine-tuning), or for ORPO, the policy's own per-token log-probability is compared (ORPO's reward)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass
class PairReport:
    pairs: int
    accuracy: float
    """Share of pairs whose chosen answer scores above the rejected one."""
    margin: float
    """Mean of score(chosen) - score(rejected)."""
    scored_by: str
    """'reward model', 'implicit reward' (DPO, against the adapter switched off) or 'log-probability'."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _report(chosen: list[float], rejected: list[float], scored_by: str) -> PairReport:
    n = len(chosen)
    wins = sum(c > r for c, r in zip(chosen, rejected))
    return PairReport(n, wins / max(n, 1), sum(c - r for c, r in zip(chosen, rejected)) / max(n, 1), scored_by)


def reward_model_pairs(scorer: Any, records: list[Any], on_progress: Callable[[int], None] | None = None,
                       batch: int = 16) -> PairReport:
    from tuneloop.engine.methods.dpo import pair_messages

    chosen, rejected = [], []
    for start in range(0, len(records), batch):
        part = records[start : start + batch]
        sides = [pair_messages(r) for r in part]
        scores = scorer.score([c for c, _ in sides] + [r for _, r in sides])
        chosen += scores[: len(part)]
        rejected += scores[len(part):]
        if on_progress:
            on_progress(len(part))
    return _report(chosen, rejected, "reward model")


@torch.no_grad()
def implicit_reward_pairs(model: Any, tokenizer: Any, records: list[Any], beta: float = 0.1, max_length: int = 1024,
                          batch: int = 8, average: bool = False,
                          on_progress: Callable[[int], None] | None = None) -> PairReport:
    """DPO's implicit reward on each side, the adapter switched off as the reference; `average` (ORPO, or a model
    with no adapter): beta times the answer's mean per-token log-probability instead."""
    chosen, rejected, scored_by = implicit_rewards(model, tokenizer, records, beta, max_length, batch, average,
                                                   on_progress)
    return _report(chosen, rejected, scored_by)


@torch.no_grad()
def implicit_rewards(model: Any, tokenizer: Any, records: list[Any], beta: float = 0.1, max_length: int = 1024,
                     batch: int = 8, average: bool = False, on_progress: Callable[[int], None] | None = None
                     ) -> tuple[list[float], list[float], str]:
    """(reward of each pair's chosen side, of its rejected side, how they were scored): see
    `implicit_reward_pairs`. A pair whose answers keep no token after truncation is scored 0 on both sides."""
    from tuneloop.data.records import PreferenceRecord
    from tuneloop.engine.methods.dpo import PairExample, collate_pairs, pair_logps, tokenize_pairs

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples: list[PairExample | None] = []
    for record in records:
        assert isinstance(record, PreferenceRecord)
        kept, _ = tokenize_pairs(tokenizer, [record], max_length, method="evaluation")
        examples.append(kept[0] if kept else None)
    use_reference = not average and hasattr(model, "disable_adapter")
    device = next(model.parameters()).device
    model.eval()
    chosen, rejected = [0.0] * len(records), [0.0] * len(records)
    present = [i for i, e in enumerate(examples) if e is not None]
    for start in range(0, len(present), batch):
        places = present[start : start + batch]
        part = [examples[i] for i in places]
        inputs = {k: v.to(device) for k, v in collate_pairs(part, tokenizer.pad_token_id).items()}  # type: ignore[arg-type]
        logps, counts = pair_logps(model, inputs)
        if use_reference:
            with model.disable_adapter():
                logps = logps - pair_logps(model, inputs)[0]
        else:
            logps = logps / counts.clamp(min=1)
        scores = (beta * logps).tolist()
        for j, i in enumerate(places):
            chosen[i], rejected[i] = scores[j], scores[len(part) + j]
        if on_progress:
            on_progress(len(part))
    return chosen, rejected, "implicit reward" if use_reference else "log-probability"
