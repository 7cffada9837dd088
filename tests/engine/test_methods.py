"""The method registry: a method defined here trains and resumes through `train()` with no other file
changed; unknown methods are named errors; every method's defaults fill every empty hyperparameter; the
control object stops, pauses and saves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.conftest import chat_rows, write_jsonl
from tests.engine.test_classify_head import topic_rows
from tuneloop.config.recipe import RecipeError, parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine import methods
from tuneloop.engine.control import Control
from tuneloop.engine.loop import Loop, effective_hyperparameters, resume, run_loop, train
from tuneloop.engine.methods import Defaults, Method, Prepared, method_for, register
from tuneloop.models.run_folder import Checkpoint, Done, Evaluation, RunMeta, Start, Step, read_events


# ---------------------------------------------------------------------- a toy method, registered here only
@dataclass
class ToyExample:
    ids: list[int]


class NextTokenOnEverything(Method):
    """Plain language modelling on a record's words, with its own examples, batches, loss and metadata."""

    name = "toy-next-token"
    task_type = "CAUSAL_LM"

    def load(self, settings: Any, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return AutoModelForCausalLM.from_pretrained(self.recipe.model), AutoTokenizer.from_pretrained(self.recipe.model)

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        def encode(part: list[Any]) -> list[ToyExample]:
            return [ToyExample(tokenizer(" ".join(m.content for m in r.to_messages()))["input_ids"][:24]) for r in part]

        return Prepared(encode(records.train), encode(records.validation))

    def defaults(self, examples: int) -> Defaults:
        return Defaults({"learning_rate": 1e-2, "epochs": 2, "warmup_ratio": 0.0}, {"epochs": "toy"})

    def length(self, example: ToyExample) -> int:
        return len(example.ids)

    def collate(self, examples: list[ToyExample], pad_id: int) -> dict[str, torch.Tensor]:
        width = max(len(e.ids) for e in examples)
        ids = torch.full((len(examples), width), pad_id)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, e in enumerate(examples):
            ids[row, : len(e.ids)], mask[row, : len(e.ids)] = torch.tensor(e.ids), 1
        return {"input_ids": ids, "attention_mask": mask}

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        keep = batch["attention_mask"][:, 1:] == 1
        targets = batch["input_ids"][:, 1:][keep]
        return F.cross_entropy(logits[keep].float(), targets, reduction="sum"), len(targets)

    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"][:, 1:].sum())

    def run_meta(self) -> dict[str, Any]:
        return {"toy": "next token on everything"}


@pytest.fixture
def toy(monkeypatch):
    methods.registered()  # the built-in methods first, so the toy is one among them
    monkeypatch.setitem(methods._REGISTRY, "toy-next-token", NextTokenOnEverything)
    return "toy-next-token"


def toy_recipe(model, data, **hp):
    return parse_recipe({"model": str(model), "method": "toy-next-token", "data": {"train": str(data),
                         "validation_split": 0.2}, "adapter": {"type": "lora", "r": 4, "alpha": 8},
                         "hyperparameters": {"batch_size": 4, "precision": "fp32", **hp},
                         "checkpoints": {"each_epoch": False, "every_steps": 3}, "seed": 5})


class Killed(Exception):
    pass


def test_a_method_registered_in_a_test_trains_and_resumes_exactly(toy, tiny_chat_model, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(20))
    recipe = toy_recipe(tiny_chat_model, data)  # 16 training examples, 4 a step, the toy's 2 epochs: 8 steps
    whole = train(recipe, get_settings(), tmp_path / "whole")
    assert whole.steps == 8 and whole.losses[-1] < whole.losses[0]
    events = read_events(tmp_path / "whole" / "events.jsonl")
    start = next(e for e in events if isinstance(e, Start))
    assert start.method == "toy-next-token" and start.method_defaults == {"epochs": "toy"}
    assert start.hyperparameters["learning_rate"] == 1e-2
    assert [e.step for e in events if isinstance(e, Evaluation)] == [4, 8]  # each epoch, on the held-out 4
    meta = RunMeta.read(whole.final_dir)
    assert meta.method == "toy-next-token" and meta.extra == {"toy": "next token on everything"}

    def kill_at_step_5(event):
        if isinstance(event, Step) and event.step == 5:
            raise Killed()

    with pytest.raises(Killed):
        train(recipe, get_settings(), tmp_path / "killed", listener=kill_at_step_5)
    resumed = resume(tmp_path / "killed", get_settings())
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6)
    a = load_file(whole.final_dir / "adapter_model.safetensors")
    b = load_file(resumed.final_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_an_unknown_method_lists_the_registered_ones(tiny_chat_model, tmp_path):
    recipe = parse_recipe({"model": str(tiny_chat_model), "method": "ppo", "data": {"train": "x.jsonl"}})
    with pytest.raises(RecipeError, match=r"method: 'ppo' is not a registered method; registered methods: "
                                          r"classify, dpo, grpo, kto, orpo, reward, sft, token_classify$"):
        train(recipe, get_settings(), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before a run folder is made


@pytest.mark.parametrize("method,kind", [("sft", "chat"), ("classify", "chat"), ("classify", "encoder"),
                                         ("classify", "classifier"), ("token_classify", "encoder"), ("dpo", "chat")])
@pytest.mark.parametrize("adapter", ["lora", "dora", "ia3", "full", "freeze"])
def test_every_method_fills_every_empty_hyperparameter(method, kind, adapter):
    recipe = parse_recipe({"method": method, "adapter": {"type": adapter}})
    chosen = method_for(recipe, kind)
    for examples in (1, 40, 400, 100_000):
        hp = effective_hyperparameters(recipe.hyperparameters, chosen.defaults(examples))
        assert hp.learning_rate > 0 and hp.epochs >= 1 and 0 <= hp.warmup_ratio < 1
        if chosen.task_type == "SEQ_CLS":
            assert hp.head_learning_rate > hp.learning_rate or adapter in {"ia3", "freeze"}
    # what the recipe gives wins over the method's choice
    given = parse_recipe({"method": method, "adapter": {"type": adapter}, "hyperparameters": {"learning_rate": 0.5}})
    assert effective_hyperparameters(given.hyperparameters, chosen.defaults(10)).learning_rate == 0.5


def test_epochs_scale_with_the_data():
    sft = method_for(parse_recipe({}), "chat")
    assert [sft.defaults(n).values["epochs"] for n in (10, 100, 5_000, 100_000)] == [10, 3, 3, 1]
    head = method_for(parse_recipe({"method": "classify"}), "encoder")
    assert [head.defaults(n).values["epochs"] for n in (40, 400, 5_000)] == [25, 8, 5]


def test_a_fresh_head_learns_an_easy_task_with_the_defaults(tiny_encoder, tmp_path):
    data = write_jsonl(tmp_path / "topics.jsonl", topic_rows(120))
    held_out = write_jsonl(tmp_path / "held-out.jsonl", topic_rows(30)[::-1])
    recipe = parse_recipe({"model": str(tiny_encoder), "method": "classify", "seed": 1,
                           "data": {"train": str(data), "validation": str(held_out)},
                           "hyperparameters": {"precision": "fp32"}, "checkpoints": {"each_epoch": False}})
    result = train(recipe, get_settings(), tmp_path / "run")
    # no learning rate or epochs given: the head's defaults take it from near chance (1 in 3) to above 0.9
    assert result.evals[0]["eval_accuracy"] < 0.5 and result.evals[-1]["eval_accuracy"] >= 0.9


# ---------------------------------------------------------------------- the control object
def test_control_stops_pauses_and_saves(toy, tiny_chat_model, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(20))
    recipe = toy_recipe(tiny_chat_model, data)
    whole = train(recipe, get_settings(), tmp_path / "whole")

    control = Control()

    def on_event(event):  # what a search's pruner does: look at a metric, then stop the trial
        if isinstance(event, Step) and event.step == 2:
            control.save = True
        if isinstance(event, Evaluation):
            control.request_stop("pruned")

    pruned = train(recipe, get_settings(), tmp_path / "pruned", listener=on_event, control=control)
    events = read_events(tmp_path / "pruned" / "events.jsonl")
    assert pruned.steps == 4 and not pruned.stopped_early
    assert isinstance(events[-1], Done) and events[-1].stopped == "pruned"
    assert [e.step for e in events if isinstance(e, Checkpoint)] == [2, 3]  # asked for at 2; every 3 steps
    assert (pruned.final_dir / "run.json").exists()

    pause = Control()
    loop = Loop(recipe, tmp_path / "paused", get_settings(),
                lambda e: pause.request_pause() if isinstance(e, Step) and e.step == 5 else None, pause)
    (tmp_path / "paused" / "recipe.yaml").write_text((tmp_path / "whole" / "recipe.yaml").read_text())
    paused = run_loop(loop)
    assert paused.paused and paused.steps == 5 and not (tmp_path / "paused" / "final").exists()
    resumed = resume(tmp_path / "paused", get_settings())
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6)


def test_register_adds_a_name_the_recipe_may_use(toy, tiny_chat_model):
    assert "toy-next-token" in methods.registered() and {"sft", "classify"} <= set(methods.registered())

    @register("toy-two")
    class Two(NextTokenOnEverything):
        name = "toy-two"

    try:
        chosen = method_for(parse_recipe({"model": str(tiny_chat_model), "method": "toy-two"}), "chat")
        assert isinstance(chosen, Two)
    finally:
        methods._REGISTRY.pop("toy-two")
