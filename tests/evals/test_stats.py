"""Intervals and paired tests against the reference libraries on fixed data."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from tuneloop.evals.stats import (accuracy, bootstrap_ci, macro_f1, mcnemar, mean, paired_bootstrap,
                                  ratio_of_sums)

RNG = np.random.default_rng(7)
GOLD = RNG.integers(0, 3, 60)
PRED = np.where(RNG.random(60) < 0.7, GOLD, RNG.integers(0, 3, 60))


def scipy_interval(statistic, *data, vectorized, n_resamples=2000):
    res = stats.bootstrap(data, statistic, n_resamples=n_resamples, confidence_level=0.95, method="percentile", paired=True,
                          vectorized=vectorized, rng=np.random.default_rng(0))
    return res.confidence_interval


def test_accuracy_interval_is_scipys_percentile_bootstrap():
    correct = (GOLD == PRED).astype(float)
    got = bootstrap_ci(accuracy, GOLD, PRED)
    low, high = scipy_interval(np.mean, correct, vectorized=True)
    assert got.value == pytest.approx(correct.mean(), abs=1e-12)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)
    assert got.low < got.value < got.high


def sklearn_macro(g, p):
    """scikit-learn's macro-F1 over the labels present in gold or predictions (-1, outside the labels, is none)."""
    return f1_score(g, p, labels=sorted((set(g.tolist()) | set(p.tolist())) - {-1}), average="macro",
                    zero_division=0)


def test_macro_f1_interval_equals_scikit_learns_f1_resampled_by_scipy():
    got = bootstrap_ci(lambda g, p, axis=-1: macro_f1(g, p, 3, axis=axis), GOLD, PRED, n_resamples=500)
    assert got.value == pytest.approx(sklearn_macro(GOLD, PRED), abs=1e-12)
    low, high = scipy_interval(sklearn_macro, GOLD, PRED, vectorized=False, n_resamples=500)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)


def test_a_rare_label_missing_from_a_resample_does_not_pull_the_interval_down():
    gold = np.array([0] * 30 + [1] * 30 + [2] * 30 + [3] * 6 + [4] * 2 + [5] * 2)
    perfect = bootstrap_ci(lambda g, p, axis=-1: macro_f1(g, p, 6, axis=axis), gold, gold)
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    pred = gold.copy()
    pred[:5] = 1
    got = bootstrap_ci(lambda g, p, axis=-1: macro_f1(g, p, 6, axis=axis), gold, pred, n_resamples=500)
    low, high = scipy_interval(sklearn_macro, gold, pred, vectorized=False, n_resamples=500)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)


def test_a_prediction_outside_the_labels_is_wrong_for_its_gold_label():
    gold, pred = np.array([0, 1, 1, 2]), np.array([0, -1, 1, 2])
    assert float(macro_f1(gold, pred, 3)) == pytest.approx(
        f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0), abs=1e-12)


def test_loss_per_token_is_a_ratio_of_sums():
    loss, tokens = np.array([2.0, 6.0, 1.0]), np.array([2, 3, 1])
    assert float(ratio_of_sums(loss, tokens)) == pytest.approx(9 / 6)
    got = bootstrap_ci(ratio_of_sums, loss, tokens)
    assert got.low <= got.value <= got.high


@pytest.mark.parametrize("only_a, only_b, both", [(0, 0, 30), (7, 2, 20), (30, 14, 40), (3, 25, 10)])
def test_mcnemar_equals_statsmodels(only_a, only_b, both):
    from statsmodels.stats.contingency_tables import mcnemar as reference

    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * 5, dtype=bool)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * 5, dtype=bool)
    table = [[both, only_a], [only_b, 5]]
    exact = only_a + only_b < 25
    got = mcnemar(a, b)
    assert got.test == "mcnemar"
    assert got.p_value == pytest.approx(min(1.0, reference(table, exact=exact, correction=True).pvalue), abs=1e-12)
    assert got.delta == pytest.approx((only_a - only_b) / len(a))


def test_a_candidate_equal_to_the_first_has_no_difference():
    correct = (GOLD == PRED).astype(float)
    same = paired_bootstrap(mean, (correct,), (correct,))
    assert (same.delta, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert mcnemar(correct, correct).p_value == 1.0


def test_a_clearly_better_candidate_has_an_interval_above_zero():
    first = np.concatenate([np.full(50, 0.2), np.full(50, 0.4)])
    better = first + 0.3 + 0.05 * RNG.standard_normal(100)
    result = paired_bootstrap(mean, (better,), (first,))
    assert result.low > 0.2 and result.p_value < 0.01
    # and the paired interval matches scipy's bootstrap of the per-item differences
    low, high = scipy_interval(np.mean, better - first, vectorized=True)
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-12)
