"""Bradley–Terry against choix's worked example (tests/data/testcase-pairwise-2.json in lucasmaystre/choix: the
strengths of 3 items from [[0,1],[0,1],[1,2],[2,0]]), ties as half wins, win rates against scipy's bootstrap, and
kappa between people and a judge over the pairs both judged, whatever order the pair was shown in."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap

from tuneloop.evals.agreement import cohen_kappa
from tuneloop.evals.arena import Judgement, bradley_terry, judge_agreement, ranking, strengths, win_rates

CHOIX = [1.43586088, 0.62035049, 0.94378863]
"""exp θ / mean(exp θ) for choix's pairwise test case 2 (alpha 1e-6 shifts it by 4e-7: tolerance 1e-6)."""


def test_bradley_terry_matches_the_worked_example():
    data = np.array([[0, 1], [0, 1], [1, 2], [2, 0]])
    theta = bradley_terry(3, data[:, 0], data[:, 1])
    assert strengths(theta) == pytest.approx(CHOIX, abs=1e-6)
    assert theta.sum() == pytest.approx(0, abs=1e-12)


def test_a_tie_is_half_a_win_each_way_and_the_ranking_has_intervals():
    even = [Judgement("x", "y", "tie")] * 4
    assert strengths(bradley_terry(2, *_games(even))) == pytest.approx([1, 1], abs=1e-6)
    # `winner` names the side: a is the pair's first model, b its second
    judged = [Judgement("a", "b", "a")] * 6 + [Judgement("a", "b", "b")] * 2 + [Judgement("b", "c", "a")] * 5 + \
        [Judgement("c", "b", "b"), Judgement("a", "c", "a"), Judgement("c", "a", "tie")]
    rows = ranking(["a", "b", "c"], judged, resamples=200)
    assert [r["model"] for r in rows] == ["a", "b", "c"] and [r["rank"] for r in rows] == [1, 2, 3]
    assert all(r["low"] <= r["strength"] <= r["high"] for r in rows)


def _games(judgements):
    from tuneloop.evals.arena import _games as games

    return games(judgements, {"x": 0, "y": 1})


def test_win_rates_match_scipys_bootstrap_of_each_models_scores():
    judged = [Judgement("a", "b", "a"), Judgement("b", "a", "b"), Judgement("a", "b", "tie"), Judgement("a", "c", "a"),
              Judgement("c", "a", "a")]
    rows = {r["model"]: r for r in win_rates(["a", "b", "c"], judged, resamples=500)}
    a_scores = np.array([1, 1, 0.5, 1, 0])  # won as side a, won as side b, tied, won, lost as side b
    assert rows["a"]["win_rate"] == pytest.approx(a_scores.mean()) and rows["a"]["games"] == 5
    expected = bootstrap((a_scores,), np.mean, n_resamples=500, method="percentile", paired=True, vectorized=True,
                         rng=np.random.default_rng(0)).confidence_interval
    assert (rows["a"]["low"], rows["a"]["high"]) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert rows["c"]["ties"] == 0 and rows["b"]["ties"] == 1


def test_people_and_a_judge_agree_whatever_side_the_pair_was_shown_on():
    people = [Judgement("m1", "m2", "a", item="1"), Judgement("m2", "m1", "a", item="2"),
              Judgement("m1", "m2", "tie", item="3"), Judgement("m1", "m2", "b", item="4")]
    judge = [Judgement("m2", "m1", "b", item="1"), Judgement("m1", "m2", "b", item="2"),
             Judgement("m2", "m1", "tie", item="3"), Judgement("m1", "m2", "a", item="4"),
             Judgement("m1", "m2", "a", item="5")]
    found = judge_agreement(people, judge)
    assert found["pairs"] == 4 and found["agreement"] == 0.75
    assert found["kappa"] == pytest.approx(cohen_kappa(["m1", "m2", "tie", "m2"], ["m1", "m2", "tie", "m1"]).value)
