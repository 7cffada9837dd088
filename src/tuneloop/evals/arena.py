"""Pairwise judgements of models (the playground, the arena): win rates with bootstrap intervals, a Bradley–Terry
ranking with bootstrap intervals, and agreement (Cohen's kappa) between people and an LLM judge on the pairs both
judged. A tie counts half a win each way.

Bradley–Terry: P(i beats j) = σ(θ_i − θ_j), θ fitted by maximum likelihood (scipy's BFGS on the negative
log-likelihood with its gradient, and an L2 penalty of 1e-6/2 · |θ|² so a model that never lost still has a finite
strength, as choix's `opt_pairwise` does). Strengths are reported as exp θ over their mean (1 is average)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tuneloop.evals import stats
from tuneloop.evals.agreement import cohen_kappa

Winner = Literal["a", "b", "tie"]
ALPHA = 1e-6


@dataclass(frozen=True)
class Judgement:
    """One pair judged: model `a` against model `b` on an item; `winner` a, b or tie; `by` a person or a judge."""

    a: str
    b: str
    winner: Winner
    item: str = ""
    by: str = ""


def _games(judgements: Sequence[Judgement], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(winner, loser, weight) rows: a win is one game of weight 1, a tie two games of weight ½ each way."""
    winners, losers, weights = [], [], []
    for j in judgements:
        a, b = index[j.a], index[j.b]
        if j.winner == "tie":
            winners += [a, b]
            losers += [b, a]
            weights += [0.5, 0.5]
        else:
            winners.append(a if j.winner == "a" else b)
            losers.append(b if j.winner == "a" else a)
            weights.append(1.0)
    return np.array(winners, dtype=int), np.array(losers, dtype=int), np.array(weights, dtype=float)


def bradley_terry(n_items: int, winners: np.ndarray, losers: np.ndarray, weights: np.ndarray | None = None,
                  alpha: float = ALPHA) -> np.ndarray:
    """θ (mean zero) maximising Σ w · log σ(θ_winner − θ_loser) − alpha/2 · |θ|²."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    w = np.ones(len(winners)) if weights is None else weights

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = theta[winners] - theta[losers]
        value = -(w * log_expit(margin)).sum() + alpha / 2 * theta @ theta
        push = w * expit(-margin)
        grad = alpha * theta
        np.add.at(grad, winners, -push)
        np.add.at(grad, losers, push)
        return float(value), grad

    fitted = minimize(objective, np.zeros(n_items), jac=True, method="BFGS", options={"gtol": 1e-10})
    return fitted.x - fitted.x.mean()


def strengths(theta: np.ndarray) -> np.ndarray:
    """exp θ over its mean: 1 is an average model, 2 one that beats an average one two times in three."""
    e = np.exp(theta)
    return e / e.mean()


def ranking(models: Sequence[str], judgements: Sequence[Judgement], resamples: int = 1000, seed: int = 0
            ) -> list[dict[str, Any]]:
    """Each model's Bradley–Terry strength with a 95% percentile bootstrap interval (judgements resampled with
    `scipy.stats.bootstrap`), best first."""
    from scipy.stats import bootstrap

    index = {m: i for i, m in enumerate(models)}
    winners, losers, weights = _games(judgements, index)
    if not len(winners):
        return [{"model": m, "strength": None, "low": None, "high": None, "rank": None} for m in models]
    point = strengths(bradley_terry(len(models), winners, losers, weights))
    rows = np.arange(len(judgements))
    per_judgement = [_games([j], index) for j in judgements]

    def statistic(sample: np.ndarray) -> np.ndarray:
        parts = [per_judgement[int(i)] for i in sample]
        w, l_, wt = (np.concatenate([p[k] for p in parts]) for k in range(3))
        return strengths(bradley_terry(len(models), w, l_, wt))

    low = high = np.full(len(models), np.nan)
    if len(judgements) > 1:
        result = bootstrap((rows,), statistic, vectorized=False, n_resamples=resamples, method="percentile",
                           confidence_level=0.95, rng=np.random.default_rng(seed))
        low, high = result.confidence_interval.low, result.confidence_interval.high
    order = np.argsort(-point)
    out = []
    for rank, i in enumerate(order, 1):
        out.append({"model": models[i], "strength": float(point[i]), "low": _finite(low[i]), "high": _finite(high[i]),
                    "rank": rank})
    return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def win_rates(models: Sequence[str], judgements: Sequence[Judgement], resamples: int = 2000, seed: int = 0
              ) -> list[dict[str, Any]]:
    """Each model's share of its games won (a tie half), with a 95% bootstrap interval over its games."""
    out = []
    for model in models:
        scores = np.array([1.0 if (j.winner == "a") == (j.a == model) and j.winner != "tie" else
                           0.5 if j.winner == "tie" else 0.0 for j in judgements if model in (j.a, j.b)])
        if not len(scores):
            out.append({"model": model, "games": 0, "win_rate": None, "low": None, "high": None})
            continue
        interval = stats.bootstrap_ci(stats.mean, scores, n_resamples=resamples, seed=seed)
        out.append({"model": model, "games": int(len(scores)), "wins": int((scores == 1).sum()),
                    "ties": int((scores == 0.5).sum()), "win_rate": interval.value,
                    "low": _finite(interval.low), "high": _finite(interval.high)})
    return out


def judge_agreement(people: Sequence[Judgement], judge: Sequence[Judgement]) -> dict[str, Any]:
    """Cohen's kappa between people and a judge on the (item, pair) both judged, each verdict written as which
    model won (or tie) so the order the pair was shown in does not matter."""
    def verdicts(judgements: Sequence[Judgement]) -> dict[tuple[str, str, str], str]:
        out: dict[tuple[str, str, str], str] = {}
        for j in judgements:
            pair = tuple(sorted((j.a, j.b)))
            out[(j.item, *pair)] = "tie" if j.winner == "tie" else (j.a if j.winner == "a" else j.b)
        return out

    mine, theirs = verdicts(people), verdicts(judge)
    shared = sorted(set(mine) & set(theirs))
    if len(shared) < 2:
        return {"pairs": len(shared), "kappa": None, "agreement": None}
    result = cohen_kappa([mine[k] for k in shared], [theirs[k] for k in shared])
    return {"pairs": len(shared), "kappa": result.value,
            "agreement": sum(mine[k] == theirs[k] for k in shared) / len(shared)}
