"""The Ray path end to end: `tuneloop search --ray local` starts Ray here (2 CPUs), Ray Tune runs the trials with
Optuna as the search algorithm on the search's own study and ASHA as the scheduler, and the trials table, best
recipe and plots come out as for any search."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import chat_rows, write_jsonl
from tuneloop.cli.main import app

pytest.importorskip("ray.tune", reason="Ray Tune is not installed (pip install 'tuneloop[ray]')")


def test_a_search_runs_on_a_local_ray_with_optuna_and_asha(tmp_path, tiny_chat_model, home):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(tiny_chat_model),
                                      "data": {"train": str(data), "validation": str(data)},
                                      "hyperparameters": {"max_steps": 3, "batch_size": 4},
                                      "evaluation": {"every_steps": 1, "each_epoch": False}}))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}))
    result = CliRunner().invoke(app, ["search", str(recipe), "--space", str(space), "--sampler", "random",
                                      "--pruner", "median", "--trials", "3", "--ray", "local", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout[result.stdout.index("{"):])
    assert len(view["ray"]["trials"]) == 3 and all(t["error"] is None for t in view["ray"]["trials"])
    rows = view["trial_rows"]
    assert len(rows) == 3 and all(r["state"] == "COMPLETE" for r in rows), rows  # told by OptunaSearch
    assert len({r["params"]["hyperparameters.learning_rate"] for r in rows}) == 3
    for trial in view["ray"]["trials"]:  # each reported its evaluations to Tune; ASHA may stop some early
        assert 1 <= trial["evaluations"] <= 3 and (home / "runs" / trial["run"]).is_dir()
    assert view["best"]["value"] == min(r["value"] for r in rows)
    assert (home / "searches" / view["id"] / "best.yaml").is_file()
    assert set(view["written"]["plots"]) >= {"history", "parallel"}
