"""The order training examples come in: length-grouped (default), random, or the data's own order."""

from __future__ import annotations

import pytest

from tests.conftest import chat_rows, write_jsonl
from tuneloop.config.recipe import parse_recipe
from tuneloop.engine.data import epoch_batches, load_recipe_records

LENGTHS = [(7 * i) % 23 + 1 for i in range(50)]


@pytest.mark.parametrize("order", ["length", "random", "sequential"])
def test_every_order_covers_each_example_once_and_repeats_for_a_resume(order):
    batches = epoch_batches(LENGTHS, 4, seed=1, epoch=0, order=order)
    assert sorted(i for b in batches for i in b) == list(range(50))
    assert all(len(b) == 4 for b in batches[:-1]) or order == "length"
    assert batches == epoch_batches(LENGTHS, 4, seed=1, epoch=0, order=order)


def test_sequential_keeps_the_data_order_every_epoch():
    for epoch in (0, 1):
        batches = epoch_batches(LENGTHS, 4, seed=1, epoch=epoch, order="sequential")
        assert [i for b in batches for i in b] == list(range(50))


def test_random_shuffles_examples_differently_each_epoch_without_grouping_by_length():
    first = [i for b in epoch_batches(LENGTHS, 4, seed=1, epoch=0, order="random") for i in b]
    second = [i for b in epoch_batches(LENGTHS, 4, seed=1, epoch=1, order="random") for i in b]
    assert first != list(range(50)) and second != first


def test_length_batches_hold_similar_lengths():
    spread = lambda batches: sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches)  # noqa: E731
    assert spread(epoch_batches(LENGTHS, 4, 1, 0, "length")) < spread(epoch_batches(LENGTHS, 4, 1, 0, "random")) / 3


def test_an_unknown_order_is_named():
    with pytest.raises(ValueError, match="unknown order 'shortest'"):
        epoch_batches(LENGTHS, 4, 1, 0, "shortest")


def test_a_validation_split_keeps_the_training_order(tmp_path):
    rows = chat_rows(40)
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = parse_recipe({"data": {"train": str(path), "validation_split": 0.25},
                           "hyperparameters": {"order": "sequential"}})
    records = load_recipe_records(recipe, tmp_path)
    position = {r["messages"][1]["content"]: i for i, r in enumerate(rows)}
    train = [position[r.messages[1].content] for r in records.train]
    held_out = {position[r.messages[1].content] for r in records.validation}
    assert len(train) == 30 and len(held_out) == 10 and not held_out & set(train)
    assert train == sorted(train) and held_out != set(range(30, 40))
