"""`tuneloop train`, `eval` and `export` end to end on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import chat_rows, write_jsonl
from tests.engine.test_classify_head import topic_rows
from tuneloop.cli.main import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def sft_run(tiny_chat_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft")
    data = write_jsonl(folder / "train.jsonl", chat_rows(16))
    invoke("train", "--model", tiny_chat_model, "--data", data, "--max-steps", 3, "--lr", 1e-2,
           "--output", folder / "run")
    return folder / "run"


def test_sft_eval_reports_and_saves_beside_the_run(sft_run, tmp_path):
    test = write_jsonl(tmp_path / "test.jsonl", chat_rows(6))
    invoke("eval", sft_run, "--data", test, "--max-generate", 3)
    saved = json.loads((sft_run / "eval-test.json").read_text())
    assert saved["task"] == "sft" and saved["n"] == 6 and saved["generated"] == 3
    assert math.isclose(saved["perplexity"], math.exp(saved["loss"]), rel_tol=1e-9)
    assert 0 <= saved["token_accuracy"] <= 1 and 0 <= saved["rouge_l"] <= 1 and 0 <= saved["exact_match"] <= 1
    assert saved["samples"][0]["reference"] == "0"  # chat_rows(0): "What is 0 plus 0?" -> "0"


def test_sft_eval_loss_matches_the_training_loss_function(sft_run, tmp_path):
    """The eval loss is the same token-mean cross-entropy the loop trains on."""
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.methods.sft import collate, sft_loss
    from tuneloop.engine.tokenize import tokenize_messages
    from tuneloop.models.loading import load_causal_lm

    rows = chat_rows(5)
    test = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "r.json"
    invoke("eval", sft_run, "--data", test, "--max-generate", 0, "--output", out)
    model, tokenizer = load_causal_lm(str(sft_run), get_settings())
    batch = collate([tokenize_messages(tokenizer, r["messages"], 1024) for r in rows], tokenizer.pad_token_id)
    with torch.no_grad():
        total, n = sft_loss(model, batch)
    saved = json.loads(out.read_text())
    assert saved["generated"] == 0 and saved["exact_match"] is None
    assert math.isclose(saved["loss"], float(total) / n, rel_tol=1e-5)


def test_export_merged_answers_like_the_adapter(sft_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneloop.config.settings import get_settings
    from tuneloop.models.loading import load_causal_lm
    from tuneloop.models.generation import GenerationOptions, complete, encode_chat

    invoke("export", sft_run, tmp_path / "merged", "--merge")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    adapter_model, tokenizer = load_causal_lm(str(sft_run), get_settings())
    ids = encode_chat(tokenizer, [{"role": "user", "content": "What is 4 plus 4?"}])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapter_model(ids).logits, atol=1e-5)
    options, messages = GenerationOptions(max_tokens=8), [{"role": "user", "content": "What is 4 plus 4?"}]
    assert complete(merged, tokenizer, messages, options).text == \
        complete(adapter_model, tokenizer, messages, options).text
    assert not (tmp_path / "merged" / "adapter_config.json").exists()


def test_export_adapter_only_and_refuse_to_overwrite(sft_run, tmp_path):
    invoke("export", sft_run, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "run.json", "tokenizer.json"} <= files
    assert "model.safetensors" not in files
    chat = runner.invoke(app, ["chat", str(tmp_path / "adapter"), "--max-tokens", "3"], input="hi\n/exit\n")
    assert chat.exit_code == 0, chat.output
    again = runner.invoke(app, ["export", str(sft_run), str(tmp_path / "adapter")])
    assert again.exit_code == 2 and "already exists and is not empty" in again.output


def test_head_classifier_cli_train_eval_export(tiny_encoder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    data = write_jsonl(tmp_path / "labelled.jsonl", topic_rows())
    result = invoke("train", "--model", tiny_encoder, "--method", "classify", "--data", data, "--epochs", 10,
                    "--lr", 3e-2, "--output", tmp_path / "run")
    assert "tuneloop eval" in result.output
    invoke("eval", tmp_path / "run", "--data", data, "--plot", tmp_path / "confusion.png")
    saved = json.loads((tmp_path / "run" / "eval-labelled.json").read_text())
    assert saved["task"] == "classification" and saved["n"] == 36
    from tuneloop.config.settings import get_settings
    from tuneloop.evals.classify import predict_labels
    from tuneloop.models.loading import load_model

    model, tokenizer = load_model(str(tmp_path / "run"), get_settings())
    rows = topic_rows()
    predicted = [label for label, _ in predict_labels(model, tokenizer, [r["text"] for r in rows], saved["labels"])]
    assert saved["accuracy"] == sum(p == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    invoke("export", tmp_path / "run", tmp_path / "merged", "--merge")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert merged.config.id2label == {0: "billing", 1: "shipping", 2: "technical"}
    chat_data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(3))
    wrong = runner.invoke(app, ["eval", str(tmp_path / "run"), "--data", str(chat_data)])
    assert wrong.exit_code == 2 and "is a classifier: evaluate it on labelled data" in wrong.output


def test_export_of_something_that_is_not_a_run(tiny_chat_model, tmp_path):
    result = runner.invoke(app, ["export", str(tiny_chat_model), str(tmp_path / "x")])
    assert result.exit_code == 2 and "is not a training run" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="qlora runs where a GPU is present")
def test_a_failed_run_says_why_once_and_exits_non_zero(tiny_chat_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    result = runner.invoke(app, ["train", "--model", str(tiny_chat_model), "--data", str(data), "--adapter", "qlora",
                                 "--output", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert result.output.count("needs a CUDA GPU") == 1, result.output


def test_preference_pairs_evaluate_a_reward_model_and_a_dpo_model(tiny_encoder, tiny_chat_model, tmp_path):
    """`tuneloop eval` on pairs: a reward model by its scores, a DPO model by its implicit reward against its adapter
    switched off (what training's eval_rewards_accuracies measures)."""
    from tests.engine.test_dpo import pairs

    train = write_jsonl(tmp_path / "pairs.jsonl", pairs(12))
    test = write_jsonl(tmp_path / "test.jsonl", pairs(16)[12:])
    invoke("train", "--model", tiny_encoder, "--method", "reward", "--data", train, "--epochs", 4, "--lr", 5e-3,
           "--output", tmp_path / "reward")
    invoke("eval", tmp_path / "reward", "--data", test)
    scored = json.loads((tmp_path / "reward" / "eval-test.json").read_text())
    assert scored["task"] == "preference" and scored["scored_by"] == "reward model" and scored["pairs"] == 4
    assert scored["accuracy"] == 1.0 and scored["margin"] > 0
    for method, scored_by in (("dpo", "implicit reward"),):  # ORPO's log-probability path: evals in test_reward
        invoke("train", "--model", tiny_chat_model, "--method", method, "--data", train, "--epochs", 6, "--lr", 1e-2,
               "--output", tmp_path / method)
        invoke("eval", tmp_path / method, "--data", test)
        saved = json.loads((tmp_path / method / "eval-test.json").read_text())
        assert saved["scored_by"] == scored_by and saved["accuracy"] == 1.0, saved
    chats = write_jsonl(tmp_path / "chats.jsonl", chat_rows(4))
    refused = runner.invoke(app, ["eval", str(tmp_path / "reward"), "--data", str(chats)])
    assert refused.exit_code != 0 and "is a reward model: evaluate it on preference pairs" in refused.output


def test_the_progress_bar_shows_an_rl_step_s_reward_and_no_reward_for_other_methods():
    from tuneloop.cli.train import TrainProgress
    from tuneloop.models.run_folder import Done, Start, Step

    bar = TrainProgress()
    bar(Start(total_steps=4, method="grpo"))
    bar(Step(step=1, total_steps=4, loss=0.25, lr=1e-4, extra={"reward": 0.5, "reward_std": 0.1}))
    fields = bar.progress.tasks[0].fields
    assert fields["reward"] == "  reward 0.500" and fields["loss"] == "0.2500"
    bar(Step(step=2, total_steps=4, loss=0.2, lr=1e-4))
    assert bar.progress.tasks[0].fields["reward"] == ""
    bar(Done(step=2, final="final"))


def test_a_chat_file_of_labels_is_evaluated_as_classification_over_every_row(tiny_chat_model, tmp_path):
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.methods.classify import label_token_ids
    from tuneloop.models.loading import load_model

    rows = [{"messages": [{"role": "system", "content": "Route the ticket."}, {"role": "user", "content": r["text"]},
                          {"role": "assistant", "content": r["label"]}]} for r in topic_rows()]
    data = write_jsonl(tmp_path / "tickets.jsonl", rows)
    result = invoke("eval", tiny_chat_model, "--data", data, "--output", tmp_path / "out.json")
    assert "task: classification (detected: every assistant answer is one of 3 labels (billing, shipping, " \
           "technical)); scored by label likelihood over all 36 rows" in " ".join(result.output.split())
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["task"] == "classification" and saved["n"] == 36 and saved["labels"] == ["billing", "shipping",
                                                                                          "technical"]
    # the same accuracy as scoring each conversation's labels one at a time
    model, tokenizer = load_model(str(tiny_chat_model), get_settings())
    ids = label_token_ids(tokenizer, saved["labels"])

    def predicted(row):
        prompt = tokenizer.apply_chat_template(row["messages"][:2], add_generation_prompt=True, tokenize=False)
        scores = []
        for label in ids:
            full = tokenizer(prompt, add_special_tokens=False)["input_ids"] + label
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([full])).logits[0].log_softmax(-1)
            scores.append(sum(float(logits[len(full) - len(label) - 1 + j, t]) for j, t in enumerate(label)))
        return saved["labels"][scores.index(max(scores))]

    assert saved["accuracy"] == sum(predicted(r) == r["messages"][2]["content"] for r in rows) / len(rows)
    forced = invoke("eval", tiny_chat_model, "--data", data, "--task", "sft", "--max-generate", 2, "--json")
    assert json.loads(forced.output)["task"] == "sft" and json.loads(forced.output)["task_source"] == "--task"
    wrong = runner.invoke(app, ["eval", str(tiny_chat_model), "--data", str(data), "--task", "spans"])
    assert wrong.exit_code == 2 and "--task: task 'spans' does not fit these records" in wrong.output
