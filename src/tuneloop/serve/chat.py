"""Chat completions: the model's chat template renders the messages; greedy or sampled answers with
stop strings, token limits, seeds, log-probabilities and token counts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from tuneloop.serve.generation import GenerationConfig, encode_chat, generate_kwargs


@dataclass
class Options:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class Answer:
    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None


def _kwargs(tokenizer: Any, options: Options) -> dict[str, Any]:
    return generate_kwargs(tokenizer, GenerationConfig(max_new_tokens=options.max_tokens,
                                                       temperature=options.temperature, top_p=options.top_p))


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stop if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def prompt_ids(model: Any, tokenizer: Any, messages: list[dict[str, Any]]) -> torch.Tensor:
    return encode_chat(tokenizer, messages).to(next(model.parameters()).device)


@torch.no_grad()
def complete(model: Any, tokenizer: Any, messages: list[dict[str, Any]], options: Options) -> Answer:
    ids = prompt_ids(model, tokenizer, messages)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), output_scores=options.logprobs,
                         return_dict_in_generate=True, **_kwargs(tokenizer, options))
    new = out.sequences[0, ids.shape[1]:].tolist()
    ended = bool(new) and new[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(new, skip_special_tokens=True)
    text, stopped = _cut_at_stop(text, options.stop)
    finish = "stop" if ended or stopped or len(new) < options.max_tokens else "length"
    answer = Answer(text, finish, len(new))
    if options.logprobs:
        answer.logprobs = []
        for token, scores in zip(new, out.scores):
            logp = torch.log_softmax(scores[0].float(), dim=-1)
            entry = {"token": tokenizer.decode([token]), "logprob": float(logp[token]),
                     "bytes": list(tokenizer.decode([token]).encode()), "top_logprobs": []}
            if options.top_logprobs:
                values, indices = logp.topk(options.top_logprobs)
                entry["top_logprobs"] = [{"token": tokenizer.decode([i]), "logprob": float(v),
                                          "bytes": list(tokenizer.decode([i]).encode())}
                                         for v, i in zip(values.tolist(), indices.tolist())]
            answer.logprobs.append(entry)
    return answer


def stream(model: Any, tokenizer: Any, messages: list[dict[str, Any]], options: Options
           ) -> Iterator[tuple[str, str | None, int]]:
    """Yield (text piece, finish_reason or None, completion tokens so far); the last item has the reason."""
    from transformers import TextIteratorStreamer

    ids = prompt_ids(model, tokenizer, messages)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            with torch.no_grad():
                result["out"] = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                               **_kwargs(tokenizer, options))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    hold = max((len(s) for s in options.stop), default=1) - 1  # a stop string may span pieces
    pending, stopped = "", False
    for piece in streamer:
        pending += piece
        cut, stopped = _cut_at_stop(pending, options.stop)
        if stopped:
            pending = cut
            break
        if len(pending) > hold:
            yield pending[: len(pending) - hold], None, 0
            pending = pending[len(pending) - hold:]
    thread.join()
    if "error" in result:
        raise result["error"]
    new = result["out"][0, ids.shape[1]:].tolist() if "out" in result else []
    ended = bool(new) and new[-1] == tokenizer.eos_token_id
    finish = "stop" if ended or stopped or len(new) < options.max_tokens else "length"
    yield pending, finish, len(new)
