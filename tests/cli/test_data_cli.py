"""`tuneloop data ...` as a user runs it: exit codes, reports, JSON, plots and split files."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.conftest import chat_rows, labelled_rows, write_jsonl
from tuneloop.cli.main import app

runner = CliRunner()


def test_validate_exit_codes_and_report(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", chat_rows())
    assert runner.invoke(app, ["data", "validate", str(good)]).exit_code == 0

    rows = chat_rows()
    rows[3]["note"] = "x"
    warned = runner.invoke(app, ["data", "validate", str(write_jsonl(tmp_path / "warn.jsonl", rows))])
    assert warned.exit_code == 0 and "Unknown key" in warned.output and "line 4" in warned.output

    rows[6] = "{oops"
    bad = runner.invoke(app, ["data", "validate", str(write_jsonl(tmp_path / "bad.jsonl", rows))])
    assert bad.exit_code == 1
    assert "FAILED" in bad.output and "Not valid JSON (1)" in bad.output and "line 7: not valid JSON" in bad.output


def test_validate_json_output(tmp_path):
    rows = labelled_rows()
    rows[0]["label"] = "nope"
    result = runner.invoke(app, ["data", "validate", str(write_jsonl(tmp_path / "l.jsonl", rows)), "--json",
                                 "--labels", "billing,shipping,technical"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["ok"] is False and data["format"] == "labelled"
    (kind,) = data["kinds"]
    assert kind["code"] == "unknown_label" and kind["problems"][0]["line"] == 1


def test_validate_with_max_length_uses_the_models_tokenizer(tmp_path, tiny_chat_model):
    rows = chat_rows()
    rows[2]["messages"][2]["content"] = "the customer asked where the order is " * 30
    result = runner.invoke(app, ["data", "validate", str(write_jsonl(tmp_path / "c.jsonl", rows)), "--json",
                                 "--max-length", "100", "--model", str(tiny_chat_model)])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["kinds"][0]["code"] == "too_long"
    assert data["kinds"][0]["problems"][0]["line"] == 3


def test_unknown_flag_values_are_named(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", chat_rows())
    result = runner.invoke(app, ["data", "validate", str(src), "--format", "sharegpt"])
    assert result.exit_code == 2 and "--format 'sharegpt'" in result.output and "chat" in result.output
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["data", "validate", str(src), "--columns", "text"])
    assert result.exit_code == 2 and "KEY=COLUMN" in result.output


def test_stats_json_and_plot(tmp_path, tiny_chat_model):
    src = write_jsonl(tmp_path / "l.jsonl", labelled_rows(30))
    plot = tmp_path / "stats.png"
    result = runner.invoke(app, ["data", "stats", str(src), "--model", str(tiny_chat_model), "--json",
                                 "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["examples"] == 30 and data["labels"] == {"billing": 10, "shipping": 10, "technical": 10}
    tokens = data["tokens"]
    assert 0 < tokens["min"] <= tokens["p50"] <= tokens["p95"] <= tokens["max"]
    assert data["assistant_turns"]["max"] == 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_split_cli_writes_each_split_in_the_source_format(tmp_path):
    src = tmp_path / "tickets.csv"
    rows = labelled_rows(40)
    src.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    result = runner.invoke(app, ["data", "split", str(src), "-o", str(tmp_path / "out"), "--ratios", "0.5,0.25,0.25"])
    assert result.exit_code == 0, result.output
    counts = {name: len((tmp_path / "out" / f"{name}.csv").read_text().splitlines()) - 1
              for name in ("train", "validation", "test")}
    assert sum(counts.values()) == 40 and abs(counts["train"] - 20) <= 1 and abs(counts["test"] - 10) <= 1


def test_convert_between_formats(tmp_path):
    src = write_jsonl(tmp_path / "l.jsonl", labelled_rows())
    result = runner.invoke(app, ["data", "convert", str(src), "--to", "chat", "-o", str(tmp_path / "chat.parquet")])
    assert result.exit_code == 0, result.output
    check = runner.invoke(app, ["data", "validate", str(tmp_path / "chat.parquet"), "--json"])
    assert json.loads(check.stdout)["format"] == "chat"
    bad = runner.invoke(app, ["data", "convert", str(tmp_path / "chat.parquet"), "--to", "labelled", "-o",
                              str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "line 1" in bad.output and "no label" in bad.output


def test_validate_with_a_grader_names_each_line_that_lacks_a_field_it_uses(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"ticket {i}"}], "team": "billing"} for i in range(12)]
    del rows[6]["team"]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    grader = {"type": "string_check", "name": "team", "input": "{{ sample.output_text }}",
              "reference": "{{ item.team }}", "operation": "ilike"}
    (tmp_path / "grader.json").write_text(json.dumps(grader))
    result = runner.invoke(app, ["data", "validate", str(data), "--grader", str(tmp_path / "grader.json"), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    [kind] = report["kinds"]
    assert kind["code"] == "grader_field" and kind["count"] == 1 and not report["ok"]
    [problem] = kind["problems"]
    assert problem["line"] == 7 and "lacks the field team" in problem["message"]
    # two graders that name the same field: the line is counted once
    (tmp_path / "two.yaml").write_text(f"grpo:\n  rewards:\n    - grader: {json.dumps(grader)}\n"
                                       f"    - grader: {json.dumps({**grader, 'name': 'again'})}\n")
    twice = runner.invoke(app, ["data", "validate", str(data), "--grader", str(tmp_path / "two.yaml"), "--json"])
    assert json.loads(twice.output)["kinds"][0]["count"] == 1
    # a recipe's graders are checked the same way, and a file without the problem passes
    (tmp_path / "recipe.yaml").write_text(f"method: grpo\ngrpo:\n  rewards:\n    - grader: {json.dumps(grader)}\n")
    del rows[6]
    good = write_jsonl(tmp_path / "good.jsonl", rows)
    assert runner.invoke(app, ["data", "validate", str(good), "--grader", str(tmp_path / "recipe.yaml")]).exit_code == 0
    # what is not a grader, or a grader that is wrong, is named
    (tmp_path / "bad.json").write_text(json.dumps({**grader, "operation": "equals"}))
    bad = runner.invoke(app, ["data", "validate", str(good), "--grader", str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "operation" in bad.output
    (tmp_path / "none.yaml").write_text("model: x\n")
    neither = runner.invoke(app, ["data", "validate", str(good), "--grader", str(tmp_path / "none.yaml")])
    assert neither.exit_code != 0 and "neither a grader" in neither.output
    (tmp_path / "list.yaml").write_text("grpo: [1, 2]\n")  # a recipe whose grpo section is not a mapping
    listed = runner.invoke(app, ["data", "validate", str(good), "--grader", str(tmp_path / "list.yaml")])
    assert listed.exit_code != 0 and "neither a grader" in listed.output and "Traceback" not in listed.output
    (tmp_path / "tabs.json").write_text(json.dumps(grader, indent="\t"))  # JSON that YAML cannot read
    assert runner.invoke(app, ["data", "validate", str(good), "--grader", str(tmp_path / "tabs.json")]).exit_code == 0
    chats = write_jsonl(tmp_path / "chats.jsonl", chat_rows(12))
    wrong = runner.invoke(app, ["data", "validate", str(chats), "--grader", str(tmp_path / "grader.json")])
    assert wrong.exit_code != 0 and "RL prompt files" in wrong.output
