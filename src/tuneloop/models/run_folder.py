"""A run folder, owned here: its layout, its metadata (`RunMeta`, written as `final/run.json`) and its
events (`events.jsonl`, one typed class per event type). The engine writes through this module; the
worker, the catalog, the CLI, the API and the pages read through it, and loading a trained model reads
its `RunMeta` here too (which is why it lives in `models/`, below the engine).

    runs/<id>/
      recipe.yaml            what was asked (the method fills what it leaves empty)
      events.jsonl           one JSON object per line: start, step, eval, checkpoint, message, error, done...
      training.log           a worker's training child's stderr
      checkpoints/step-N/    trainable weights, optimizer, scheduler, RNG states, data position (+ model/)
      final/                 the adapter or model, tokenizer, and run.json (RunMeta)
      eval-<data>.json       saved evaluations
      rollouts.jsonl         online RL: a sample of each logging step's rollouts (prompt, completion, rewards)

Folders written before this module existed have the same layout and load as they are: unknown keys of
run.json and of an event are kept in `extra`, missing ones take their defaults.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

RECIPE, EVENTS, CHECKPOINTS, FINAL, META, TRAINING_LOG, ROLLOUTS = (
    "recipe.yaml", "events.jsonl", "checkpoints", "final", "run.json", "training.log", "rollouts.jsonl")


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def recipe(self) -> Path:
        return self.path / RECIPE

    @property
    def events(self) -> Path:
        return self.path / EVENTS

    @property
    def training_log(self) -> Path:
        return self.path / TRAINING_LOG

    @property
    def rollouts(self) -> Path:
        return self.path / ROLLOUTS

    def read_rollouts(self, limit: int = 20) -> list[dict]:
        """The last `limit` rollouts written (read from the file's end: it grows with every logging step)."""
        if not self.rollouts.exists():
            return []
        with self.rollouts.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 512 * 1024))
            tail = f.read().decode("utf-8", errors="replace").splitlines()
        out = []
        for line in tail[-limit:]:
            try:
                out.append(json.loads(line))
            except ValueError:  # the first line of the tail may be cut, the last one half-written
                continue
        return out

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}"

    @property
    def final(self) -> Path:
        return self.path / FINAL

    def evaluation(self, data_name: str) -> Path:
        return self.path / f"eval-{data_name}.json"

    def evaluations(self) -> list[Path]:
        return sorted(self.path.glob("eval-*.json"))

    def is_run(self) -> bool:
        """A run folder has its recipe (written before training starts)."""
        return self.recipe.exists()

    def has_model(self) -> bool:
        return (self.final / META).exists()

    def meta(self) -> RunMeta | None:
        return RunMeta.read(self.final) if self.has_model() else None

    def read_events(self) -> list[Event]:
        return read_events(self.events)

    def status(self) -> str:
        return run_status(self.read_events())


def find_final(path: Path) -> Path | None:
    """The folder holding run.json: `final/` of a run folder, or the folder itself (a final or a checkpoint's
    model folder)."""
    for candidate in (path / FINAL, path):
        if (candidate / META).exists():
            return candidate
    return None


# ---------------------------------------------------------------------- run.json
@dataclass
class RunMeta:
    """What a trained model is: `final/run.json` (and a checkpoint's `model/run.json`)."""

    base_model: str
    method: str
    adapter: str
    classifier: str | None = None
    """'head' (a sequence-classification head), 'token' (a token-classification head over BIO tags, whose
    `label_set` is the tags), 'reward' (a one-output head that scores a conversation), 'generative', or None (not a
    classifier)."""
    label_set: list[str] | None = None
    steps: int = 0
    started_from: str | None = None
    """The previous run this one continued (sequential fine-tuning)."""
    best_checkpoint: str | None = None
    hyperparameters: dict[str, Any] | None = None
    """The effective hyperparameters, the method's defaults filled in."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What a method adds (RunMeta keeps it as it is)."""

    @property
    def has_head(self) -> bool:
        """A sequence-classification head: a classifier's, or a reward model's one output."""
        return self.classifier in {"head", "reward"}

    @property
    def is_reward(self) -> bool:
        return self.classifier == "reward"

    @property
    def has_token_head(self) -> bool:
        return self.classifier == "token"

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMeta:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def write(self, folder: Path) -> Path:
        path = Path(folder) / META
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def read(cls, folder: Path) -> RunMeta:
        return cls.from_json(json.loads((Path(folder) / META).read_text()))


# ---------------------------------------------------------------------- events
EVENT_TYPES: dict[str, type[Event]] = {}


def _event(cls: type[Event]) -> type[Event]:
    EVENT_TYPES[cls.type] = cls
    return cls


@dataclass
class Event:
    """One line of events.jsonl. Fields a writer adds beyond the class's own are kept in `extra`."""

    type: ClassVar[str] = ""
    time: float = field(default_factory=lambda: round(time.time(), 3), kw_only=True)
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "time": self.time}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("time", "extra")})
        return {**out, **self.extra}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Event:
        cls = EVENT_TYPES.get(data.get("type", ""), UnknownEvent)
        own = {f.name: f for f in fields(cls) if f.name not in ("time", "extra")}
        rest = {k: v for k, v in data.items() if k not in own and k not in ("type", "time")}
        values = {k: data[k] for k in own if k in data}
        for name, f in own.items():  # an older writer may have left a field out
            if name not in values and f.default is MISSING and f.default_factory is MISSING:
                values[name] = None
        event = cls(**values, time=data.get("time", 0.0), extra=rest)
        if cls is UnknownEvent:
            event.name = data.get("type", "")
        return cls._finish(event)

    @classmethod
    def _finish(cls, event: Event) -> Event:
        return event


@dataclass
class UnknownEvent(Event):
    """An event type this version does not know (a newer writer's): kept, shown as its fields."""

    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": self.name, "time": self.time, **self.extra}


@_event
@dataclass
class Start(Event):
    type = "start"
    total_steps: int
    steps_per_epoch: int = 0
    train_examples: int = 0
    validation_examples: int = 0
    trainable_parameters: int = 0
    parameters: int = 0
    bf16: bool = False
    device: str = "cpu"
    dropped_examples: int = 0
    from_step: int = 0
    method: str | None = None
    hyperparameters: dict[str, Any] | None = None
    """The effective hyperparameters."""
    method_defaults: dict[str, str] | None = None
    """Which hyperparameters the method chose (the recipe left them empty), and why."""


@_event
@dataclass
class Step(Event):
    type = "step"
    step: int
    total_steps: int
    loss: float
    lr: float = 0.0
    grad_norm: float = 0.0
    epoch: float = 0.0
    tokens_per_second: float = 0.0


@_event
@dataclass
class Evaluation(Event):
    """Validation metrics; written flat (`{"type": "eval", "step": 3, "eval_loss": ...}`), as always."""

    type = "eval"
    step: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "time": self.time, "step": self.step, **self.metrics, **self.extra}

    @classmethod
    def _finish(cls, event: Event) -> Event:
        assert isinstance(event, Evaluation)
        if not event.metrics:  # the flat form: every number beside the step is a metric
            event.metrics = {k: v for k, v in event.extra.items() if isinstance(v, (int, float))}
            event.extra = {k: v for k, v in event.extra.items() if k not in event.metrics}
        return event


@_event
@dataclass
class Checkpoint(Event):
    type = "checkpoint"
    step: int
    path: str
    best: bool = False

    @property
    def model(self) -> Path:
        """The loadable model inside the checkpoint (written for adapters)."""
        return Path(self.path) / "model"


@_event
@dataclass
class Message(Event):
    """Something a person should read in the run's log (a method's note, a warning)."""

    type = "message"
    message: str
    level: str = "info"


@_event
@dataclass
class Error(Event):
    type = "error"
    message: str


@_event
@dataclass
class Resumed(Event):
    type = "resumed"
    step: int
    checkpoint: str = ""


@_event
@dataclass
class Paused(Event):
    type = "paused"
    step: int
    checkpoint: str = ""


@_event
@dataclass
class EarlyStop(Event):
    type = "early_stop"
    step: int
    metric: str
    best: float | None = None
    best_checkpoint: str | None = None


@_event
@dataclass
class Done(Event):
    type = "done"
    step: int
    final: str
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    stopped_early: bool = False
    stopped: str | None = None
    """Why the run ended before its last step ('early_stop', 'pruned', ...), or None."""


Listener = Callable[[Event], None]


class EventLog:
    """Appends typed events to events.jsonl (one line each) and hands each to a listener."""

    def __init__(self, path: Path, listener: Listener | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = listener

    def write(self, event: Event) -> Event:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event.to_json()) + "\n")
        if self.listener:
            self.listener(event)
        return event


def parse_lines(text: str) -> Iterator[Event]:
    for line in text.splitlines():
        if line.strip():
            yield Event.from_json(json.loads(line))


def read_events(path: Path) -> list[Event]:
    path = Path(path)
    return list(parse_lines(path.read_text())) if path.exists() else []


# ---------------------------------------------------------------------- statuses
RUN_STATUSES = {"done": "succeeded", "error": "failed", "paused": "paused"}
"""A run's status from its last event; with no events 'created', else 'running'."""
FINISHED = {"succeeded", "failed"}
"""Statuses that no longer change by themselves (a paused run waits to be resumed)."""


def run_status(events: list[Event]) -> str:
    if not events:
        return "created"
    return RUN_STATUSES.get(events[-1].to_json()["type"], "running")
