"""Token classification (named entities): a token head on an encoder and on a decoder, the tags it learns
from character spans, entity-level evaluation, and bad data named by example."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import labelled_rows, write_jsonl
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.data.records import SpanRecord
from tuneloop.engine.loop import TrainingError, train
from tuneloop.engine.methods.token_classify import IGNORE, tags_of, tokenize_spans
from tuneloop.evals.spans import evaluate_spans, has_token_head, predict_spans
from tuneloop.models.loading import load_model, model_kind

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "src/tuneloop/examples/support_ticket_entities.jsonl"
THINGS = ["router", "earbuds", "invoice"]
FILLER = "the customer asked where order is and when will arrive please reset my because".split()


def recipe(model, train_file, **overrides):
    base = {"model": str(model), "method": "token_classify", "data": {"train": str(train_file)},
            "hyperparameters": {"epochs": 12, "batch_size": 8, "learning_rate": 3e-2, "head_learning_rate": 3e-2,
                                "precision": "fp32"},
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 1}
    for key, value in overrides.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return parse_recipe(base)


def span_rows(n: int = 40, seed: int = 0) -> list[dict]:
    """Texts of filler words (tiny vocabulary) with one THING (one word) and sometimes a two-word 'firmware
    update' (WHEN), so B- and I- tags are both learnt."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        parts, spans, text = rng.sample(FILLER, 5), [], ""
        parts.insert(rng.randrange(6), rng.choice(THINGS))
        if rng.random() < 0.5:
            at = rng.randrange(7)
            parts[at:at] = ["firmware", "update"]
        for i, word in enumerate(parts):
            start = len(text) + (1 if text else 0)
            text = f"{text} {word}" if text else word
            if word in THINGS:
                spans.append({"start": start, "end": start + len(word), "label": "THING"})
            if word == "firmware":
                spans.append({"start": start, "end": start + len("firmware update"), "label": "WHEN"})
        rows.append({"text": text, "spans": spans})
    return rows


def test_tags_come_from_the_spans_each_token_overlaps(tiny_tokenizer, tiny_encoder):
    from transformers import AutoTokenizer

    record = SpanRecord(text="the router and the firmware update", spans=[
        {"start": 4, "end": 10, "label": "THING"}, {"start": 19, "end": 34, "label": "WHEN"}])
    tags = tags_of(["THING", "WHEN"])
    assert tags == ["O", "B-THING", "I-THING", "B-WHEN", "I-WHEN"]
    byte_level = tokenize_spans(tiny_tokenizer, [record], tags, 64)[0]
    pieces = tiny_tokenizer.convert_ids_to_tokens(byte_level.input_ids)
    # the first token of each span is B-, the rest I-; a token's leading space is not part of a span, and a
    # token of whitespace alone is not scored (it would cut 'firmware update' in two)
    assert list(zip(pieces, [tags[t] if t != IGNORE else None for t in byte_level.tags])) == [
        ("the", "O"), ("Ġ", None), ("rou", "B-THING"), ("ter", "I-THING"), ("Ġand", "O"), ("Ġthe", "O"),
        ("Ġf", "B-WHEN"), ("ir", "I-WHEN"), ("mw", "I-WHEN"), ("are", "I-WHEN"), ("Ġ", None), ("updat", "I-WHEN"),
        ("e", "I-WHEN")]
    encoder = AutoTokenizer.from_pretrained(tiny_encoder)
    wordpiece = tokenize_spans(encoder, [record], tags, 64)[0]
    pieces = encoder.convert_ids_to_tokens(wordpiece.input_ids)
    assert list(zip(pieces, [tags[t] if t != IGNORE else None for t in wordpiece.tags])) == [
        ("[CLS]", None), ("the", "O"), ("router", "B-THING"), ("and", "O"), ("the", "O"), ("firmware", "B-WHEN"),
        ("update", "I-WHEN"), ("[SEP]", None)]


def test_encoder_token_head_learns_spans_and_reloads(tiny_encoder, tmp_path):
    train_file = write_jsonl(tmp_path / "spans.jsonl", span_rows(48))
    r = recipe(tiny_encoder, train_file, adapter={"type": "full"},
               hyperparameters={"epochs": 25, "learning_rate": 1e-2, "head_learning_rate": 1e-2})
    result = train(r, get_settings(), tmp_path / "run")
    meta = json.loads((result.final_dir / "run.json").read_text())
    assert meta["classifier"] == "token" and meta["label_set"] == tags_of(["THING", "WHEN"])
    assert model_kind(str(result.run_dir), get_settings()) == "token-classifier"
    model, tokenizer = load_model(str(result.run_dir), get_settings())
    assert has_token_head(model)
    held_out = span_rows(24, seed=7)
    report = evaluate_spans(model, tokenizer, [r["text"] for r in held_out], [r["spans"] for r in held_out])
    assert report.f1 > 0.9, report.to_dict()
    (found,) = predict_spans(model, tokenizer, ["the customer asked where the router is"])
    assert (found.spans, len(found.scores)) == ([(29, 35, "THING")], 1) and 0 < found.scores[0] <= 1
    assert 0 <= found.uncertainty <= 1


def test_decoder_token_head_trains_and_evaluates(tiny_chat_model, tmp_path):
    train_file = write_jsonl(tmp_path / "spans.jsonl", span_rows(24))
    r = recipe(tiny_chat_model, train_file, data={"validation_split": 0.25}, evaluation={"every_steps": 4},
               hyperparameters={"epochs": 2})
    result = train(r, get_settings(), tmp_path / "run")
    model, tokenizer = load_model(str(result.run_dir), get_settings())
    assert type(model.get_base_model()).__name__ == "LlamaForTokenClassification"
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["type"] == "eval"]
    assert evals and all(0 <= e["eval_f1"] <= 1 and e["eval_loss"] > 0 for e in evals)
    assert result.losses[-1] < result.losses[0]


def test_the_shipped_span_data_trains_a_tiny_head(tiny_encoder, tmp_path):
    """Every shipped ticket tokenizes with its tags, and the loss falls on them (the real-model test below
    measures what a real encoder learns)."""
    r = recipe(tiny_encoder, SHIPPED, hyperparameters={"epochs": None, "max_steps": 30, "batch_size": 16})
    result = train(r, get_settings(), tmp_path / "run")
    assert sum(result.losses[-5:]) / 5 < sum(result.losses[:5]) / 5


def test_labelled_data_is_refused_naming_the_example(tiny_encoder, tmp_path):
    train_file = write_jsonl(tmp_path / "labelled.jsonl", labelled_rows(12))
    with pytest.raises(TrainingError, match="token_classify' needs span data.*training example 1 is a labelled"):
        train(recipe(tiny_encoder, train_file), get_settings(), tmp_path / "run")


def test_a_validation_label_unseen_in_training_is_named(tiny_encoder, tmp_path):
    rows = span_rows(20)
    rows_val = [{"text": "the router is here", "spans": [{"start": 4, "end": 10, "label": "GADGET"}]}] * 2
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    val_file = write_jsonl(tmp_path / "val.jsonl", rows_val)
    with pytest.raises(TrainingError, match="example 1: label 'GADGET' is not in the training label set"):
        train(recipe(tiny_encoder, train_file, data={"validation": str(val_file)}), get_settings(), tmp_path / "run")


@pytest.mark.real_model
def test_minilm_finds_order_numbers_products_and_dates(tmp_path):
    """The quickstart's promise for NER: a token head on the embedded MiniLM, trained on 80% of the shipped
    tickets, finds their order numbers, products and dates on the other 20% with entity F1 above 0.8 (0.85 at 2
    epochs, measured)."""
    from tuneloop.data.dataset import Source, load_records
    from tuneloop.data.split import split_records
    from tuneloop.data.writers import write_records

    _, numbered = load_records(Source(SHIPPED))
    parts = split_records(numbered, {"train": 0.8, "test": 0.2}, seed=0)
    write_records(parts["train"], tmp_path / "train.jsonl", "spans")
    r = parse_recipe({"model": "minilm-l6", "method": "token_classify", "data": {"train": str(tmp_path / "train.jsonl")},
                      "hyperparameters": {"epochs": 2, "max_length": 128}, "seed": 0,
                      "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}})
    result = train(r, get_settings(), tmp_path / "run")
    model, tokenizer = load_model(str(result.run_dir), get_settings())
    test = [record for _, record in parts["test"]]
    report = evaluate_spans(model, tokenizer, [t.text for t in test], [t.spans for t in test])
    assert report.f1 > 0.8, report.to_dict()
    assert set(report.per_label) == {"DATE", "ORDER", "PRODUCT"}
