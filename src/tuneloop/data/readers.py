"""Stream raw objects out of JSONL, JSON, CSV/TSV and Parquet files, each with its place in the file.

Nothing here holds a whole file in memory except a JSON array (which has no line structure).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.data.problems import DataError, Problem

FILE_TYPES = ("jsonl", "json", "csv", "tsv", "parquet")
# Cells of these keys are text as written. Cells of other keys that hold JSON (a list, an object,
# true/false) are decoded, so chat, tool and preference data fit in a table; empty ones are absent.
TEXT_CELL_KEYS = {"text", "label", "prompt", "completion", "instruction", "input", "output", "chosen", "rejected"}
# ...except that these may hold a JSON list of messages (conversational preference data).
MESSAGE_CELL_KEYS = {"prompt", "chosen", "rejected"}

ProgressFn = Callable[[int], None]
"""Called with the number of bytes (or rows, for Parquet) consumed since the last call."""

csv.field_size_limit(sys.maxsize)


@dataclass
class RawRow:
    number: int
    where: str
    obj: Any = None
    problem: Problem | None = None


def parse_column_map(spec: str | None) -> dict[str, str]:
    """`text=body,label=category` -> {"text": "body", "label": "category"} (our key = source column)."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise DataError(f"--columns: '{part}' is not KEY=COLUMN (e.g. text=body,label=category)")
        key, column = (s.strip() for s in part.split("=", 1))
        if not key or not column:
            raise DataError(f"--columns: '{part}' is not KEY=COLUMN (e.g. text=body,label=category)")
        mapping[key] = column
    return mapping


def detect_file_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    if suffix in {".csv"}:
        return "csv"
    if suffix in {".tsv", ".tab"}:
        return "tsv"
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if not path.exists():
        return "jsonl"
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip()[:1] == b"[":
        return "json"
    return "jsonl"


def _binary_problem(path: Path, file_type: str) -> Problem | None:
    if file_type == "parquet":
        return None
    with path.open("rb") as f:
        head = f.read(8192)
    if b"\x00" in head:
        return Problem("binary_file", f"{path.name} is a binary file, not UTF-8 text (found NUL bytes near the start)",
                       line=1, where="line 1")
    return None


def iter_rows(path: Path, file_type: str | None = None, columns: dict[str, str] | None = None,
              on_progress: ProgressFn | None = None) -> Iterator[RawRow]:
    """Yield every row of `path` as a RawRow: a parsed object, or the problem that kept it from parsing."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a data file")
    file_type = file_type or detect_file_type(path)
    if file_type not in FILE_TYPES:
        raise DataError(f"unknown file type '{file_type}'; choose one of {', '.join(FILE_TYPES)}")
    binary = _binary_problem(path, file_type)
    if binary:
        yield RawRow(1, "line 1", problem=binary)
        return
    reader = {"jsonl": _iter_jsonl, "json": _iter_json_array, "csv": _iter_csv, "tsv": _iter_csv,
              "parquet": _iter_parquet}[file_type]
    kwargs = {"delimiter": "\t" if file_type == "tsv" else ","} if file_type in {"csv", "tsv"} else {}
    for row in reader(path, on_progress, **kwargs):
        if columns and isinstance(row.obj, dict):
            row.obj = _apply_columns(row.obj, columns)
        yield row


def _apply_columns(obj: dict, columns: dict[str, str]) -> dict:
    sources = set(columns.values())
    out = {key: obj[column] for key, column in columns.items() if column in obj}
    out.update({k: v for k, v in obj.items() if k not in sources and k not in out})
    return out


def _iter_jsonl(path: Path, on_progress: ProgressFn | None) -> Iterator[RawRow]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if on_progress:
                on_progress(len(raw))
            where = f"line {number}"
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRow(number, where, problem=Problem(
                    "invalid_utf8", f"invalid UTF-8 byte 0x{raw[e.start]:02x} at column {e.start + 1}; "
                    "save the file as UTF-8", number, where))
                continue
            if not text.strip():
                continue  # blank lines are allowed between records
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield RawRow(number, where, problem=Problem(
                    "invalid_json", f"not valid JSON: {e.msg} at column {e.colno}", number, where))
                continue
            yield RawRow(number, where, obj=obj)


def _iter_json_array(path: Path, on_progress: ProgressFn | None) -> Iterator[RawRow]:
    raw = path.read_bytes()
    if on_progress:
        on_progress(len(raw))
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        yield RawRow(line, f"line {line}", problem=Problem(
            "invalid_utf8", f"invalid UTF-8 byte 0x{raw[e.start]:02x}; save the file as UTF-8", line, f"line {line}"))
        return
    except json.JSONDecodeError as e:
        yield RawRow(e.lineno, f"line {e.lineno}", problem=Problem(
            "invalid_json", f"not valid JSON: {e.msg} at column {e.colno}", e.lineno, f"line {e.lineno}"))
        return
    if not isinstance(data, list):
        yield RawRow(1, "line 1", problem=Problem(
            "not_object", "a .json file must hold an array of examples; use JSONL for one example per line", 1, "line 1"))
        return
    for number, obj in enumerate(data, start=1):
        yield RawRow(number, f"item {number}", obj=obj)


class _CountingReader(io.RawIOBase):
    """Wraps a binary file and reports how many bytes were read, for progress bars."""

    def __init__(self, f, on_progress: ProgressFn | None):
        self._f, self._on_progress = f, on_progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        if self._on_progress and n:
            self._on_progress(n)
        return n


def _iter_csv(path: Path, on_progress: ProgressFn | None, delimiter: str = ",") -> Iterator[RawRow]:
    with path.open("rb") as raw:
        counted = io.BufferedReader(_CountingReader(raw, on_progress))
        # surrogateescape keeps going past bad bytes so each bad row is reported, not the first only
        text = io.TextIOWrapper(counted, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        try:
            for number, row in enumerate(reader, start=1):
                where = f"row {number} (line {reader.line_num})"
                bad = [k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)]
                if bad:
                    yield RawRow(number, where, problem=Problem(
                        "invalid_utf8", f"invalid UTF-8 in column '{bad[0]}'; save the file as UTF-8",
                        number, where, bad[0]))
                    continue
                if None in row:
                    yield RawRow(number, where, problem=Problem(
                        "invalid_json", f"more cells than the {len(reader.fieldnames or [])} header columns",
                        number, where))
                    continue
                yield RawRow(number, where, obj=_decode_cells(row))
        except csv.Error as e:
            yield RawRow(reader.line_num, f"line {reader.line_num}", problem=Problem(
                "invalid_json", f"not valid CSV: {e}", reader.line_num, f"line {reader.line_num}"))


def _has_surrogates(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _decode_cells(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None:
            continue
        preference_input = key == "input" and ("preferred_output" in row or "non_preferred_output" in row)
        if isinstance(value, str) and (key not in TEXT_CELL_KEYS or preference_input):
            if not value.strip():
                continue
            if key == "labels" and value.strip()[:1] != "[":
                value = [v.strip() for v in value.split("|") if v.strip()]
            else:
                value = _maybe_json(value)
        elif isinstance(value, str) and key in MESSAGE_CELL_KEYS and value.strip()[:1] == "[":
            value = _maybe_json(value)
        out[key] = value
    return out


def _maybe_json(value: str) -> Any:
    if value.strip()[:1] in {"[", "{"} or value.strip() in {"true", "false", "null"}:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass  # left as text; validation reports the wrong type with the row
    return value


def _iter_parquet(path: Path, on_progress: ProgressFn | None) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e
    number = 0
    for batch in parquet.iter_batches(batch_size=2048):
        if on_progress:
            on_progress(batch.num_rows)
        for obj in batch.to_pylist():
            number += 1
            yield RawRow(number, f"row {number}", obj=_decode_cells(obj) if isinstance(obj, dict) else obj)


def progress_total(path: Path, file_type: str | None = None) -> int:
    """The total that `on_progress` counts up to: bytes, or rows for Parquet."""
    if (file_type or detect_file_type(path)) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return path.stat().st_size
