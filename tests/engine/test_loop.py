"""The training loop on a tiny model: determinism, exact resume, adapters, early stopping, failures."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import chat_rows, write_jsonl
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.models.run_folder import Checkpoint, EarlyStop, Error, Resumed, Step, read_events
from tuneloop.engine.loop import Loop, TrainingError, resume, train
from tuneloop.engine.loop import run_loop
from tuneloop.engine.methods.sft import collate, sft_loss
from tuneloop.engine.tokenize import tokenize_messages


@pytest.fixture
def train_file(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", chat_rows(24))


def recipe(tiny_chat_model, train_file, **overrides):
    base = {"model": str(tiny_chat_model), "data": {"train": str(train_file)},
            "hyperparameters": {"max_steps": 6, "batch_size": 4, "learning_rate": 1e-2, "precision": "fp32"},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1},
            "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 3}
    for key, value in overrides.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return parse_recipe(base)


def test_sft_loss_equals_the_models_own_loss(tiny_chat_model, tiny_tokenizer):
    """Our loss (head applied only at labelled positions) equals transformers' CausalLM loss."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    examples = [tokenize_messages(tiny_tokenizer, row["messages"], 512) for row in chat_rows(4)]
    batch = collate(examples, tiny_tokenizer.pad_token_id)
    loss_sum, n = sft_loss(model, batch)
    reference = model(**batch).loss
    assert n == sum(e.n_target_tokens for e in examples)
    assert torch.allclose(loss_sum / n, reference, atol=1e-5)


def test_same_seed_same_losses(tiny_chat_model, train_file, tmp_path):
    a = train(recipe(tiny_chat_model, train_file), get_settings(), tmp_path / "a")
    b = train(recipe(tiny_chat_model, train_file), get_settings(), tmp_path / "b")
    c = train(recipe(tiny_chat_model, train_file, seed=4), get_settings(), tmp_path / "c")
    assert a.losses == b.losses and len(a.losses) == 6
    assert a.losses != c.losses
    assert a.losses[-1] < a.losses[0]


class Killed(Exception):
    pass


def test_a_killed_run_resumes_exactly(tiny_chat_model, train_file, tmp_path):
    settings = get_settings()
    r = recipe(tiny_chat_model, train_file, hyperparameters={"max_steps": 8}, checkpoints={"every_steps": 3})
    whole = train(r, settings, tmp_path / "whole")

    def kill_at_step_5(event):
        if isinstance(event, Step) and event.step == 5:
            raise Killed()

    with pytest.raises(Killed):
        train(r, settings, tmp_path / "killed", listener=kill_at_step_5)
    resumed = resume(tmp_path / "killed", settings)
    events = read_events(tmp_path / "killed" / "events.jsonl")
    assert [e.step for e in events if isinstance(e, Resumed)] == [3]  # from the last checkpoint, not 0
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6)
    a = load_file(tmp_path / "whole" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("adapter", ["lora", "dora", "ia3", "full", "freeze"])
def test_training_changes_every_trainable_parameter_and_no_frozen_one(adapter, tiny_chat_model, train_file, tmp_path):
    # two steps: LoRA's B starts at zero, so A only gets a gradient once B has moved
    extra = {"type": adapter, "trainable_layers": 1} if adapter == "freeze" else {"type": adapter}
    r = recipe(tiny_chat_model, train_file, adapter=extra, hyperparameters={"max_steps": 2, "warmup_ratio": 0})
    loop = Loop(r, tmp_path / adapter, get_settings())
    loop.setup()
    before = {name: p.detach().clone() for name, p in loop.model.named_parameters()}
    trainable = {name for name, p in loop.model.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) < len(before) or adapter == "full"
    loop.train()
    after = dict(loop.model.named_parameters())
    unchanged = [n for n in trainable if torch.equal(before[n], after[n])]
    moved = [n for n in before if n not in trainable and not torch.equal(before[n], after[n])]
    assert not unchanged, f"trainable but unchanged: {unchanged[:5]}"
    assert not moved, f"frozen but changed: {moved[:5]}"


def test_qlora_on_cpu_says_it_needs_a_gpu(tiny_chat_model, train_file, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(TrainingError, match="needs a CUDA GPU.*Use 'lora'"):
        train(recipe(tiny_chat_model, train_file, adapter={"type": "qlora"}), get_settings(), tmp_path / "q")


def test_early_stopping_keeps_and_marks_the_best_checkpoint(tiny_chat_model, train_file, tmp_path):
    r = recipe(tiny_chat_model, train_file, data={"validation_split": 0.25}, evaluation={"every_steps": 1},
               early_stopping={"enabled": True, "patience": 2, "min_delta": 100.0},
               hyperparameters={"max_steps": 20})
    result = train(r, get_settings(), tmp_path / "es")
    assert result.stopped_early and result.steps == 3  # step 1 is best; 2 and 3 cannot beat it by 100
    events = read_events(tmp_path / "es" / "events.jsonl")
    stop = next(e for e in events if isinstance(e, EarlyStop))
    assert stop.best_checkpoint.endswith("step-0000001")
    assert (tmp_path / "es" / "checkpoints" / "step-0000001").is_dir()
    meta = json.loads((tmp_path / "es" / "final" / "run.json").read_text())
    assert meta["best_checkpoint"].endswith("step-0000001")


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_chat_model, train_file, tmp_path):
    r = recipe(tiny_chat_model, train_file, checkpoints={"every_steps": 1},
               hyperparameters={"max_steps": 6, "warmup_ratio": 0, "max_grad_norm": None})
    run_dir = tmp_path / "nan"

    def poison(event):  # after step 2 is saved, corrupt the weights as a diverging run would
        if isinstance(event, Checkpoint) and event.step == 2:
            with torch.no_grad():
                next(p for p in loop.model.parameters() if p.requires_grad).fill_(float("nan"))

    loop = Loop(r, run_dir, get_settings(), poison)
    with pytest.raises(TrainingError, match="loss became nan at step 3"):
        run_loop(loop)
    events = read_events(run_dir / "events.jsonl")
    assert isinstance(events[-1], Error) and "last good checkpoint is kept" in events[-1].message
    assert (run_dir / "checkpoints" / "step-0000002").is_dir()
    assert not (run_dir / "checkpoints" / "step-0000003").exists()


def _prefix_rows(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "you are a helpful assistant answer in one word"},
             {"role": "user", "content": f"the router keeps dropping {'the connection ' * (i % 3)}after update {i}"},
             {"role": "assistant", "content": ["technical", "billing", "shipping"][i % 3]}] for i in range(n)]


@pytest.mark.parametrize("case", ["packed, shared prefix", "packed", "no padding mask"])
def test_fast_forward_paths_give_the_models_own_loss_and_gradients(case, tiny_chat_model, tiny_tokenizer):
    """The fast paths of the SFT forward against transformers' own padded forward: packed (no padding, no
    position after a row's last target), with a system prompt common to the batch run once (its keys and
    values shared by every row) or without; and right-padded rows without a padding mask (the causal mask
    alone hides every pad from real tokens). Loss and every gradient match."""
    from transformers import AutoModelForCausalLM

    from tuneloop.engine.methods.sft import causal_parts, labelled_logits, pack, right_padded, shared_prefix_length

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    share = case == "packed, shared prefix"
    rows = _prefix_rows(5) if share else [r["messages"] for r in chat_rows(6)]
    batch = collate([tokenize_messages(tiny_tokenizer, r, 512) for r in rows], tiny_tokenizer.pad_token_id)
    assert right_padded(batch["attention_mask"]) and not bool(batch["attention_mask"].all())  # some rows pad
    assert not right_padded(batch["attention_mask"].flip(1))
    prefix = shared_prefix_length(batch) if share else 0
    assert prefix >= 10 or not share
    if case.startswith("packed"):
        layout = pack(batch, prefix)
        assert layout.ids.shape[1] < int(batch["attention_mask"].sum())  # fewer tokens than the batch holds

    def loss_and_grads(reference: bool):
        model.zero_grad()
        if reference:  # transformers' forward with the padding mask, every row whole
            decoder, head = causal_parts(model)
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            targets = batch["labels"][:, 1:]
            keep = targets != -100
            logits, targets = head(hidden[:, :-1][keep]), targets[keep]
        else:
            logits, targets = labelled_logits(model, batch, share_prefix=share, packed=case.startswith("packed"))
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    fast, reference = loss_and_grads(False), loss_and_grads(True)
    assert torch.allclose(fast[0], reference[0], atol=1e-5)
    for name, grad in reference[1].items():
        assert torch.allclose(fast[1][name], grad, atol=1e-6), name


def test_no_shared_prefix_when_a_target_is_inside_it(tiny_tokenizer):
    examples = [tokenize_messages(tiny_tokenizer, row["messages"], 512, train_on="all") for row in chat_rows(3)]
    from tuneloop.engine.methods.sft import shared_prefix_length

    assert shared_prefix_length(collate(examples, tiny_tokenizer.pad_token_id)) == 0
