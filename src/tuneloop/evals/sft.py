"""Evaluate a chat model on conversations: teacher-forced loss, perplexity and token accuracy on the
reference answers, then exact match and ROUGE-L of its own greedy answers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tuneloop.data.records import Record
from tuneloop.engine.methods.continuation import answer_sums
from tuneloop.engine.methods.sft import collate, labelled_logits
from tuneloop.engine.tokenize import IGNORE, record_messages, tokenize_messages, tokenize_records
from tuneloop.evals.metrics import exact_match, rouge_l
from tuneloop.models.generation import GenerationOptions, complete_batch

GENERATE_BATCH = 8
"""Greedy answers are generated this many at a time (one generate() call, one KV cache)."""

Progress = Callable[[int], None]


@dataclass
class SFTReport:
    n: int
    """Conversations scored (those with an answer left after truncation)."""
    loss: float
    """Mean cross-entropy per answer token."""
    perplexity: float
    token_accuracy: float
    """Share of answer tokens the model ranks first given the reference so far."""
    tokens: int
    generated: int = 0
    """Conversations answered by greedy generation (exact match and ROUGE-L rest on these)."""
    exact_match: float | None = None
    rouge_l: float | None = None
    samples: list[dict[str, str]] = field(default_factory=list)
    """The first few (reference, generated) pairs, to read."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def teacher_forced(model: Any, tokenizer: Any, records: Sequence[Record], max_length: int = 1024,
                   batch_size: int = 8, on_progress: Progress | None = None) -> tuple[float, float, int, int]:
    """(summed loss, correct tokens, answer tokens, examples) over the records' assistant answers."""
    model.eval()
    examples, _ = tokenize_records(tokenizer, list(records), max_length)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total, correct, count = 0.0, 0, 0
    for start in range(0, len(order), batch_size):
        part = [examples[i] for i in order[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(part, pad).items()}
        logits, targets = labelled_logits(model, batch)
        total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(-1) == targets).sum())
        count += len(targets)
        if on_progress:
            on_progress(len(part))
    return total, correct, count, len(examples)


@torch.no_grad()
def teacher_forced_items(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]],
                         max_length: int = 1024, batch_size: int = 8,
                         on_progress: Progress | None = None) -> tuple[list[float], list[int]]:
    """`teacher_forced` item by item, on each conversation's last assistant answer only (earlier answers, such as a
    prompt baseline's examples, are context): its summed cross-entropy and its token count (0 when truncation
    left none)."""
    model.eval()
    last = [max(i for i, m in enumerate(c) if m["role"] == "assistant") for c in conversations]
    examples = [tokenize_messages(tokenizer, [{**m, "weight": int(i == end)} if m["role"] == "assistant" else m
                                              for i, m in enumerate(c)], max_length)
                for c, end in zip(conversations, last)]
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums, counts = [0.0] * len(examples), [0] * len(examples)
    for start in range(0, len(order), batch_size):
        part = [i for i in order[start : start + batch_size] if examples[i].n_target_tokens]
        if part:
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in part], pad).items()}
            logits, targets = labelled_logits(model, batch)
            per_row = (batch["labels"][:, 1:] != IGNORE).sum(1)
            totals = answer_sums(torch.nn.functional.cross_entropy(logits, targets, reduction="none"), per_row)
            for i, total, n in zip(part, totals.tolist(), per_row.tolist()):
                sums[i], counts[i] = total, n
        if on_progress:
            on_progress(len(order[start : start + batch_size]))
    return sums, counts


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The content of the last user message (what a head classifier reads, and a nearest-example search)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def prompt_and_reference(record: Record) -> tuple[list[dict[str, str]], str] | None:
    """The conversation up to its last assistant answer, and that answer (None if there is none)."""
    messages = record_messages(record)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    return [{"role": m["role"], "content": m["content"]} for m in messages[:last]], messages[last]["content"]


def evaluate_sft(model: Any, tokenizer: Any, records: Sequence[Record], max_length: int = 1024,
                 max_generate: int | None = 100, max_new_tokens: int = 256,
                 on_progress: Progress | None = None, samples: int = 5) -> SFTReport:
    """Teacher-forced metrics on every record; generation metrics on the first `max_generate` (None: all)."""
    total, correct, count, n = teacher_forced(model, tokenizer, records, max_length, on_progress=on_progress)
    if count == 0:
        raise ValueError("no record has an assistant answer to evaluate (need chat, instruction or "
                         "prompt/completion data)")
    loss = total / count
    report = SFTReport(n, loss, math.exp(min(loss, 50.0)), correct / count, count)
    pairs = [p for p in (prompt_and_reference(r) for r in records) if p is not None]
    pairs = pairs if max_generate is None else pairs[:max_generate]
    matches, rouges = [], []
    options = GenerationOptions(max_tokens=max_new_tokens)
    for start in range(0, len(pairs), GENERATE_BATCH):
        batch = pairs[start:start + GENERATE_BATCH]
        answers = complete_batch(model, tokenizer, [messages for messages, _ in batch], options,
                                 batch_size=GENERATE_BATCH)
        for (messages, reference), answer in zip(batch, answers):
            text = answer.text.strip()
            matches.append(exact_match(text, reference))
            rouges.append(rouge_l(text, reference))
            if len(report.samples) < samples:
                report.samples.append({"prompt": messages[-1]["content"] if messages else "", "reference": reference,
                                       "generated": text})
        if on_progress:
            on_progress(len(batch))
    if pairs:
        report.generated = len(pairs)
        report.exact_match = sum(matches) / len(matches)
        report.rouge_l = sum(rouges) / len(rouges)
    return report
