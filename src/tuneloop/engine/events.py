"""events.jsonl: one JSON object per line for each step, evaluation, checkpoint, error and the end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Listener = Callable[[dict[str, Any]], None]


class EventLog:
    def __init__(self, path: Path, listener: Listener | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = listener

    def write(self, type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type, "time": round(time.time(), 3), **fields}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
        if self.listener:
            self.listener(event)
        return event


def read_events(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
