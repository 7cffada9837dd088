"""`tuneloop arena create/judge/show` end to end on the tiny model: the job runs on a worker the command starts, the
review project holds a record per prompt and pair, and the results print per judge; bad input is one line."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from tests.conftest import write_jsonl
from tuneloop.cli.main import app

runner = CliRunner()


def test_an_arena_from_the_cli(tmp_path, tiny_chat_model, home):
    other = tmp_path / "tiny-copy"
    shutil.copytree(tiny_chat_model, other)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {i}."} for i in range(3)])
    result = runner.invoke(app, ["arena", "create", "duel", "--model", str(tiny_chat_model), "--model", str(other),
                                 "--data", str(prompts), "--rows", "2", "--max-tokens", "3", "--judge",
                                 str(tiny_chat_model), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout[result.stdout.index("{"):])
    assert found["records"] == 2 and found["prompts"] == 2 and found["people"]["judgements"] == 0
    assert sorted(found["models"]) == sorted([str(tiny_chat_model), str(other)])
    listed = runner.invoke(app, ["review", "list"])
    assert "duel" in listed.output and "arena" in listed.output
    shown = runner.invoke(app, ["arena", "show", "duel"])
    assert shown.exit_code == 0 and "people: no judgements yet" in shown.output
    again = runner.invoke(app, ["arena", "create", "duel", "--model", "a", "--model", "b", "--data", str(prompts)])
    assert again.exit_code == 2 and "a project named 'duel' exists already" in again.output
    one = runner.invoke(app, ["arena", "create", "solo", "--model", "a", "--data", str(prompts)])
    assert one.exit_code == 2 and "models: 2 to 4 different models" in one.output
