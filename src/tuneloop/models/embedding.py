"""Sentence embeddings from an encoder (all-MiniLM-L6-v2, the embedded `minilm-l6`, by default): the mean of the
last hidden states over each text's tokens, scaled to unit length, as sentence-transformers computes them for that
model. Used by the `cosine` text-similarity grader."""

from __future__ import annotations

import threading
from typing import Any

import torch

from tuneloop.config.settings import Settings
from tuneloop.models.loading import model_dir
from tuneloop.models.registry import DEFAULT_ENCODER, resolve


class TextEmbedder:
    """Loads the encoder on first use; safe to share between threads (one forward at a time)."""

    def __init__(self, settings: Settings, ref: str = DEFAULT_ENCODER, max_length: int = 256, batch_size: int = 32):
        self.settings, self.ref, self.max_length, self.batch_size = settings, ref, max_length, batch_size
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            folder = model_dir(resolve(self.ref), self.settings)
            self._loaded = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
        return self._loaded

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), hidden) unit vectors."""
        with self._lock:
            model, tokenizer = self._load()
            out = []
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
            return torch.cat(out)
