"""`tuneloop compare` end to end on tiny models: the table, comparison.json, the items and the plot."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import write_jsonl
from tests.engine.test_classify_head import topic_rows
from tuneloop.cli.main import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def chat_form(rows):
    return [{"messages": [{"role": "user", "content": r["text"]}, {"role": "assistant", "content": r["label"]}]}
            for r in rows]


@pytest.fixture(scope="module")
def tickets(tiny_encoder, tmp_path_factory):
    """A chat-form test file whose answers are labels, and a head on the tiny encoder trained on labelled texts."""
    folder = tmp_path_factory.mktemp("compare")
    train = write_jsonl(folder / "train.jsonl", topic_rows(36))
    write_jsonl(folder / "test.jsonl", chat_form(topic_rows(30)[::-1]))
    invoke("train", "--model", tiny_encoder, "--method", "classify", "--data", train, "--adapter", "full",
           "--epochs", 8, "--lr", 3e-3, "--output", folder / "head")
    return folder


def test_a_fine_tune_against_a_base_and_a_few_shot_baseline(tiny_chat_model, tickets):
    out = tickets / "cmp"
    result = invoke("compare", tiny_chat_model, tickets / "head", "3-shot", "--base", tiny_chat_model,
                    "--data", tickets / "test.jsonl", "--latency-samples", 2, "--output", out,
                    "--plot", tickets / "table.png")
    text = " ".join(result.output.split())
    assert "task: classification (detected: every assistant answer is one of 3 labels" in text
    assert "accuracy; Δ and p against tiny-chat" in text and "(McNemar)" in text and "(paired bootstrap)" in text
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["n"] == 30 and saved["labels"] == ["billing", "shipping", "technical"]
    names = [row["candidate"] for row in saved["rows"]]
    assert names == [tiny_chat_model.name, "head", "3-shot"]
    assert [c["kind"] for c in saved["candidates"]] == ["model", "run", "prompt"]
    # the prompt baseline prompts --base with 3 examples from the fine-tune's own training split
    assert saved["candidates"][2]["ref"] == str(tiny_chat_model) and saved["candidates"][2]["prompt"]["k"] == 3
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(items) == 30
    for row in saved["rows"]:
        accuracy = row["metrics"]["accuracy"]
        got = sum(item["answers"][row["candidate"]] == item["reference"] for item in items) / 30
        assert accuracy["value"] == pytest.approx(got)
        assert accuracy["low"] <= accuracy["value"] <= accuracy["high"]
        assert row["latency_ms_p50"] > 0 and row["tokens_per_s"] > 0
    base, tuned = saved["rows"][0], saved["rows"][1]
    assert tuned["metrics"]["accuracy"]["value"] > base["metrics"]["accuracy"]["value"] + 0.3, "the head learned"
    versus = tuned["vs_first"]["accuracy"]
    assert versus["test"] == "mcnemar" and versus["p_value"] < 0.05 and versus["low"] > 0
    assert versus["delta"] == pytest.approx(tuned["metrics"]["accuracy"]["value"] - base["metrics"]["accuracy"]["value"])
    assert base["vs_first"] == {}
    assert saved["disagreements"] == sum(item["disagree"] for item in items) > 0
    assert "items where the candidates disagree" in text
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG" == (tickets / "table.png").read_bytes()[:4]
    # the head's row equals tuneloop eval on the same file (it reads each conversation's user message)
    evaluated = json.loads(invoke("eval", tickets / "head", "--data", tickets / "test.jsonl", "--json").output)
    assert evaluated["accuracy"] == pytest.approx(tuned["metrics"]["accuracy"]["value"])
    assert evaluated["macro_f1"] == pytest.approx(tuned["metrics"]["macro_f1"]["value"])


def test_conversations_compare_loss_and_generated_answers(tiny_chat_model, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": f"{w} {w} ok"}]}
            for w in ["refund", "parcel", "login", "invoice", "box", "app"]]
    data = write_jsonl(tmp_path / "chats.jsonl", rows)
    invoke("train", "--model", tiny_chat_model, "--data", data, "--max-steps", 3, "--lr", 1e-2, "--output",
           tmp_path / "sft")
    result = invoke("compare", tiny_chat_model, tmp_path / "sft", "--data", data, "--max-generate", 3,
                    "--max-new-tokens", 4, "--latency-samples", 1, "--json")
    saved = json.loads(result.output)
    assert saved["task"] == "sft" and saved["task_source"] == "detected: conversations with free-text answers"
    first, second = saved["rows"]
    assert set(first["metrics"]) == {"loss", "exact_match", "rouge_l"}
    assert second["vs_first"]["loss"]["test"] == "paired bootstrap"
    assert first["metrics"]["loss"]["low"] <= first["metrics"]["loss"]["value"] <= first["metrics"]["loss"]["high"]
    # the loss is tuneloop eval's teacher-forced loss on the same answers
    evaluated = json.loads(invoke("eval", tmp_path / "sft", "--data", data, "--max-generate", 0, "--json").output)
    assert second["metrics"]["loss"]["value"] == pytest.approx(evaluated["loss"], rel=1e-5)


def test_bad_candidates_and_options_are_named(tiny_chat_model, tickets, tmp_path):
    bad = tmp_path / "prompt.yaml"
    bad.write_text("k: 3\nshots: 4\n")
    result = runner.invoke(app, ["compare", str(tiny_chat_model), str(bad), "--data", str(tickets / "test.jsonl")])
    assert result.exit_code == 2
    assert "prompt.yaml: shots: Extra inputs are not permitted (allowed: model, system, k, seed, selection, name)" in \
        " ".join(result.output.split())
    result = runner.invoke(app, ["compare", str(tiny_chat_model), "2-shot", "--data", str(tickets / "test.jsonl")])
    assert result.exit_code == 2 and "a k-shot baseline needs training examples: pass --train FILE" in \
        " ".join(result.output.split())
    extra = write_jsonl(tmp_path / "extra.jsonl", chat_form(topic_rows(12) + [{"text": "refund my return", "label":
                                                                                 "returns"}] * 2))
    result = runner.invoke(app, ["compare", str(tiny_chat_model), str(tickets / "head"), "--data", str(extra)])
    assert result.exit_code == 2 and "head answers with the labels billing, shipping, technical; the test data also " \
        "has returns, which it can never give" in " ".join(result.output.split())
    long = write_jsonl(tmp_path / "long.jsonl", [{"messages": [{"role": "user", "content": "refund " * 40},
                                                               {"role": "assistant", "content": f"answer {i}"}]}
                                                 for i in range(3)])
    result = runner.invoke(app, ["compare", str(tiny_chat_model), "--data", str(long), "--max-length", 16])
    assert result.exit_code == 2 and "3 of 3 conversations have no answer token left within --max-length 16" in \
        " ".join(result.output.split())
    result = runner.invoke(app, ["compare", "no-such-model", "--data", str(tickets / "test.jsonl")])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.output
