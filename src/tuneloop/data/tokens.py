"""Token lengths of records, measured with a real tokenizer and its chat template.

The tokenizer is passed in (any Hugging Face tokenizer); `data/` does not load models itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneloop.data.records import Message, PreferenceRecord, Record


def _plain(messages: list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def render(record: Record, tokenizer: Any) -> list[str]:
    """The text(s) a model sees for this record: one per conversation (two for a preference pair)."""
    if isinstance(record, PreferenceRecord):
        conversations = [[*record.messages, *record.chosen], [*record.messages, *record.rejected]]
    else:
        conversations = [record.to_messages()]
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template(_plain(c), tokenize=False) for c in conversations]
    return ["\n".join(m.content for m in c) for c in conversations]


def token_lengths(records: Sequence[Record], tokenizer: Any) -> list[int]:
    """Tokens of each record (the longer side, for a preference pair)."""
    texts: list[str] = []
    owners: list[int] = []
    for i, record in enumerate(records):
        for text in render(record, tokenizer):
            texts.append(text)
            owners.append(i)
    if not texts:
        return []
    templated = bool(getattr(tokenizer, "chat_template", None))
    ids = tokenizer(texts, add_special_tokens=not templated)["input_ids"]
    lengths = [0] * len(records)
    for owner, seq in zip(owners, ids):
        lengths[owner] = max(lengths[owner], len(seq))
    return lengths
