"""Classification heads (encoder and decoder), feature extraction, and sequential fine-tuning."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tests.conftest import chat_rows, write_jsonl
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.models.run_folder import Evaluation, read_events
from tuneloop.engine.loop import TrainingError, train
from tuneloop.evals.classify import has_head, predict_labels
from tuneloop.models.loading import ModelError, load_causal_lm, load_model, load_sequence_classifier


def recipe(model, train_file, **overrides):
    base = {"model": str(model), "method": "classify", "data": {"train": str(train_file)},
            "hyperparameters": {"epochs": 10, "batch_size": 8, "learning_rate": 3e-2, "precision": "fp32"},
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 1}
    for key, value in overrides.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return parse_recipe(base)


TOPICS = {"billing": "charged twice invoice refund payment card", "shipping": "order package arrive address where when",
          "technical": "router connection firmware update error app"}


def topic_rows(n: int = 36) -> list[dict]:
    """Texts made of each topic's words (in the tiny vocabulary), so a tiny random encoder can learn them."""
    rng = random.Random(0)
    labels = sorted(TOPICS)
    return [{"text": " ".join(rng.sample(TOPICS[labels[i % 3]].split(), 4)), "label": labels[i % 3]} for i in range(n)]


@pytest.fixture
def labelled(tmp_path):
    return write_jsonl(tmp_path / "labelled.jsonl", topic_rows())


def test_encoder_head_learns_and_reloads(tiny_encoder, labelled, tmp_path):
    result = train(recipe(tiny_encoder, labelled), get_settings(), tmp_path / "run")
    meta = json.loads((result.final_dir / "run.json").read_text())
    assert meta["classifier"] == "head" and meta["label_set"] == ["billing", "shipping", "technical"]
    assert sum(result.losses[-3:]) / 3 < sum(result.losses[:3]) / 3
    model, tokenizer = load_model(str(result.run_dir), get_settings())
    assert has_head(model)
    rows = topic_rows()
    predictions = predict_labels(model, tokenizer, [r["text"] for r in rows], meta["label_set"])
    accuracy = sum(label == r["label"] for (label, _), r in zip(predictions, rows)) / len(rows)
    assert accuracy > 0.9  # every word names its topic: the head must pick that up
    assert all(abs(sum(p) - 1) < 1e-5 for _, p in predictions)


def test_decoder_head_on_the_chat_model(tiny_chat_model, labelled, tmp_path):
    result = train(recipe(tiny_chat_model, labelled, classifier="head"), get_settings(), tmp_path / "run")
    model, _ = load_sequence_classifier(str(result.run_dir), get_settings())
    assert type(model.get_base_model()).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 3
    assert result.losses[-1] < result.losses[0]


def test_head_early_stopping_on_accuracy(tiny_encoder, labelled, tmp_path):
    r = recipe(tiny_encoder, labelled, data={"validation_split": 0.25},
               evaluation={"every_steps": 2}, early_stopping={"enabled": True, "metric": "eval_accuracy", "patience": 2})
    train(r, get_settings(), tmp_path / "run")
    evals = [e.to_json() for e in read_events(tmp_path / "run" / "events.jsonl") if isinstance(e, Evaluation)]
    assert evals and all(0 <= e["eval_accuracy"] <= 1 and e["eval_loss"] > 0 for e in evals)


def test_freeze_trains_only_the_head_and_last_layer(tiny_encoder, labelled, tmp_path):
    from tuneloop.engine.loop import Loop

    loop = Loop(recipe(tiny_encoder, labelled, adapter={"type": "freeze", "trainable_layers": 1}),
                tmp_path / "run", get_settings())
    loop.setup()
    trainable = {n for n, p in loop.model.named_parameters() if p.requires_grad}
    assert {"classifier.weight", "classifier.bias"} <= trainable
    assert all(n.startswith(("classifier.", "bert.encoder.layer.1.")) for n in trainable)


def test_bad_pairings_are_clear_errors(tiny_encoder, labelled, tmp_path):
    with pytest.raises(TrainingError, match="classifier 'generative' needs a chat model"):
        train(recipe(tiny_encoder, labelled, classifier="generative"), get_settings(), tmp_path / "a")
    with pytest.raises(TrainingError, match="method 'sft' needs a model that generates text"):
        train(recipe(tiny_encoder, labelled, method="sft"), get_settings(), tmp_path / "b")
    with pytest.raises(ModelError, match="no trained classification head"):
        load_sequence_classifier(str(tiny_encoder), get_settings())


def test_label_outside_the_continued_heads_labels_is_named(tiny_encoder, labelled, tmp_path):
    first = train(recipe(tiny_encoder, labelled, hyperparameters={"epochs": 1}), get_settings(), tmp_path / "a")
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": f"thing {i}", "label": "returns"} for i in range(12)])
    with pytest.raises(TrainingError, match="label 'returns' is not in the training label set"):
        train(recipe(first.run_dir, other), get_settings(), tmp_path / "b")


# ---------------------------------------------------------------------- sequential fine-tuning
def sft_recipe(model, data, adapter="lora", **hp):
    return parse_recipe({"model": str(model), "data": {"train": str(data)},
                         "hyperparameters": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-2,
                                             "precision": "fp32", **hp},
                         "adapter": {"type": adapter, "r": 4, "alpha": 8},
                         "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}})


def adapter_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_sequential_lora_continues_the_previous_adapter(tiny_chat_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    first = train(sft_recipe(tiny_chat_model, data), get_settings(), tmp_path / "first")
    second = train(sft_recipe(first.run_dir, data), get_settings(), tmp_path / "second")
    meta = json.loads((second.final_dir / "run.json").read_text())
    assert meta["base_model"] == str(tiny_chat_model)  # still an adapter on the original base
    assert meta["started_from"] == str(first.run_dir)
    a, _ = load_causal_lm(str(first.run_dir), get_settings())
    b, _ = load_causal_lm(str(second.run_dir), get_settings())
    wa, wb = adapter_weights(a), adapter_weights(b)
    assert wa.keys() == wb.keys() and any(not torch.equal(wa[k], wb[k]) for k in wa)
    # the second run starts where the first ended: its first loss is below the first run's first loss
    assert second.losses[0] < first.losses[0]


def test_sequential_other_adapter_merges_the_previous_one(tiny_chat_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    first = train(sft_recipe(tiny_chat_model, data), get_settings(), tmp_path / "first")
    second = train(sft_recipe(first.run_dir, data, adapter="ia3", learning_rate=1e-3), get_settings(),
                   tmp_path / "second")
    assert json.loads((second.final_dir / "run.json").read_text())["base_model"] == str(first.run_dir)
    merged, _ = load_causal_lm(str(first.run_dir), get_settings())
    model, tokenizer = load_causal_lm(str(second.run_dir), get_settings())
    ids = tokenizer("what is 3 plus 3", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        # a fresh IA3 adapter starts as the identity; after 4 small steps it is close to the first model
        assert torch.allclose(model(ids).logits, merged(ids).logits, atol=0.5)
        assert not torch.equal(model(ids).logits, merged(ids).logits)
