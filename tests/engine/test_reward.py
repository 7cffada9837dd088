"""Reward models: the Bradley-Terry loss, accuracy and margin against TRL's RewardTrainer on the same batch (to
1e-5), learning on an encoder and on a decoder, the margin column and centring, scoring and ranking with a trained
model, resume, and bad data named."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import chat_rows, write_jsonl, assert_resumes_exactly
from tests.engine.test_dpo import pairs
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.loop import TrainingError, train
from tuneloop.engine.methods.reward import RewardModel, bradley_terry, collate_reward_pairs, tokenize_reward_pairs


def recipe(model, train_file, **overrides):
    base = {"model": str(model), "method": "reward", "data": {"train": str(train_file)},
            "hyperparameters": {"epochs": 4, "batch_size": 4, "learning_rate": 5e-3, "head_learning_rate": 1e-2,
                                "precision": "fp32"},
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 1}
    for key, value in overrides.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return parse_recipe(base)


@pytest.mark.parametrize("center", [None, 0.01])
def test_the_loss_accuracy_and_margin_match_trl(tiny_chat_model, tmp_path, center):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_chat_model, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}], "margin": 0.5 * i}
            for i, p in enumerate(pairs(4))]
    args = RewardConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, report_to=[], use_cpu=True,
                        max_length=128, bf16=False, fp16=False, center_rewards_coefficient=center)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    mode = "train" if trainer.model.training else "eval"
    trainer._metrics[mode].clear()
    expected = float(trainer.compute_loss(trainer.model, dict(batch)))
    metrics = {k: v[-1] for k, v in trainer._metrics[mode].items()}

    method = RewardModel(recipe(tiny_chat_model, "x.jsonl", reward={"center_coefficient": center or 0.0}), "chat")
    ours = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "margin": batch["margin"]}
    loss_sum, n = method.loss(trainer.model, ours)
    assert float(loss_sum) / n == pytest.approx(expected, abs=1e-5)
    step = method.step_metrics()
    assert step["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert step["margin"] == pytest.approx(metrics["margin"], abs=1e-5)


def test_our_collation_gives_trls_inputs(tiny_chat_model):
    """The same token ids, row for row, as TRL's tokenisation of conversational pairs (chat template rendered)."""
    from transformers import AutoTokenizer

    from tuneloop.data.records import Message, PreferenceRecord

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    record = PreferenceRecord(messages=[Message(role="user", content="where is the order 1")],
                              chosen=[Message(role="assistant", content="the package will arrive")],
                              rejected=[Message(role="assistant", content="reset my password")])
    [pair] = tokenize_reward_pairs(tokenizer, [record], 128, use_margin=True)
    chosen = tokenizer.apply_chat_template([{"role": "user", "content": "where is the order 1"},
                                            {"role": "assistant", "content": "the package will arrive"}], tokenize=True,
                                           return_dict=True)["input_ids"]
    assert pair.chosen == list(chosen)
    batch = collate_reward_pairs([pair, pair], tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4 and batch["margin"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_a_reward_model_learns_to_score_chosen_above_rejected(tiny_encoder, tiny_chat_model, tmp_path, which):
    from tuneloop.evals.rewards import RewardScorer

    model = tiny_encoder if which == "encoder" else tiny_chat_model
    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(12))
    result = train(recipe(model, train_file, data={"validation_split": 0.25}, evaluation={"every_steps": 3}),
                   get_settings(), tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert all({"accuracy", "margin"} <= set(e) for e in steps)
    evals = [e for e in events if e["type"] == "eval"]
    assert evals[-1]["eval_accuracy"] == 1.0 and evals[-1]["eval_margin"] > evals[0]["eval_margin"]
    meta = json.loads((result.final_dir / "run.json").read_text())
    assert meta["classifier"] == "reward" and meta["label_set"] == ["reward"]
    scorer = RewardScorer.load(str(result.final_dir), get_settings())
    prompt = [{"role": "user", "content": "where is the order 77"}]
    scores = scorer.score([[*prompt, {"role": "assistant", "content": "the package will arrive at the address"}],
                           [*prompt, {"role": "assistant", "content": "please reset my password"}]])
    assert scores[0] > scores[1]
    ranked = scorer.rank(prompt, ["please reset my password", "the package will arrive at the address"])
    assert [r["index"] for r in ranked] == [1, 0] and ranked[0]["score"] > ranked[1]["score"]


def test_the_margin_column_and_centring_shape_the_loss():
    chosen, rejected = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5])
    plain = bradley_terry(chosen, rejected, torch.zeros(2), 0.0)
    assert plain.tolist() == pytest.approx([-torch.nn.functional.logsigmoid(torch.tensor(1.0)).item(),
                                            -torch.nn.functional.logsigmoid(torch.tensor(0.0)).item()])
    with_margin = bradley_terry(chosen, rejected, torch.tensor([2.0, 0.0]), 0.0)
    assert with_margin[0] > plain[0] and with_margin[1] == plain[1]  # a 1-point win is short of a 2-point margin
    centred = bradley_terry(chosen, rejected, torch.zeros(2), 0.1)
    assert (centred - plain).tolist() == pytest.approx([0.1 * 1.0, 0.1 * 1.0])


def test_a_killed_run_resumes_exactly(tiny_encoder, tmp_path):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(8))
    assert_resumes_exactly(recipe(tiny_encoder, train_file, hyperparameters={"max_steps": 7, "epochs": None,
                                                                            "batch_size": 2},
                                  checkpoints={"every_steps": 3}), tmp_path, 4)


def test_bad_data_is_named(tiny_encoder, tmp_path):
    chats = write_jsonl(tmp_path / "chats.jsonl", chat_rows(12))
    with pytest.raises(TrainingError, match="'reward' needs preference pairs.*training example 1 is a chat record"):
        train(recipe(tiny_encoder, chats), get_settings(), tmp_path / "run")
    bad_margin = write_jsonl(tmp_path / "margin.jsonl", [*pairs(3), {**pairs(4)[3], "margin": "big"}])
    with pytest.raises(TrainingError, match="training example 4: field 'margin' must be a finite number, got 'big'"):
        train(recipe(tiny_encoder, bad_margin), get_settings(), tmp_path / "run2")
    ignored = train(recipe(tiny_encoder, bad_margin, reward={"use_margin": False},
                           hyperparameters={"max_steps": 1, "epochs": None}), get_settings(), tmp_path / "run3")
    assert ignored.final_dir.exists()  # without use_margin the field is not read


# ------------------------------------------------------------------------------------------------ ORPO

def test_orpos_odds_ratio_term_matches_trls():
    from types import SimpleNamespace

    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    from tuneloop.engine.methods.orpo import odds_ratio_terms

    chosen = torch.tensor([-0.05, -0.7, -2.5, -9.0, -1e-4])
    rejected = torch.tensor([-0.3, -0.69, -0.1, -12.0, -20.0])
    trl_self = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device="cpu"))
    losses, _, _, _, log_odds = ORPOTrainer.odds_ratio_loss(trl_self, chosen, rejected)
    ours, our_log_odds = odds_ratio_terms(chosen, rejected, 0.25)
    assert ours.tolist() == pytest.approx(losses.tolist(), abs=1e-6)
    assert float(our_log_odds.mean()) == pytest.approx(float(log_odds), abs=1e-5)


def test_orpo_learns_the_preference_without_a_reference(tiny_chat_model, tmp_path):
    from tuneloop.engine.methods.orpo import ORPO

    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(8))
    r = recipe(tiny_chat_model, train_file, method="orpo", data={"validation_split": 0.25},
               evaluation={"every_steps": 4}, hyperparameters={"epochs": 8})
    result = train(r, get_settings(), tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["type"] == "eval"]
    assert evals[-1]["eval_rewards_accuracies"] == 1.0 and evals[-1]["eval_rewards_margins"] > evals[0]["eval_rewards_margins"]
    assert result.losses[-1] < result.losses[0]
    meta = json.loads((result.final_dir / "run.json").read_text())
    assert meta["method"] == "orpo" and meta["preference"] == {"method": "orpo", "beta": 0.1}
    method = ORPO(r, "chat")
    method.load(get_settings(), None, False, None)
    assert method.reference is None  # LoRA or full: never a second model
    chats = write_jsonl(tmp_path / "chats.jsonl", chat_rows(12))
    with pytest.raises(TrainingError, match="'orpo' needs preference pairs.*training example 1 is a chat record"):
        train(recipe(tiny_chat_model, chats, method="orpo"), get_settings(), tmp_path / "run2")


def test_an_orpo_run_resumes_exactly(tiny_chat_model, tmp_path):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(8))
    assert_resumes_exactly(recipe(tiny_chat_model, train_file, method="orpo", hyperparameters={
        "max_steps": 6, "epochs": None, "batch_size": 2}, checkpoints={"every_steps": 2}), tmp_path, 3)