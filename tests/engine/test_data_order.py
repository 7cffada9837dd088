"""The order training examples come in: length-grouped (default), random, or the data's own order."""

from __future__ import annotations

import pytest

from tests.conftest import chat_rows, write_jsonl
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.data import epoch_batches, load_recipe_records
from tuneloop.engine.loop import Loop

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


def test_random_shuffles_examples_differently_each_epoch():
    first = [i for b in epoch_batches(LENGTHS, 4, seed=1, epoch=0, order="random") for i in b]
    second = [i for b in epoch_batches(LENGTHS, 4, seed=1, epoch=1, order="random") for i in b]
    assert first != list(range(50)) and second != first


def test_length_batches_hold_similar_lengths():
    spread = lambda batches: sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches)  # noqa: E731
    assert spread(epoch_batches(LENGTHS, 4, 1, 0, "length")) < spread(epoch_batches(LENGTHS, 4, 1, 0, "random")) / 3


def test_an_unknown_order_is_named():
    with pytest.raises(ValueError, match="unknown order 'shortest'"):
        epoch_batches(LENGTHS, 4, 1, 0, "shortest")


def _positions(rows, records):
    position = {r["messages"][1]["content"]: i for i, r in enumerate(rows)}
    return [position[r.messages[1].content] for r in records]


def test_a_validation_split_keeps_the_training_order_for_sequential(tmp_path):
    rows = chat_rows(40)
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    split = {"train": str(path), "validation_split": 0.25}
    ordered = load_recipe_records(parse_recipe({"data": split, "hyperparameters": {"order": "sequential"}}), tmp_path)
    default = load_recipe_records(parse_recipe({"data": split}), tmp_path)
    assert parse_recipe({"data": split}).hyperparameters.order == "length"
    train, held_out = _positions(rows, ordered.train), _positions(rows, ordered.validation)
    assert len(train) == 30 and len(held_out) == 10 and not set(held_out) & set(train)
    assert train == sorted(train) and set(held_out) != set(range(30, 40))
    # the same examples held out either way; other orders keep the split's shuffled pool, as before
    assert set(_positions(rows, default.validation)) == set(held_out)
    assert sorted(_positions(rows, default.train)) == train and _positions(rows, default.train) != train


def test_sequential_takes_sources_in_turn_and_a_weights_sample_in_order(tmp_path):
    first, second = chat_rows(10), chat_rows(30)[10:]
    a, b = write_jsonl(tmp_path / "a.jsonl", first), write_jsonl(tmp_path / "b.jsonl", second)
    recipe = parse_recipe({"data": {"train": [{"path": str(a), "weight": 1.5}, {"path": str(b), "weight": 0.5}]},
                           "hyperparameters": {"order": "sequential"}})
    train = _positions(first + second, load_recipe_records(recipe, tmp_path).train)
    assert train[:10] == list(range(10)) and len(train) == 25
    extra, sampled = train[10:15], train[15:]
    assert extra == sorted(extra) and set(extra) <= set(range(10))
    assert sampled == sorted(sampled) and set(sampled) <= set(range(10, 30)) and len(sampled) == 10


def test_the_loop_trains_in_the_recipes_order(tiny_chat_model, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", chat_rows(20))
    recipe = parse_recipe({"model": str(tiny_chat_model), "data": {"train": str(path)},
                           "hyperparameters": {"order": "sequential", "batch_size": 4, "max_steps": 2},
                           "seed": 5})
    loop = Loop(recipe, tmp_path / "run", get_settings())
    loop.setup()
    assert [i for b in loop._micro_batches() for i in b] == list(range(20))
    loop.state["batch_pos"] = 2  # a resume mid-epoch continues where it stopped
    assert loop._micro_batches() == [[8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]
