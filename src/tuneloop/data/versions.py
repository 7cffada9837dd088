"""Dataset versions in the home folder, keyed by the hash of their content; never overwritten.

    datasets/<version>/records.jsonl   the examples as internal records, in source order
    datasets/<version>/meta.json       name, format, source file, line numbers, stats
    datasets/imports.jsonl             one line per import (append-only): name, version, source, time
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuneloop.data.problems import DataError
from tuneloop.data.records import Record, RecordAdapter


@dataclass
class Version:
    id: str
    path: Path
    meta: dict[str, Any]
    created: bool = False
    """True when this import stored it; False when the same content was already there."""

    def records(self) -> list[tuple[int, Record]]:
        lines = self.meta["lines"]
        with (self.path / "records.jsonl").open(encoding="utf-8") as f:
            return [(line, RecordAdapter.validate_json(text)) for line, text in zip(lines, f)]


def content_id(records: list[tuple[int, Record]]) -> str:
    h = hashlib.sha256()
    for _, record in records:
        h.update(record.model_dump_json().encode())
        h.update(b"\n")
    return "ds-" + h.hexdigest()[:16]


def store_version(root: Path, name: str, fmt: str, source: Path, records: list[tuple[int, Record]],
                  stats: dict[str, Any]) -> Version:
    """Store the records under their content hash; the same content gives back the existing version."""
    version = content_id(records)
    target = root / version
    created = not target.exists()
    if created:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
        try:
            with (tmp / "records.jsonl").open("w", encoding="utf-8") as f:
                for _, record in records:
                    f.write(record.model_dump_json() + "\n")
            meta = {"id": version, "name": name, "format": fmt, "source": str(source.resolve()),
                    "examples": len(records), "lines": [line for line, _ in records], "stats": stats,
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            try:
                os.rename(tmp, target)  # atomic; fails if another import stored it first
            except OSError:
                created = False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with (root / "imports.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"name": name, "version": version, "source": str(source.resolve()), "new": created,
                            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n")
    return Version(version, target, _read_meta(target), created)


def _read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / "meta.json").read_text())


def list_imports(root: Path) -> list[dict[str, Any]]:
    log = root / "imports.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def resolve_version(root: Path, ref: str) -> Version:
    """A version id (or a unique prefix), or a dataset name (its latest import). Only a plain name: `..`, `.`
    or a path never reaches a folder beside the versions."""
    if ref in {"", ".", ".."} or Path(ref).name != ref:
        raise DataError(f"'{ref}' is not a dataset version or name; see `tuneloop data list` for what is imported")
    if (root / ref).is_dir():
        return Version(ref, root / ref, _read_meta(root / ref))
    matches = sorted(p for p in root.glob(f"{ref}*") if p.is_dir() and p.name.startswith("ds-")) if ref.startswith("ds-") else []
    if len(matches) == 1:
        return Version(matches[0].name, matches[0], _read_meta(matches[0]))
    named = [entry for entry in list_imports(root) if entry["name"] == ref]
    if named:
        version = named[-1]["version"]
        return Version(version, root / version, _read_meta(root / version))
    if len(matches) > 1:
        raise DataError(f"dataset version prefix '{ref}' is ambiguous: {', '.join(p.name for p in matches)}")
    raise DataError(f"'{ref}' is neither an existing file nor a dataset version or name in {root}; "
                    "check the path, or see `tuneloop data list` for what is imported")
