"""Write records out as JSONL, JSON, CSV/TSV or Parquet in any format that can hold them."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tuneloop.data.formats import ConversionError, dump_record
from tuneloop.data.readers import detect_file_type
from tuneloop.data.records import Record


def _objects(records: Iterable[tuple[int, Record]], fmt: str) -> Iterable[dict[str, Any]]:
    for line, record in records:
        try:
            yield dump_record(record, fmt)
        except ConversionError as e:
            raise ConversionError(f"example from line {line}: {e}") from None


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict, bool)) else value


def write_records(records: Iterable[tuple[int, Record]], path: Path, fmt: str, file_type: str | None = None) -> int:
    """Write (line, record) pairs to `path` as `fmt`; the file type comes from the suffix unless given."""
    path = Path(path)
    file_type = file_type or ("json" if path.suffix.lower() == ".json" else detect_file_type(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    objects = list(_objects(records, fmt)) if file_type != "jsonl" else _objects(records, fmt)
    count = 0
    try:
        if file_type == "jsonl":
            with tmp.open("w", encoding="utf-8") as f:
                for obj in objects:
                    f.write(json.dumps(obj, ensure_ascii=False) + "\n")
                    count += 1
        elif file_type == "json":
            tmp.write_text(json.dumps(objects, ensure_ascii=False, indent=1), encoding="utf-8")
            count = len(objects)
        elif file_type in {"csv", "tsv"}:
            columns: list[str] = []
            for obj in objects:
                columns.extend(k for k in obj if k not in columns)
            with tmp.open("w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, columns, delimiter="\t" if file_type == "tsv" else ",")
                writer.writeheader()
                for obj in objects:
                    writer.writerow({k: _cell(v) for k, v in obj.items()})
            count = len(objects)
        elif file_type == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            columns = list(dict.fromkeys(k for obj in objects for k in obj))
            rows = [{k: _cell(obj.get(k)) for k in columns} for obj in objects]
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            count = len(objects)
        else:
            raise ConversionError(f"cannot write file type '{file_type}'")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count
