"""Check every example of a data file and report every problem with its place, grouped by kind."""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.data.dataset import Parsed, ParsedRow, Source
from tuneloop.data.problems import KINDS, MIN_EXAMPLES, Problem
from tuneloop.data.readers import ProgressFn
from tuneloop.data.records import LabelledRecord, Record
from tuneloop.data.tokens import token_lengths

KEEP_PER_KIND = 200
"""Problems of one kind kept with their places; beyond this only the count grows (memory stays flat)."""
TOKEN_BATCH = 256


@dataclass
class Report:
    path: Path
    format: str | None
    rows: int = 0
    examples: int = 0
    counts: Counter = field(default_factory=Counter)
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    max_length: int | None = None
    longest: int | None = None

    def add(self, problem: Problem) -> None:
        self.counts[problem.code] += 1
        kept = self.problems.setdefault(problem.code, [])
        if len(kept) < KEEP_PER_KIND:
            kept.append(problem)

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.counts.items() if KINDS[code][0] == "error")

    @property
    def warnings(self) -> int:
        return sum(n for code, n in self.counts.items() if KINDS[code][0] == "warning")

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "format": self.format, "rows": self.rows, "examples": self.examples,
            "ok": self.ok, "errors": self.errors, "warnings": self.warnings,
            "max_length": self.max_length, "longest_tokens": self.longest,
            "kinds": [
                {"code": code, "severity": KINDS[code][0], "title": KINDS[code][1], "count": self.counts[code],
                 "problems": [p.to_dict() for p in self.problems.get(code, [])]}
                for code in sorted(self.counts, key=lambda c: (KINDS[c][0] != "error", c))
            ],
        }


class _Duplicates:
    """Remembers an 8-byte hash and the row number of each example, so a 1 GB file fits in memory."""

    def __init__(self) -> None:
        self.first_seen: dict[int, int | tuple[int, str]] = {}

    def check(self, row: ParsedRow) -> Problem | None:
        record = row.record
        labels = ""
        if isinstance(record, LabelledRecord):
            key, labels = record.text.strip(), sys.intern(", ".join(record.labels))
        else:
            key = record.model_dump_json(exclude={"extra"})
        digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        seen = self.first_seen.get(digest)
        if seen is None:
            self.first_seen[digest] = (row.number, labels) if labels else row.number
            return None
        first, first_labels = seen if isinstance(seen, tuple) else (seen, "")
        note = f" (labels differ: {first_labels} vs {labels})" if labels != first_labels else ""
        unit = row.where.split()[0]  # "line", "row" or "item", as the file counts
        return Problem("duplicate", f"duplicates {unit} {first}{note}", row.number, row.where)


def validate(source: Source, *, tokenizer: Any = None, max_length: int | None = None,
             on_progress: ProgressFn | None = None, collect: list[tuple[int, Record]] | None = None) -> Report:
    """Read the whole file once, streaming, and report every problem found.

    Pass a list as `collect` to also receive the valid records (for an import), saving a second read.
    """
    parsed = Parsed(source, on_progress)
    report = Report(Path(source.path), parsed.format, max_length=max_length)
    if parsed.unknown_format:
        report.add(parsed.unknown_format)
    duplicates = _Duplicates()
    pending: list[ParsedRow] = []
    for row in parsed:
        report.rows += 1
        for problem in row.problems:
            report.add(problem)
        if row.record is None:
            continue
        report.examples += 1
        if collect is not None:
            collect.append((row.number, row.record))
        duplicate = duplicates.check(row)
        if duplicate:
            report.add(duplicate)
        if tokenizer is not None and max_length is not None:
            pending.append(row)
            if len(pending) >= TOKEN_BATCH:
                _check_lengths(report, pending, tokenizer, max_length)
                pending = []
    if pending:
        _check_lengths(report, pending, tokenizer, max_length)
    if report.rows == 0:
        report.add(Problem("empty_file", f"{Path(source.path).name} holds no examples"))
    elif report.examples < MIN_EXAMPLES and not parsed.unknown_format and not report.counts["binary_file"]:
        report.add(Problem("too_few_examples",
                           f"only {report.examples} valid example(s); at least {MIN_EXAMPLES} are needed to train"))
    return report


def _check_lengths(report: Report, rows: list[ParsedRow], tokenizer: Any, max_length: int) -> None:
    records: list[Record] = [row.record for row in rows]
    for row, n in zip(rows, token_lengths(records, tokenizer)):
        report.longest = max(report.longest or 0, n)
        if n > max_length:
            report.add(Problem("too_long", f"{n} tokens, {n - max_length} over --max-length {max_length} "
                               "(it will be truncated)", row.number, row.where))
