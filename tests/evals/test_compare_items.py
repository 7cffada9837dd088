"""Per-item scores behind the comparison table, and the items behind a metric's difference: for accuracy exactly
McNemar's discordant pairs, the largest differences first for graded metrics, lower loss favoured."""

from __future__ import annotations

import pytest

from tuneloop.evals.compare import Outcome, item_scores, metric_disagreements


def test_classification_items_are_the_discordant_pairs_mcnemar_counts():
    gold = ["a", "b", "a", "b", "a"]
    first = Outcome("base", "model", "m", predictions=["a", "a", "b", "b", "a"])   # right on 0, 3, 4
    other = Outcome("tuned", "run", "r", predictions=["a", "b", "a", "a", "b"])   # right on 0, 1, 2
    scores = item_scores("classification", [first, other], gold)
    items = [{"index": i, "scores": s} for i, s in enumerate(scores)]
    found = metric_disagreements(items, "accuracy", "base", "tuned")
    assert sorted(i["index"] for i in found) == [1, 2, 3, 4]
    assert {i["index"]: i["favours"] for i in found} == {1: "tuned", 2: "tuned", 3: "base", 4: "base"}
    wins = sum(1 for i in found if i["favours"] == "tuned")
    assert (wins - (len(found) - wins)) / len(gold) == pytest.approx(3 / 5 - 3 / 5)


def test_conversation_items_rank_by_the_size_of_the_difference_and_lower_loss_wins():
    gold = ["the parcel is late", "refund sent", "hello"]
    first = Outcome("base", "model", "m", loss_sums=[4.0, 2.0, 3.0], tokens=[4, 2, 1],
                    answers=["the parcel is late", "no", "hello"])
    other = Outcome("tuned", "run", "r", loss_sums=[2.0, 2.0, 6.0], tokens=[4, 2, 1],
                    answers=["the parcel is late", "refund sent", "hi"])
    scores = item_scores("sft", [first, other], gold)
    assert scores[0]["base"]["loss"] == 1.0 and scores[0]["tuned"]["loss"] == 0.5
    items = [{"index": i, "scores": s} for i, s in enumerate(scores)]
    loss = metric_disagreements(items, "loss", "base", "tuned")
    assert [(i["index"], i["favours"]) for i in loss] == [(2, "base"), (0, "tuned")]  # |+3| before |-0.5|
    exact = metric_disagreements(items, "exact_match", "base", "tuned")
    assert [(i["index"], i["favours"]) for i in exact] == [(1, "tuned"), (2, "base")]
    assert metric_disagreements(items, "rouge_l", "base", "base") == []
