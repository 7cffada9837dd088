"""Scoring with a trained reward model (method reward): conversations read as in training, a score each, and a
prompt's candidate answers ranked."""

from __future__ import annotations

from typing import Any

import torch

from tuneloop.engine.methods.reward import collate_reward_pairs, encode_conversation, RewardPair


class RewardScorer:
    def __init__(self, model: Any, tokenizer: Any, max_length: int = 1024, batch_size: int = 16):
        self.model, self.tokenizer, self.max_length, self.batch_size = model.eval(), tokenizer, max_length, batch_size

    @classmethod
    def load(cls, ref: str, settings: Any) -> "RewardScorer":
        """ValueError when `ref` is not a reward model."""
        from tuneloop.models.loading import load_sequence_classifier, model_kind

        if model_kind(ref, settings) != "reward":
            raise ValueError(f"'{ref}' is not a reward model (train one with method: reward)")
        model, tokenizer = load_sequence_classifier(ref, settings)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(model, tokenizer)

    @torch.no_grad()
    def score(self, conversations: list[list[dict[str, Any]]]) -> list[float]:
        """One reward per conversation (the last message is the answer being scored)."""
        ids = [encode_conversation(self.tokenizer, c, self.max_length) for c in conversations]
        out: list[float] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(ids), self.batch_size):
            part = ids[start : start + self.batch_size]
            batch = collate_reward_pairs([RewardPair(row, []) for row in part], self.tokenizer.pad_token_id)
            rows = len(part)  # collate puts chosen rows first; the empty rejected rows are dropped
            logits = self.model(input_ids=batch["input_ids"][:rows].to(device),
                                attention_mask=batch["attention_mask"][:rows].to(device)).logits
            out.extend(float(v) for v in logits[:, 0].float())
        return out

    def rank(self, prompt: list[dict[str, Any]], candidates: list[str]) -> list[dict[str, Any]]:
        """The candidates, best first: {index, text, score}."""
        scores = self.score([[*prompt, {"role": "assistant", "content": c}] for c in candidates])
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        return [{"index": i, "text": candidates[i], "score": scores[i]} for i in order]
