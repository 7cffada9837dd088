"""KTO: the loss against TRL's KTOTrainer on the same batch (to 1e-5), the class weights from the counts, learning
from unpaired answers, resume, and bad data named with its line."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.conftest import chat_rows, write_jsonl, assert_resumes_exactly
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.loop import TrainingError, train
from tuneloop.engine.methods.kto import KTO, UnpairedExample, class_weights
from tuneloop.engine.tokenize import IGNORE


def answers(n: int = 8) -> list[dict]:
    """Desirable answers about the package, undesirable ones about passwords (tiny vocabulary)."""
    return [{"prompt": f"where is the order {i}",
             "completion": "the package will arrive at the address" if i % 2 == 0 else
             "please reset my password" + " code" * (i % 3), "label": i % 2 == 0} for i in range(n)]


def recipe(model, train_file, **overrides):
    base = {"model": str(model), "method": "kto", "data": {"train": str(train_file)},
            "hyperparameters": {"epochs": 4, "batch_size": 4, "learning_rate": 5e-3, "precision": "fp32"},
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 1}
    for key, value in overrides.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return parse_recipe(base)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 1.5)])
def test_the_loss_matches_trl_on_the_same_batch(tiny_chat_model, tmp_path, weights):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    rows = [{"prompt": [{"role": "user", "content": a["prompt"]}],
             "completion": [{"role": "assistant", "content": a["completion"]}], "label": a["label"]}
            for a in answers(4)]
    args = KTOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, report_to=[], use_cpu=True,
                     max_length=128, bf16=False, fp16=False, beta=0.3, desirable_weight=weights[0],
                     undesirable_weight=weights[1], train_sampling_strategy="sequential")
    trainer = KTOTrainer(model=model, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    mode = "train" if trainer.model.training else "eval"
    trainer._metrics[mode].clear()
    expected = float(trainer._compute_loss(trainer.model, batch, return_outputs=False))
    metrics = {k: v[-1] for k, v in trainer._metrics[mode].items()}

    method = KTO(recipe(tiny_chat_model, "x.jsonl", kto={"beta": 0.3}), "chat")
    method.reference, method.weights = reference, weights
    ours = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE),
            "kl_input_ids": batch["KL_input_ids"], "kl_attention_mask": batch["KL_attention_mask"],
            "kl_labels": batch["KL_input_ids"].masked_fill(batch["KL_completion_mask"] == 0, IGNORE),
            "desirable": torch.as_tensor(batch["label"], dtype=torch.bool)}
    loss_sum, n = method.loss(trainer.model, ours)
    assert float(loss_sum) / n == pytest.approx(expected, abs=1e-5)
    step = method.step_metrics()
    assert step["kl"] == pytest.approx(metrics["kl"], abs=1e-5)
    assert step["rewards/chosen"] == pytest.approx(metrics["rewards/chosen"], abs=1e-5)
    assert step["rewards/rejected"] == pytest.approx(metrics["rewards/rejected"], abs=1e-5)


def test_our_mismatched_pairs_are_trls(tiny_chat_model):
    """Each prompt with the previous example's answer, cycling: TRL's KL completions."""
    method = KTO(recipe(tiny_chat_model, "x.jsonl"), "chat")
    examples = [UnpairedExample([1, 2], [10 + i, 20 + i], [10 + i, 20 + i], i % 2 == 0, i) for i in range(3)]
    batch = method.collate(examples, 0)
    assert batch["kl_input_ids"].tolist() == [[1, 2, 12, 22], [1, 2, 10, 20], [1, 2, 11, 21]]
    assert batch["kl_labels"][0].tolist() == [IGNORE, IGNORE, 12, 22]
    assert batch["desirable"].tolist() == [True, False, True]


def test_class_weights_balance_the_counts():
    def examples(good, bad):
        return [UnpairedExample([], [1], [1], True, 0)] * good + [UnpairedExample([], [1], [1], False, 0)] * bad

    assert class_weights(examples(6, 2)) == (1.0, 3.0)
    assert class_weights(examples(2, 5)) == (2.5, 1.0)
    assert class_weights(examples(3, 0)) == (1.0, 1.0)


def test_kto_learns_from_unpaired_answers(tiny_chat_model, tmp_path):
    rows = answers(12) + [{**a, "prompt": a["prompt"] + " now"} for a in answers(12) if a["label"]]  # 12 good, 6 bad
    train_file = write_jsonl(tmp_path / "answers.jsonl", rows)
    result = train(recipe(tiny_chat_model, train_file, data={"validation_split": 0.25}, evaluation={"every_steps": 3}),
                   get_settings(), tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert all("kl" in e for e in steps) and any("rewards/margins" in e for e in steps)
    evals = [e for e in events if e["type"] == "eval"]
    assert evals[-1]["eval_rewards_margins"] > evals[0]["eval_rewards_margins"] and evals[-1]["eval_rewards_margins"] > 0
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # step losses swing with each batch's class mix
    meta = json.loads((result.final_dir / "run.json").read_text())
    assert meta["preference"]["method"] == "kto" and meta["preference"]["desirable_weight"] == 1.0
    assert meta["preference"]["undesirable_weight"] > 1.0  # 18 answers, two thirds desirable: the bad ones weigh more


def test_a_killed_run_resumes_exactly(tiny_chat_model, tmp_path):
    train_file = write_jsonl(tmp_path / "answers.jsonl", answers(8))
    assert_resumes_exactly(recipe(tiny_chat_model, train_file, hyperparameters={"max_steps": 7, "epochs": None,
                                                                               "batch_size": 2},
                                  checkpoints={"every_steps": 3}), tmp_path, 4)


def test_bad_data_and_settings_are_named(tiny_chat_model, tmp_path):
    from tuneloop.data.dataset import Source
    from tuneloop.data.validate import validate

    chats = write_jsonl(tmp_path / "chats.jsonl", chat_rows(12))
    with pytest.raises(TrainingError, match="'kto' needs answers marked desirable or not.*training example 1 is a chat"):
        train(recipe(tiny_chat_model, chats), get_settings(), tmp_path / "run")
    with pytest.raises(TrainingError, match="batch_size 2 or more"):
        train(recipe(tiny_chat_model, write_jsonl(tmp_path / "a.jsonl", answers(8)),
                     hyperparameters={"batch_size": 1}), get_settings(), tmp_path / "run2")
    rows = answers(12)
    rows[6] = {**rows[6], "label": "yes"}
    report = validate(Source(write_jsonl(tmp_path / "bad.jsonl", rows)))
    assert report.format == "unpaired"
    [problem] = report.problems["bad_label"]
    assert problem.line == 7 and problem.field == "label" and "must be true or false" in problem.message
