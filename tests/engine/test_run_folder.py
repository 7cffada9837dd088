"""The run folder's owner: typed events round-trip through JSON, unknown fields and types are kept, and
a folder in the layout the previous release wrote still loads, lists, serves and resumes."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import chat_rows, write_jsonl
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.loop import train
from tuneloop.models.generation import GenerationOptions, complete
from tuneloop.models.loading import load_model, model_kind
from tuneloop.models.run_folder import (Checkpoint, Done, Evaluation, Event, Message, RunFolder, RunMeta, Start, Step,
                                        UnknownEvent, read_events, run_status)
from tuneloop.serve.cache import ModelCache
from tuneloop.services import catalog


@pytest.mark.parametrize("event", [
    Step(step=3, total_steps=9, loss=1.25, lr=1e-4, grad_norm=0.5, epoch=0.33, tokens_per_second=100.0),
    Evaluation(4, {"eval_loss": 0.5, "eval_accuracy": 0.75}),
    Checkpoint(5, "/runs/x/checkpoints/step-0000005", True),
    Message("the method noticed something", level="warning"),
    Done(step=9, final="/runs/x/final", seconds=3.5, stopped="pruned"),
    Start(total_steps=9, method="sft", hyperparameters={"learning_rate": 2e-4}, method_defaults={"epochs": "why"}),
])
def test_every_event_type_round_trips(event):
    line = json.dumps(event.to_json())
    back = Event.from_json(json.loads(line))
    assert type(back) is type(event) and back == event


def test_evaluations_stay_flat_and_unknown_things_are_kept():
    evaluation = Evaluation(2, {"eval_loss": 0.25}).to_json()
    assert evaluation["eval_loss"] == 0.25 and "metrics" not in evaluation  # as the previous release wrote them
    newer = {"type": "rollouts", "time": 1.0, "step": 3, "samples": ["a", "b"]}
    event = Event.from_json(newer)
    assert isinstance(event, UnknownEvent) and event.to_json() == newer
    step = Event.from_json({"type": "step", "time": 1.0, "step": 1, "total_steps": 2, "loss": 0.5, "kl": 0.1})
    assert isinstance(step, Step) and step.extra == {"kl": 0.1} and step.to_json()["kl"] == 0.1
    meta = RunMeta.from_json({"base_model": "m", "method": "dpo", "adapter": "lora", "beta": 0.1})
    assert meta.extra == {"beta": 0.1} and meta.to_json()["beta"] == 0.1
    assert run_status([]) == "created" and run_status([step]) == "running"
    assert run_status([step, Done(step=2, final="f")]) == "succeeded"


# What the previous release wrote (before RunMeta, typed events and method defaults), line for line.
OLD_RECIPE = """model: {model}
method: sft
classifier: auto
train_on: assistant
data:
  train:
  - path: {data}
    format: null
    weight: 1.0
  validation: null
  validation_split: 0.0
adapter:
  type: lora
  r: 4
  alpha: 8
  dropout: 0.0
  target_modules: all-linear
  trainable_layers: 0
hyperparameters:
  epochs: 1.0
  max_steps: 4
  learning_rate: 0.01
  scheduler: cosine
  warmup_ratio: 0.03
  batch_size: 4
  gradient_accumulation: 1
  order: length
  max_length: 512
  weight_decay: 0.0
  max_grad_norm: 1.0
  precision: fp32
evaluation:
  every_steps: null
  each_epoch: false
early_stopping:
  enabled: false
  metric: eval_loss
  patience: 3
  min_delta: 0.0
checkpoints:
  every_steps: 2
  each_epoch: false
  keep_last: 2
seed: 0
output_dir: null
logging_steps: 1
"""


def old_layout(run_dir, model, data) -> None:
    """Turn a fresh run folder into exactly what the previous release left: its recipe, events and run.json."""
    (run_dir / "recipe.yaml").write_text(OLD_RECIPE.format(model=model, data=data))
    lines = [{"type": "start", "time": 1.0, "total_steps": 4, "steps_per_epoch": 4, "train_examples": 16,
              "validation_examples": 0, "trainable_parameters": 100, "parameters": 1000, "bf16": False,
              "device": "cpu", "dropped_examples": 0, "from_step": 0}]
    lines += [{"type": "step", "time": 2.0, "step": s, "epoch": s / 4, "loss": 3.0 - s / 4, "lr": 0.01,
               "grad_norm": 1.0, "tokens_per_second": 50.0, "total_steps": 4} for s in (1, 2, 3, 4)]
    lines += [{"type": "eval", "time": 3.0, "step": 4, "eval_loss": 2.5},
              {"type": "done", "time": 4.0, "step": 4, "final": str(run_dir / "final"), "seconds": 3.0,
               "tokens_per_second": 50.0, "stopped_early": False}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for folder in [run_dir / "final", *(run_dir / "checkpoints").glob("*/model")]:
        (folder / "run.json").write_text(json.dumps({
            "base_model": str(model), "method": "sft", "adapter": "lora", "classifier": None, "label_set": None,
            "steps": 4, "started_from": None, "best_checkpoint": None}, indent=1))


def test_a_run_folder_from_the_previous_release_loads_lists_serves_and_continues(tiny_chat_model, tmp_path):
    settings = get_settings()
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(16))
    recipe = parse_recipe({"model": str(tiny_chat_model), "data": {"train": str(data)},
                           "adapter": {"type": "lora", "r": 4, "alpha": 8},
                           "hyperparameters": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-2,
                                               "precision": "fp32"},
                           "checkpoints": {"each_epoch": False, "every_steps": 2}, "evaluation": {"each_epoch": False}})
    run_dir = settings.runs_dir / "run-old"
    train(recipe, settings, run_dir)
    old_layout(run_dir, tiny_chat_model, data)

    folder = RunFolder(run_dir)
    events = folder.read_events()
    assert isinstance(events[0], Start) and events[0].method is None and events[0].hyperparameters is None
    assert isinstance(events[-2], Evaluation) and events[-2].metrics == {"eval_loss": 2.5}
    assert isinstance(events[-1], Done) and events[-1].stopped is None and folder.status() == "succeeded"
    meta = folder.meta()
    assert meta is not None and meta.hyperparameters is None and meta.extra == {}

    listed = {r["id"]: r for r in catalog.runs(settings)}["run-old"]
    assert listed["status"] == "succeeded" and listed["steps"] == 4 and listed["last_loss"] == 2.0
    assert listed["has_model"]
    assert catalog.run(settings, "run-old")["result"]["base_model"] == str(tiny_chat_model)
    page = catalog.run_events(settings, "run-old")
    assert page["status"] == "succeeded" and page["finished"] and page["data"][-2]["eval_loss"] == 2.5

    assert model_kind(str(run_dir), settings) == "chat"
    model, tokenizer = load_model(str(run_dir), settings)
    answer = complete(model, tokenizer, [{"role": "user", "content": "What is 2 plus 2?"}],
                      GenerationOptions(max_tokens=3))
    cache = ModelCache(settings)
    with cache.using(str(run_dir)) as (served, served_tokenizer):
        assert complete(served, served_tokenizer, [{"role": "user", "content": "What is 2 plus 2?"}],
                        GenerationOptions(max_tokens=3)).text == answer.text
    cache.generation.shutdown()

    # a new run may start from it (sequential fine-tuning), and an old run resumes from its checkpoint
    follow_up = train(recipe.model_copy(update={"model": str(run_dir)}), settings, tmp_path / "next")
    assert RunMeta.read(follow_up.final_dir).started_from == str(run_dir)
    shutil.rmtree(run_dir / "final")
    shutil.rmtree(folder.checkpoint(4))  # as if it had stopped after step 2's checkpoint
    from tuneloop.engine.loop import resume

    resumed = resume(run_dir, settings)
    assert resumed.steps == 4 and len(resumed.losses) == 4 and folder.status() == "succeeded"
    assert [e.step for e in read_events(folder.events)[-4:] if isinstance(e, Step)] == [3, 4]
