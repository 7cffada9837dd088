"""Dataset statistics: counts, token lengths, turns, label balance, and a plot of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.data.records import LabelledRecord, Record, SpanRecord
from tuneloop.data.tokens import token_lengths

BATCH = 256


@dataclass
class Stats:
    examples: int = 0
    kinds: Counter = field(default_factory=Counter)
    token_lengths: list[int] = field(default_factory=list)
    messages_per_example: list[int] = field(default_factory=list)
    assistant_turns: list[int] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    multi_label: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "kinds": dict(self.kinds),
            "tokens": describe(self.token_lengths),
            "messages_per_example": describe(self.messages_per_example),
            "assistant_turns": describe(self.assistant_turns),
            "labels": dict(self.labels.most_common()),
            "multi_label_examples": self.multi_label,
        }


def describe(values: Sequence[int]) -> dict[str, float] | None:
    """min, p50, p95, max, mean and total of a list of counts."""
    if not values:
        return None
    a = np.asarray(values)
    return {"min": int(a.min()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": int(a.max()), "mean": round(float(a.mean()), 2), "total": int(a.sum())}


def compute_stats(records: Iterable[Record], tokenizer: Any = None) -> Stats:
    stats = Stats()
    batch: list[Record] = []
    for record in records:
        stats.examples += 1
        stats.kinds[record.kind] += 1
        messages = record.to_messages()
        stats.messages_per_example.append(sum(m.role != "system" for m in messages))
        stats.assistant_turns.append(sum(m.role == "assistant" for m in messages))
        if isinstance(record, LabelledRecord):
            stats.labels.update(record.labels)
            stats.multi_label += record.multi_label
        elif isinstance(record, SpanRecord):  # a span file's labels are its spans' labels
            stats.labels.update(s.label for s in record.spans)
        if tokenizer is not None:
            batch.append(record)
            if len(batch) >= BATCH:
                stats.token_lengths.extend(token_lengths(batch, tokenizer))
                batch = []
    if batch:
        stats.token_lengths.extend(token_lengths(batch, tokenizer))
    return stats


def plot_stats(stats: Stats, out: Path, title: str = "") -> Path:
    """A PNG with the token-length histogram and, for labelled data, the label bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + bool(stats.labels)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    if stats.token_lengths:
        ax.hist(stats.token_lengths, bins=min(50, max(5, len(stats.token_lengths) // 5)), color="#4C72B0")
        p95 = float(np.percentile(stats.token_lengths, 95))
        ax.axvline(p95, color="#C44E52", linestyle="--", label=f"p95 = {p95:.0f}")
        ax.legend()
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.set_title("Token lengths")
    if stats.labels:
        ax = axes[0][1]
        names, counts = zip(*stats.labels.most_common())
        ax.barh(list(names)[::-1], list(counts)[::-1], color="#55A868")
        ax.set_xlabel("examples")
        ax.set_title("Labels")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
