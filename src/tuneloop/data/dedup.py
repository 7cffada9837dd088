"""Exact and near-duplicate detection: normalised hashes, then MinHash with LSH."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Sequence

from datasketch import MinHash, MinHashLSH

from tuneloop.data.records import LabelledRecord, Record, record_text

NUM_PERM = 128
SHINGLE = 5
_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")

Numbered = tuple[int, Record]
"""A record with its line (or row) number in the source file."""


def normalise(text: str) -> str:
    """Unicode-normalised, case-folded, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def dedup_key(record: Record) -> str:
    """What two examples must share to be duplicates: the text for labelled data, else all of it."""
    return record.text if isinstance(record, LabelledRecord) else record_text(record)


def _shingles(text: str) -> set[bytes]:
    if len(text) <= SHINGLE:
        return {text.encode()}
    return {text[i : i + SHINGLE].encode() for i in range(len(text) - SHINGLE + 1)}


def minhash(text: str) -> MinHash:
    m = MinHash(num_perm=NUM_PERM, seed=1)
    m.update_batch(list(_shingles(text)))
    return m


@dataclass
class Drop:
    line: int
    reason: str  # "exact" or "near"
    duplicate_of: int
    similarity: float
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _labels_note(a: Record, b: Record) -> str:
    if isinstance(a, LabelledRecord) and isinstance(b, LabelledRecord) and a.labels != b.labels:
        return f"labels differ: {', '.join(a.labels)} (kept) vs {', '.join(b.labels)}"
    return ""


def find_duplicates(records: Sequence[Numbered], threshold: float = 0.8, near: bool = True) -> list[Drop | None]:
    """For each record (in order), None if kept, else why it is dropped and which kept record it repeats.

    The first of a set of duplicates is kept. `threshold` is the estimated Jaccard similarity of
    character 5-gram sets above which two examples are near-duplicates.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    exact: dict[bytes, int] = {}
    # LSH only proposes candidates (it cannot band above ~0.9); each is then checked against `threshold`.
    lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=NUM_PERM) if near and threshold < 1 else None
    hashes: dict[int, MinHash] = {}
    result: list[Drop | None] = []
    for index, (line, record) in enumerate(records):
        text = normalise(dedup_key(record))
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in exact:
            first = exact[digest]
            result.append(Drop(line, "exact", records[first][0], 1.0, _labels_note(records[first][1], record)))
            continue
        exact[digest] = index
        if lsh is None:
            result.append(None)
            continue
        m = minhash(text)
        best, best_sim = None, 0.0
        for candidate in lsh.query(m):
            similarity = m.jaccard(hashes[candidate])
            if similarity >= threshold and similarity > best_sim:
                best, best_sim = candidate, similarity
        if best is None:
            lsh.insert(index, m)
            hashes[index] = m
            result.append(None)
        else:
            result.append(Drop(line, "near", records[best][0], round(best_sim, 3), _labels_note(records[best][1], record)))
    return result


def duplicate_groups(records: Sequence[Numbered], threshold: float = 0.8) -> list[int]:
    """A group id per record: exact and near-duplicates share one (the index of the kept record)."""
    index_of_line = {line: i for i, (line, _) in enumerate(records)}
    groups = []
    for i, drop in enumerate(find_duplicates(records, threshold)):
        groups.append(i if drop is None else groups[index_of_line[drop.duplicate_of]])
    return groups
