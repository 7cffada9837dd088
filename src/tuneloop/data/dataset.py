"""Read a data file into records: detect its format from the content, parse every row, keep places."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.data.formats import FORMAT_HELP, FORMATS, detect_dataset_format, parse_object
from tuneloop.data.problems import DataError, Problem
from tuneloop.data.readers import ProgressFn, RawRow, iter_rows
from tuneloop.data.records import Record

DETECT_SAMPLE = 50


@dataclass
class ParsedRow:
    number: int
    where: str
    record: Record | None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Source:
    """What to read and how: the file, its format (None: detect), and reading options."""

    path: Path
    format: str | None = None
    file_type: str | None = None
    columns: dict[str, str] | None = None
    label_set: set[str] | None = None


class Parsed:
    """The rows of one file, parsed lazily. `format` is known once the first rows are read."""

    def __init__(self, source: Source, on_progress: ProgressFn | None = None):
        if source.format is not None and source.format not in FORMATS:
            raise DataError(f"unknown format '{source.format}'; choose one of {', '.join(FORMATS)}")
        self.source = source
        rows = iter_rows(Path(source.path), source.file_type, source.columns, on_progress)
        head = list(itertools.islice(rows, DETECT_SAMPLE))
        self._rows = itertools.chain(head, rows)
        self.format = source.format or detect_dataset_format(r.obj for r in head if r.problem is None)
        self.unknown_format: Problem | None = None
        if self.format is None and any(r.problem is None for r in head):
            first = next(r for r in head if r.problem is None)
            keys = sorted(first.obj) if isinstance(first.obj, dict) else []
            self.unknown_format = Problem(
                "unknown_format",
                f"cannot tell the format: the first example has keys {keys}; expected one of: "
                + "; ".join(f"{name} {shape}" for name, shape in FORMAT_HELP.items())
                + ". Pass --format, or --columns to rename columns",
                first.number, first.where)

    def __iter__(self) -> Iterator[ParsedRow]:
        for raw in self._rows:
            yield self._parse(raw)

    def _parse(self, raw: RawRow) -> ParsedRow:
        if raw.problem is not None:
            return ParsedRow(raw.number, raw.where, None, [raw.problem])
        if self.format is None:
            return ParsedRow(raw.number, raw.where, None, [])
        record, problems = parse_object(raw.obj, self.format, raw.number, raw.where, self.source.label_set)
        return ParsedRow(raw.number, raw.where, record, problems)


def load_records(source: Source) -> tuple[str, list[tuple[int, Record]]]:
    """All records of a file that must be clean: (format, [(line, record)]). DataError lists the errors."""
    parsed = Parsed(source)
    if parsed.unknown_format:
        raise DataError(str(parsed.unknown_format), [parsed.unknown_format])
    records: list[tuple[int, Record]] = []
    errors: list[Problem] = []
    for row in parsed:
        errors.extend(p for p in row.problems if p.severity == "error")
        if row.record is not None:
            records.append((row.number, row.record))
    if errors:
        shown = "\n".join(f"  {p}" for p in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise DataError(f"{source.path}: {len(errors)} error(s); run `tuneloop data validate` for the full report\n"
                        f"{shown}{more}", errors)
    if not records:
        raise DataError(f"{source.path}: no examples found")
    return parsed.format, records
