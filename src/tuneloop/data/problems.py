"""Problems found in a data file: what is wrong, where, and how bad."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]

# code -> (severity, title shown in reports)
KINDS: dict[str, tuple[Severity, str]] = {
    "binary_file": ("error", "Binary file, not text"),
    "invalid_utf8": ("error", "Invalid UTF-8"),
    "invalid_json": ("error", "Not valid JSON"),
    "not_object": ("error", "Not a JSON object"),
    "empty_file": ("error", "No examples"),
    "unknown_format": ("error", "Format not recognised"),
    "missing_field": ("error", "Missing field"),
    "wrong_type": ("error", "Wrong type"),
    "unknown_role": ("error", "Unknown role"),
    "empty_content": ("error", "Empty content"),
    "no_assistant": ("error", "No assistant message to learn from"),
    "identical_preference": ("error", "Preferred and non-preferred answers are identical"),
    "unknown_label": ("error", "Label not in the label set"),
    "bad_label": ("error", "Label is not true or false"),
    "bad_span": ("error", "Span outside its text"),
    "overlapping_spans": ("error", "Overlapping spans"),
    "too_few_examples": ("error", "Fewer than 10 examples"),
    "grader_field": ("error", "Lacks a field the grader names"),
    "unknown_key": ("warning", "Unknown key"),
    "too_long": ("warning", "Longer than --max-length tokens"),
    "duplicate": ("warning", "Duplicate example"),
    "span_whitespace": ("warning", "Span starts or ends with whitespace"),
}

MIN_EXAMPLES = 10


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    line: int | None = None
    """1-based line (JSONL), row (CSV/Parquet, header excluded) or item (JSON array) number."""
    where: str = ""
    """Human form of the place, e.g. 'line 12' or 'row 4'."""
    field: str | None = None

    @property
    def severity(self) -> Severity:
        return KINDS[self.code][0]

    def to_dict(self) -> dict:
        return {**asdict(self), "severity": self.severity}

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        return f"{place}{self.message}"


class DataError(Exception):
    """A data file cannot be used; `problems` says why and where."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = problems or []
