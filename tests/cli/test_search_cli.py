"""`tuneloop search` end to end on the tiny model: the trials table, the best recipe as YAML, the plots, --json;
and a bad space or recipe as one line naming the problem (exit 2), with nothing queued."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from tests.conftest import chat_rows, write_jsonl
from tuneloop.cli.main import app

runner = CliRunner()


def files(tmp_path, model, space):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(model), "data": {"train": str(data), "validation": str(data)},
                                      "hyperparameters": {"max_steps": 2, "batch_size": 4},
                                      "evaluation": {"every_steps": 1, "each_epoch": False}}))
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(space))
    return recipe, space_file


def test_search_prints_the_trials_and_writes_the_best_recipe_and_plots(tmp_path, tiny_chat_model, home):
    recipe, space = files(tmp_path, tiny_chat_model, {"adapter.r": [4, 8]})
    result = runner.invoke(app, ["search", str(recipe), "--space", str(space), "--sampler", "grid", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout[result.stdout.index("{"):])
    assert [t["state"] for t in view["trial_rows"]] == ["COMPLETE", "COMPLETE"]
    assert sorted(t["params"]["adapter.r"] for t in view["trial_rows"]) == [4, 8]
    best = yaml.safe_load(open(view["written"]["best"]).read())
    assert best["adapter"]["r"] == view["best"]["params"]["adapter.r"]
    assert set(view["written"]["plots"]) == {"history", "parallel", "importances"}
    table = runner.invoke(app, ["jobs", "list", "--kind", "search-trial"])
    assert table.exit_code == 0 and table.output.count("search-trial") == 2


def test_a_bad_space_is_one_line_naming_it(tmp_path, tiny_chat_model, home):
    recipe, space = files(tmp_path, tiny_chat_model, {"rank": [4, 8]})
    result = runner.invoke(app, ["search", str(recipe), "--space", str(space)])
    assert result.exit_code == 2
    assert "'rank' is not a recipe field a search can vary; the fields are: model, method" in result.output
    assert "adapter.r" in result.output
    recipe, space = files(tmp_path, tiny_chat_model, {"adapter.r": {"type": "int", "low": 8, "high": 4}})
    result = runner.invoke(app, ["search", str(recipe), "--space", str(space), "--sampler", "grid"])
    assert result.exit_code == 2 and "low 8 must be below high 4" in result.output
    empty = runner.invoke(app, ["jobs", "list", "--kind", "search-trial"])
    assert "no search-trial jobs yet" in empty.output
