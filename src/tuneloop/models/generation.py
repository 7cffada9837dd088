"""Generation, for every caller: chat completions, `tuneloop generate` and `chat`, evaluation and
pre-labels. The model's chat template renders the messages; greedy or sampled answers with stop strings,
token limits, seeds, log-probabilities and token counts, whole (`complete`) or streamed (`stream`).

Generation ends at the token that completes a stop string, and at the next token once a `cancel` event
is set (a client went away), so no work goes on for nobody. transformers' own `stop_strings` is not
used: it also matches text of the prompt (a stop of "\n\n" fires on the template's last newline plus
a first "\n"), while OpenAI's stop strings apply to the answer alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList


def encode_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> Any:
    """Token ids of a conversation rendered by the tokenizer's chat template, ready for the answer."""
    if not getattr(tokenizer, "chat_template", None):
        text = "\n".join(m["content"] for m in messages)
        return tokenizer(text, return_tensors="pt")["input_ids"]
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    return encoded["input_ids"]


@dataclass
class GenerationOptions:
    """How to generate, for every caller: chat completions, `tuneloop generate` and `chat`, evaluation and
    pre-labels."""

    max_tokens: int = 256
    """How many tokens to generate at most."""
    temperature: float = 0.0
    """0 means greedy decoding (deterministic); the API passes the request's (OpenAI's default is 1)."""
    top_p: float = 1.0
    seed: int | None = None
    """Seeds torch's generator before sampling, so an answer can be repeated."""
    stop: list[str] = field(default_factory=list)
    """Generation ends where the answer first contains one of these; the text is cut before it."""
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class Answer:
    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None
    token_ids: list[int] | None = None
    """The generated tokens, the end token included (complete_batch): what RL scores and trains on."""


class StopWhenSet(StoppingCriteria):
    """Ends generation at the next token once any of the events is set."""

    def __init__(self, *events: threading.Event | None):
        self.events = [e for e in events if e is not None]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        done = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class StopAtStrings(StoppingCriteria):
    """Ends generation once the answer (the tokens after the prompt) contains a stop string. Only the last
    few tokens are decoded each step: enough to hold the longest stop string."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_length: int):
        self.tokenizer, self.stops, self.prompt_length = tokenizer, [s for s in stops if s], prompt_length
        self.window = max(len(s.encode()) for s in self.stops) + 4  # a token holds at least one byte

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        tails = [self.tokenizer.decode(row[self.prompt_length:][-self.window:], skip_special_tokens=True)
                 for row in input_ids.tolist()]
        return torch.tensor([any(s in tail for s in self.stops) for tail in tails], device=input_ids.device)


def _kwargs(tokenizer: Any, options: GenerationOptions, prompt_length: int, *cancel: threading.Event | None
            ) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": options.max_tokens,
                              "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                              else tokenizer.eos_token_id}
    if options.temperature > 0:
        kwargs.update(do_sample=True, temperature=options.temperature, top_p=options.top_p, top_k=None)  # no top-k
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    criteria = [StopWhenSet(*cancel)]
    if any(options.stop):
        criteria.append(StopAtStrings(tokenizer, options.stop, prompt_length))
    kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
    return kwargs


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokens that end an answer: the model's generation config's (what generate() stops on) and the
    tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return {i for i in [*ids, tokenizer.eos_token_id] if i is not None}


def _finish(new: list[int], eos: set[int], options: GenerationOptions, stopped: bool) -> str:
    ended = bool(new) and new[-1] in eos
    return "stop" if ended or stopped or len(new) < options.max_tokens else "length"


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stop if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def context_length(model: Any) -> int | None:
    """How many tokens the model reads at most (prompt and answer), when its config says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def prompt_ids(model: Any, tokenizer: Any, messages: list[dict[str, Any]]) -> torch.Tensor:
    return encode_chat(tokenizer, messages).to(next(model.parameters()).device)


@torch.no_grad()
def complete(model: Any, tokenizer: Any, messages: list[dict[str, Any]], options: GenerationOptions,
             cancel: threading.Event | None = None) -> Answer:
    ids = prompt_ids(model, tokenizer, messages)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), output_scores=options.logprobs,
                         return_dict_in_generate=True, **_kwargs(tokenizer, options, ids.shape[1], cancel))
    new = out.sequences[0, ids.shape[1]:].tolist()
    text = tokenizer.decode(new, skip_special_tokens=True)
    text, stopped = _cut_at_stop(text, options.stop)
    answer = Answer(text, _finish(new, _eos_ids(model, tokenizer), options, stopped), len(new))
    if options.logprobs:
        answer.logprobs = _logprobs(tokenizer, new, [scores[0] for scores in out.scores], options.top_logprobs)
    return answer


def _logprobs(tokenizer: Any, tokens: list[int], scores: list[torch.Tensor], top: int) -> list[dict[str, Any]]:
    """OpenAI's `logprobs.content`: each generated token's log-probability (and the `top` likeliest)."""
    entries = []
    for token, row in zip(tokens, scores):  # row: (vocab,) scores of the step that chose `token`
        logp = torch.log_softmax(row.float(), dim=-1)
        entry = {"token": tokenizer.decode([token]), "logprob": float(logp[token]),
                 "bytes": list(tokenizer.decode([token]).encode()), "top_logprobs": []}
        if top:
            values, indices = logp.topk(top)
            entry["top_logprobs"] = [{"token": tokenizer.decode([i]), "logprob": float(v),
                                      "bytes": list(tokenizer.decode([i]).encode())}
                                     for v, i in zip(values.tolist(), indices.tolist())]
        entries.append(entry)
    return entries


@torch.no_grad()
def complete_batch(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, Any]]],
                   options: GenerationOptions, batch_size: int = 8) -> list[Answer]:
    """Answers to many conversations, `batch_size` at a time in one `generate()` call each (prompts padded
    on the left, one KV cache per batch), for offline callers: evaluation and pre-labels. Greedy answers
    are those `complete` gives one by one. Stop strings are for `complete` and `stream`."""
    if options.stop:
        raise ValueError("complete_batch takes no stop strings; use complete() for each conversation")
    prompts = [encode_chat(tokenizer, messages)[0].tolist() for messages in conversations]
    return complete_ids(model, tokenizer, prompts, options, batch_size)


@torch.no_grad()
def complete_ids(model: Any, tokenizer: Any, prompts: Sequence[list[int]], options: GenerationOptions,
                 batch_size: int = 8, group: int = 1) -> list[Answer]:
    """`complete_batch` on prompts already encoded (`encode_chat`): RL scores and trains on exactly these tokens.
    With a seed, each batch of `batch_size` starts from it. `group`: the prompts come in runs of `group` identical
    ones (several samples per prompt; `batch_size` a multiple of it): each run's prompt is read once and its KV cache
    repeated for the run (transformers' prefix caching: generate() continues from the cache it is given)."""
    device, eos = next(model.parameters()).device, _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[Answer] = []
    for start in range(0, len(prompts), batch_size):
        prompts_part = list(prompts[start:start + batch_size])
        width = max(len(p) for p in prompts_part)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts_part], device=device)  # (B, width)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts_part], device=device)
        extra: dict[str, Any] = {}
        if group > 1 and width > 1:
            extra["cache"] = _prefix_cache(model, ids[::group, :-1], mask[::group, :-1], group)
        if options.seed is not None:
            torch.manual_seed(options.seed)
        out = model.generate(input_ids=ids, attention_mask=mask, output_scores=options.logprobs,
                             return_dict_in_generate=True, **_kwargs(tokenizer, options, width), **extra)
        for row in range(len(prompts_part)):
            new = out.sequences[row, width:].tolist()
            ends = [i for i, token in enumerate(new) if token in eos]
            new = new[: ends[0] + 1] if ends else new  # after its end a row is filled with padding
            answer = Answer(tokenizer.decode(new, skip_special_tokens=True), _finish(new, eos, options, False),
                            len(new), token_ids=new)
            if options.logprobs:
                answer.logprobs = _logprobs(tokenizer, new, [scores[row] for scores in out.scores],
                                            options.top_logprobs)
            answers.append(answer)
    return answers


def _prefix_cache(model: Any, ids: torch.Tensor, mask: torch.Tensor, group: int) -> Any:
    """The KV cache of each (left-padded) prompt but its last token, each repeated `group` times in place."""
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    cache = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True).cache
    cache.batch_repeat_interleave(group)
    return cache


def stream(model: Any, tokenizer: Any, messages: list[dict[str, Any]], options: GenerationOptions,
           cancel: threading.Event | None = None) -> Iterator[tuple[str, str | None, int]]:
    """Yield (text piece, finish_reason or None, completion tokens so far); the last item has the reason.
    Closing the iterator early (or setting `cancel`) ends generation at the next token."""
    from transformers import TextIteratorStreamer

    ids = prompt_ids(model, tokenizer, messages)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict[str, Any] = {}
    left = threading.Event()  # this iterator was closed before the answer ended

    def run() -> None:
        try:
            with torch.no_grad():
                result["out"] = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                               **_kwargs(tokenizer, options, ids.shape[1], cancel, left))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    hold = max((len(s) for s in options.stop), default=1) - 1  # a stop string may span pieces
    pending, stopped = "", False
    try:
        for piece in streamer:
            pending += piece
            cut, stopped = _cut_at_stop(pending, options.stop)
            if stopped:
                pending = cut
                break
            if len(pending) > hold:
                yield pending[: len(pending) - hold], None, 0
                pending = pending[len(pending) - hold:]
    finally:
        left.set()
        thread.join()
    if "error" in result:
        raise result["error"]
    new = result["out"][0, ids.shape[1]:].tolist() if "out" in result else []
    yield pending, _finish(new, _eos_ids(model, tokenizer), options, stopped), len(new)
