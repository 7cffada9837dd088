"""Spans (named entities) as tags: a text's labelled character spans as BIO tags over its words or a
tokenizer's tokens, and back.

A span is `(start, end, label)` in characters, `end` excluded. Words are runs of letters and digits, or one
other non-space character. Entities are read from tags as seqeval reads them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

SpanT = tuple[int, int, str]
"""(start, end, label): characters `start` to `end` (excluded)."""
WORD = re.compile(r"\w+|[^\w\s]")
OUTSIDE = "O"


def as_tuples(spans: Sequence[Any]) -> list[SpanT]:
    """Spans given as dicts, objects with attributes, or tuples (lists), as sorted (start, end, label) tuples."""
    out = []
    for s in spans:
        if isinstance(s, Mapping):
            out.append((int(s["start"]), int(s["end"]), str(s["label"])))
        elif isinstance(s, (tuple, list)):  # (start, end, label), as tuples or as stored in JSON
            out.append((int(s[0]), int(s[1]), str(s[2])))
        else:
            out.append((int(s.start), int(s.end), str(s.label)))
    return sorted(out)


def words(text: str) -> list[tuple[int, int]]:
    r"""(start, end) of each word of `text`. Combining marks belong to the word they follow (Python's `\w` leaves
    them out: 'हिन्दी' or a decomposed 'café' is one word, as the review page cuts it)."""
    out: list[tuple[int, int]] = []
    for m in WORD.finditer(text):
        start, end = m.span()
        if out and out[-1][1] == start and (_is_mark(text[start]) or _is_mark(text[start - 1])):
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def tag(offsets: Sequence[tuple[int, int]], spans: Sequence[Any]) -> list[str]:
    """BIO tags of pieces of a text at `offsets` (words, or a tokenizer's tokens): a piece that overlaps a span
    is in it; the first piece of each span is B-, the rest I-."""
    tags = [OUTSIDE] * len(offsets)
    for start, end, label in as_tuples(spans):
        first = True
        for i, (a, b) in enumerate(offsets):
            if a < end and b > start and b > a:
                tags[i] = f"{'B' if first else 'I'}-{label}"
                first = False
    return tags


def bio(text: str, spans: Sequence[Any]) -> tuple[list[str], list[str]]:
    """(words, BIO tags): the CoNLL form of a text with spans."""
    offsets = words(text)
    return [text[a:b] for a, b in offsets], tag(offsets, spans)


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(label, first, last) pieces of each entity in a BIO sequence, as seqeval reads it (an I- after O or after
    another type starts an entity, as in conlleval)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [(label, first, last) for label, first, last in get_entities(list(tags))]


def spans_from_tags(text: str, offsets: Sequence[tuple[int, int]], tags: Sequence[str]) -> list[SpanT]:
    """Character spans of the entities in `tags` over pieces at `offsets`, with surrounding whitespace trimmed
    (byte-level tokens carry the space before a word). Several byte-level tokens can share one character (an
    emoji, an accented letter): an entity that overlaps one found before it is dropped, so spans never overlap."""
    out: list[SpanT] = []
    for label, first, last in entities(tags):
        start, end = offsets[first][0], offsets[last][1]
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end and not any(s < end and start < e for s, e, _ in out):
            out.append((start, end, label))
    return sorted(out)
