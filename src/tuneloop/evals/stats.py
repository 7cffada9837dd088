"""Confidence intervals and paired tests for comparing models on one test set.

Every interval is a percentile bootstrap from `scipy.stats.bootstrap` over the test items (paired: one resample of
items serves every array), with a fixed seed, so a comparison prints the same numbers each time. Candidates are
compared with the first on the same items: McNemar's test for accuracy (exact binomial when fewer than 25 items
differ, else the chi-square with continuity correction, as statsmodels' `mcnemar`), and a paired bootstrap of the
difference for any other metric. The tests in tests/evals/test_stats.py check these against scipy, scikit-learn and
statsmodels on fixed data.

Statistics here take arrays whose last axis is the items (`axis=-1`), so scipy can evaluate all resamples at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

RESAMPLES = 2000
CONFIDENCE = 0.95
EXACT_BELOW = 25
"""McNemar: below this many discordant items the exact binomial test, from it the chi-square approximation."""


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """A candidate against the first one on the same items: delta = candidate - first."""

    test: str
    """'mcnemar' or 'paired bootstrap'."""
    delta: float
    low: float
    high: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- statistics over the last axis
def mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(values, axis=axis)


def accuracy(gold: np.ndarray, predicted: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(gold == predicted, axis=axis)


def macro_f1(gold: np.ndarray, predicted: np.ndarray, n_labels: int, axis: int = -1) -> np.ndarray:
    """Unweighted mean F1 over the labels (indices 0..n_labels-1) that occur among the gold labels or the
    predictions, as scikit-learn's f1_score(average="macro") with its default labels. A resample that misses a
    rare label altogether averages over the labels it has, rather than counting that label as an F1 of 0. A
    prediction outside the labels (-1) is wrong for its gold label and counts for no label."""
    gold, predicted = np.moveaxis(gold, axis, -1), np.moveaxis(predicted, axis, -1)
    scores, present = [], []
    for label in range(n_labels):
        is_gold, is_predicted = gold == label, predicted == label
        tp = np.sum(is_gold & is_predicted, axis=-1)
        wrong = np.sum(is_gold ^ is_predicted, axis=-1)                      # false positives + false negatives
        denominator = 2 * tp + wrong
        scores.append(np.divide(2 * tp, denominator, out=np.zeros(denominator.shape), where=denominator > 0))
        present.append(denominator > 0)
    return np.sum(scores, axis=0) / np.maximum(np.sum(present, axis=0), 1)


def ratio_of_sums(numerator: np.ndarray, denominator: np.ndarray, axis: int = -1) -> np.ndarray:
    """sum(numerator) / sum(denominator): loss per token from each item's summed loss and token count."""
    return np.sum(numerator, axis=axis) / np.sum(denominator, axis=axis)


Statistic = Callable[..., np.ndarray]


# ---------------------------------------------------------------------- intervals and tests
def bootstrap_ci(statistic: Statistic, *samples: np.ndarray, n_resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """The statistic on the items, and its percentile bootstrap interval (items resampled together)."""
    arrays = tuple(np.asarray(s) for s in samples)
    value = float(statistic(*arrays, axis=-1))
    if len(arrays[0]) < 2:
        return Interval(value, value, value)
    result = stats.bootstrap(arrays, statistic, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", paired=True, vectorized=True, axis=-1,
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Interval(value, float(low), float(high))


def paired_bootstrap(statistic: Statistic, candidate: tuple[np.ndarray, ...], first: tuple[np.ndarray, ...],
                     n_resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> PairedTest:
    """statistic(candidate) - statistic(first) over the same items, its percentile interval, and a two-sided
    p-value: twice the smaller share of resampled differences on either side of zero (at most 1)."""
    k = len(candidate)
    arrays = tuple(np.asarray(s) for s in (*candidate, *first))

    def difference(*xs: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(*xs[:k], axis=axis) - statistic(*xs[k:], axis=axis)

    delta = float(difference(*arrays))
    if len(arrays[0]) < 2 or all(np.array_equal(a, b) for a, b in zip(arrays[:k], arrays[k:])):
        return PairedTest("paired bootstrap", delta, delta, delta, 1.0)
    result = stats.bootstrap(arrays, difference, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", paired=True, vectorized=True, axis=-1,
                             rng=np.random.default_rng(seed))
    spread = result.bootstrap_distribution
    low, high = result.confidence_interval
    if not np.all(np.isfinite(spread)) or not np.isfinite(delta):
        return PairedTest("paired bootstrap", delta, float("nan"), float("nan"), float("nan"))
    p_value = min(1.0, 2 * min(float(np.mean(spread <= 0)), float(np.mean(spread >= 0))))
    return PairedTest("paired bootstrap", delta, float(low), float(high), p_value)


def mcnemar(candidate_correct: np.ndarray, first_correct: np.ndarray, n_resamples: int = RESAMPLES,
            confidence: float = CONFIDENCE, seed: int = 0) -> PairedTest:
    """McNemar's test on the items one model got right and the other wrong; delta is the accuracy difference
    with its paired bootstrap interval."""
    a, b = np.asarray(candidate_correct, dtype=bool), np.asarray(first_correct, dtype=bool)
    only_candidate, only_first = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_candidate + only_first
    if discordant == 0:
        p_value = 1.0
    elif discordant < EXACT_BELOW:
        p_value = float(stats.binomtest(min(only_candidate, only_first), discordant, 0.5).pvalue)
    else:
        statistic = (abs(only_candidate - only_first) - 1) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
    interval = paired_bootstrap(mean, (a.astype(float),), (b.astype(float),), n_resamples, confidence, seed)
    return PairedTest("mcnemar", interval.delta, interval.low, interval.high, min(1.0, p_value))
