"""Text generation with a model's own chat template, streamed token by token."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    """How many tokens to generate at most."""
    temperature: float = 0.0
    """0 means greedy decoding (deterministic)."""
    top_p: float = 1.0
    seed: int | None = None


def encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> Any:
    """Token ids of a conversation rendered by the tokenizer's chat template, ready for the answer."""
    if not getattr(tokenizer, "chat_template", None):
        text = "\n".join(m["content"] for m in messages)
        return tokenizer(text, return_tensors="pt")["input_ids"]
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    return encoded["input_ids"]


def generate_kwargs(tokenizer: Any, config: GenerationConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens,
                              "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                              else tokenizer.eos_token_id}
    if config.temperature > 0:
        kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=None)  # no top-k cut
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def generate(model: Any, tokenizer: Any, input_ids: Any, config: GenerationConfig | None = None) -> str:
    """The whole answer at once."""
    return "".join(stream(model, tokenizer, input_ids, config))


def stream(model: Any, tokenizer: Any, input_ids: Any, config: GenerationConfig | None = None) -> Iterator[str]:
    """Yield pieces of text as the model produces them (special tokens skipped)."""
    import torch
    from transformers import TextIteratorStreamer

    config = config or GenerationConfig()
    if config.seed is not None:
        torch.manual_seed(config.seed)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = generate_kwargs(tokenizer, config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                               **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for piece in streamer:
        if piece:
            yield piece
    thread.join()
    if errors:
        raise errors[0]
