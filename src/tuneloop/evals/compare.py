"""Compare candidates (models, fine-tunes, prompt baselines) on one test set: what each answered on every item,
then each metric with a 95% bootstrap interval and a paired test against the first candidate (McNemar for accuracy,
a paired bootstrap for the rest), and a plot of the table.

Classification is scored by the likelihood of each label (or a head's probabilities) on every row; conversations by
the teacher-forced loss of the reference answers on every row, and exact match and ROUGE-L of greedy answers on the
first `max_generate` rows. `services/comparisons.py` loads the candidates and writes the results."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.evals import stats
from tuneloop.evals.metrics import exact_match, rouge

METRICS = {"classification": ("accuracy", "macro_f1"), "sft": ("loss", "exact_match", "rouge_l")}
LOWER_IS_BETTER = {"loss"}
Progress = Callable[[int], None]


@dataclass
class Outcome:
    """One candidate's answers on every item, and how fast it gave them."""

    name: str
    kind: str
    """'model' (a base or a model folder), 'run' (a fine-tune: a run folder or a checkpoint) or 'prompt'."""
    ref: str
    """What was loaded: the model name or folder; a prompt baseline's base model."""
    predictions: list[str] | None = None
    """Classification: the predicted label of each item."""
    loss_sums: list[float] | None = None
    """Conversations: each item's summed loss over its reference answer tokens, and how many there were."""
    tokens: list[int] | None = None
    answers: list[str] | None = None
    """Conversations: greedy answers to the first items."""
    latency_ms: list[float] = field(default_factory=list)
    """Single-item requests, one at a time."""
    tokens_per_s: float | None = None
    """Classification: prompt tokens scored per second; conversations: answer tokens generated per second."""
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- scoring
def timed(outcome: Outcome, single: Callable[[int], Any], items: int, samples: int) -> None:
    """Latency of `samples` single-item requests (spread over the items)."""
    for i in np.linspace(0, items - 1, min(samples, items)).astype(int).tolist():
        started = time.perf_counter()
        single(i)
        outcome.latency_ms.append((time.perf_counter() - started) * 1000)


# ---------------------------------------------------------------------- statistics
def _indices(values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(v, -1) for v in values])


def comparison_rows(task: str, outcomes: Sequence[Outcome], gold: Sequence[str], labels: Sequence[str] = (),
                    resamples: int = stats.RESAMPLES, seed: int = 0) -> list[dict[str, Any]]:
    """One row per candidate: each metric's value and 95% interval, and (after the first) its paired test against
    the first candidate."""
    first = outcomes[0]
    rows = []
    for outcome in outcomes:
        metrics: dict[str, Any] = {}
        versus: dict[str, Any] = {}
        if task == "classification":
            truth, predicted = _indices(gold, labels), _indices(outcome.predictions or [], labels)
            baseline = _indices(first.predictions or [], labels)

            def f1(g: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
                return stats.macro_f1(g, p, len(labels), axis=axis)

            metrics["accuracy"] = stats.bootstrap_ci(stats.accuracy, truth, predicted, n_resamples=resamples,
                                                     seed=seed).to_dict()
            metrics["macro_f1"] = stats.bootstrap_ci(f1, truth, predicted, n_resamples=resamples, seed=seed).to_dict()
            if outcome is not first:
                versus["accuracy"] = stats.mcnemar(truth == predicted, truth == baseline, resamples, seed=seed).to_dict()
                versus["macro_f1"] = stats.paired_bootstrap(f1, (truth, predicted), (truth, baseline), resamples,
                                                            seed=seed).to_dict()
        else:
            loss, tokens = np.array(outcome.loss_sums), np.array(outcome.tokens)
            metrics["loss"] = stats.bootstrap_ci(stats.ratio_of_sums, loss, tokens, n_resamples=resamples,
                                                 seed=seed).to_dict()
            if outcome is not first:
                versus["loss"] = stats.paired_bootstrap(stats.ratio_of_sums, (loss, tokens),
                                                        (np.array(first.loss_sums), np.array(first.tokens)),
                                                        resamples, seed=seed).to_dict()
            if outcome.answers:
                for name, scores in generation_scores(outcome.answers, gold).items():
                    metrics[name] = stats.bootstrap_ci(stats.mean, scores, n_resamples=resamples, seed=seed).to_dict()
                    if outcome is not first and first.answers:
                        base = generation_scores(first.answers, gold)[name]
                        versus[name] = stats.paired_bootstrap(stats.mean, (scores,), (base,), resamples,
                                                              seed=seed).to_dict()
        latency = sorted(outcome.latency_ms)
        rows.append({"candidate": outcome.name, "kind": outcome.kind, "ref": outcome.ref, "metrics": metrics,
                     "vs_first": versus,
                     "latency_ms_p50": float(np.percentile(latency, 50)) if latency else None,
                     "latency_ms_p90": float(np.percentile(latency, 90)) if latency else None,
                     "tokens_per_s": outcome.tokens_per_s, "seconds": outcome.seconds, **outcome.detail})
    return rows


def generation_scores(answers: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    pairs = list(zip(answers, references))
    return {"exact_match": np.array([float(exact_match(a, r)) for a, r in pairs]),
            "rouge_l": np.array([rouge("rougeL", a, r) for a, r in pairs])}


def disagreements(task: str, outcomes: Sequence[Outcome], gold: Sequence[str]) -> list[int]:
    """Items where the candidates' answers differ (classification: the label; conversations: exact match)."""
    if task == "classification":
        return [i for i in range(len(gold)) if len({o.predictions[i] for o in outcomes if o.predictions}) > 1]
    generated = min((len(o.answers or []) for o in outcomes), default=0)
    return [i for i in range(generated)
            if len({exact_match(o.answers[i], gold[i]) for o in outcomes if o.answers}) > 1]


def item_scores(task: str, outcomes: Sequence[Outcome], gold: Sequence[str]) -> list[dict[str, dict[str, float]]]:
    """Each item's score under each metric, per candidate: what the table's metrics average (classification:
    `correct`, 1 or 0, behind accuracy and macro-F1; conversations: `loss` per answer token, and `exact_match` and
    `rouge_l` where an answer was generated)."""
    out: list[dict[str, dict[str, float]]] = [{} for _ in gold]
    for o in outcomes:
        generated = generation_scores(o.answers, gold[:len(o.answers)]) if o.answers else {}
        for i, reference in enumerate(gold):
            scores: dict[str, float] = {}
            if task == "classification":
                scores["correct"] = float(o.predictions is not None and o.predictions[i] == reference)
            else:
                if o.loss_sums is not None and o.tokens is not None and o.tokens[i]:
                    scores["loss"] = float(o.loss_sums[i] / o.tokens[i])
                for name, values in generated.items():
                    if i < len(values):
                        scores[name] = float(values[i])
            out[i][o.name] = scores
    return out


ITEM_METRIC = {"accuracy": "correct", "macro_f1": "correct", "loss": "loss", "exact_match": "exact_match",
               "rouge_l": "rouge_l"}
"""The per-item score behind each table metric."""


def metric_disagreements(items: Sequence[dict[str, Any]], metric: str, first: str, other: str
                         ) -> list[dict[str, Any]]:
    """The items behind a difference in `metric` between `other` and `first`: where their per-item scores differ
    (for accuracy, the discordant pairs McNemar counts), the largest differences first, in favour of `other` or
    not. `items`: items.jsonl's rows (with `scores`)."""
    key = ITEM_METRIC[metric]
    found = []
    for item in items:
        a, b = item["scores"].get(first, {}).get(key), item["scores"].get(other, {}).get(key)
        if a is None or b is None or abs(a - b) < 1e-12:
            continue
        better = b < a if metric in LOWER_IS_BETTER else b > a
        found.append({**item, "delta": b - a, "favours": other if better else first})
    return sorted(found, key=lambda item: (-abs(item["delta"]), item["index"]))


# ---------------------------------------------------------------------- plot
def plot_comparison(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Each metric a panel, each candidate a point with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(m for row in rows for m in row["metrics"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 0.55 * len(rows) + 1.6), squeeze=False)
    y = np.arange(len(rows))[::-1]
    colours = plt.get_cmap("tab10").colors
    for ax, name in zip(axes[0], names):
        for row, at in zip(rows, y):
            m = row["metrics"].get(name)
            if m is None:
                continue
            colour = colours[list(rows).index(row) % len(colours)]
            ax.errorbar(m["value"], at, xerr=[[m["value"] - m["low"]], [m["high"] - m["value"]]], fmt="o",
                        color=colour, capsize=4)
        ax.set_yticks(y, [row["candidate"] for row in rows])
        ax.set_title(name.replace("_", " ") + (" (lower is better)" if name in LOWER_IS_BETTER else ""), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        if ax is not axes[0][0]:
            ax.tick_params(labelleft=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
