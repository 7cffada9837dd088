"""Recipes: every example in configs/ loads; errors name the field and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.config.recipe import Recipe, RecipeError, load_recipe, parse_recipe

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_is_a_config_for_each_method_and_adapter():
    recipes = [load_recipe(p) for p in CONFIGS]
    from tuneloop.engine.methods import registered

    assert {r.method for r in recipes} == set(registered())  # every registered method has a recipe to start from
    assert {r.adapter.type for r in recipes} == {"lora", "dora", "ia3", "qlora", "full", "freeze"}
    assert {r.classifier for r in recipes if r.method == "classify"} >= {"head", "auto"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_config_loads(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe) and recipe.data.train


def test_every_field_has_a_working_default():
    recipe = parse_recipe({"data": {"train": "train.jsonl"}})
    assert recipe.model == "smollm2-135m-instruct" and recipe.adapter.type == "lora"
    assert recipe.data.train[0].path == "train.jsonl"
    # left empty, they come from the method (tests/engine/test_methods.py checks every method fills them)
    hp = recipe.hyperparameters
    assert hp.learning_rate is hp.epochs is hp.warmup_ratio is hp.head_learning_rate is None


def test_errors_name_the_field_and_the_allowed_values():
    with pytest.raises(RecipeError) as info:
        parse_recipe({"adapter": {"type": "lorra"}, "hyperparameters": {"lr": 1, "batch_size": 0}})
    message = str(info.value)
    assert "adapter.type: Input should be 'lora', 'dora', 'ia3', 'qlora', 'full' or 'freeze' (got 'lorra')" in message
    assert "hyperparameters.lr: unknown field" in message
    assert "hyperparameters.batch_size" in message and "greater than or equal to 1" in message
    with pytest.raises(RecipeError, match="classifier: Input should be 'auto', 'head' or 'generative' .got 'svm'."):
        parse_recipe({"method": "classify", "classifier": "svm"})
    with pytest.raises(RecipeError, match="hyperparameters.order: Input should be 'length', 'random' or "
                                          "'sequential' .got 'shortest'."):
        parse_recipe({"hyperparameters": {"order": "shortest"}})


def test_early_stopping_needs_validation_data():
    with pytest.raises(RecipeError, match="early_stopping needs validation data"):
        parse_recipe({"data": {"train": "t.jsonl"}, "early_stopping": {"enabled": True}})


def test_bad_yaml_is_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)
