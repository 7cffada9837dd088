"""Few-shot prompts for prompt baselines (`config/prompts.PromptConfig`): k examples from the training data shown
as earlier turns of the conversation, the same seeded k for every test row, or each row's nearest by embedding."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuneloop.config.prompts import PromptConfig
from tuneloop.data.records import LabelledRecord, Record
from tuneloop.evals.sft import last_user_text, prompt_and_reference

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Shot:
    user: str
    answer: str


def shot_pool(records: Sequence[Record]) -> list[Shot]:
    """Each training record as one (question, answer) turn: a labelled text and its label, or a conversation's last
    user message and the assistant answer after it. Records without one are skipped."""
    pool = []
    for record in records:
        if isinstance(record, LabelledRecord):
            pool.append(Shot(record.text, ", ".join(record.labels)))
            continue
        found = prompt_and_reference(record)
        if found is not None and any(m["role"] == "user" for m in found[0]):
            pool.append(Shot(last_user_text(found[0]), found[1].strip()))
    return pool


def choose_shots(config: PromptConfig, pool: Sequence[Shot], texts: Sequence[str],
                 embed: Callable[[list[str]], "object"] | None = None) -> list[list[Shot]]:
    """The examples each test text gets: `random`, the first k of one seeded order of the pool (the same k for
    every text, except that a test text found word for word in the pool skips itself and takes the next);
    `nearest`, the k pool texts most similar to it (cosine of `embed`'s unit vectors, nearest last, so it sits just
    before the question), never itself."""
    if config.k == 0:
        return [[] for _ in texts]
    if len(pool) < config.k:
        raise ValueError(f"{config.label}: needs {config.k} training examples, the training data has {len(pool)}")
    if config.selection == "random":
        shuffled = random.Random(config.seed).sample(list(pool), len(pool))   # one seeded order for every row
        out = []
        for text in texts:
            picked = [s for s in shuffled if s.user != text][: config.k]
            if len(picked) < config.k:
                raise ValueError(f"{config.label}: needs {config.k} training examples besides the test text, the "
                                 f"training data has {len(picked)}")
            out.append(picked)
        return out
    if embed is None:
        raise ValueError("selection 'nearest' needs an embedding model")
    pool_vectors, text_vectors = embed([s.user for s in pool]), embed(list(texts))
    similarity = text_vectors @ pool_vectors.T  # type: ignore[attr-defined]
    out = []
    for row, text in enumerate(texts):
        order = similarity[row].argsort(descending=True).tolist()
        picked = [pool[i] for i in order if pool[i].user != text][: config.k]
        out.append(picked[::-1])
    return out


def with_shots(messages: Messages, shots: Sequence[Shot], system: str | None = None) -> Messages:
    """The conversation with the examples as user/assistant turns after its system message(s); `system` replaces
    (or adds) the system message."""
    lead = [m for m in messages[: next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))]]
    rest = messages[len(lead):]
    if system is not None:
        lead = [{"role": "system", "content": system}]
    turns = [t for s in shots for t in ({"role": "user", "content": s.user}, {"role": "assistant", "content": s.answer})]
    return [*lead, *turns, *rest]
