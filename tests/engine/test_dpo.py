"""DPO and its variants: the loss against TRL's DPOTrainer on the same batch (to 1e-5), the reference (the
adapter switched off, a frozen copy, or precomputed), training on preference pairs, step metrics and resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.conftest import chat_rows, write_jsonl, assert_resumes_exactly
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.loop import TrainingError, train
from tuneloop.engine.methods.dpo import DPO, REFERENCE_FILE
from tuneloop.engine.tokenize import IGNORE


def pairs(n: int = 8) -> list[dict]:
    """Prompts with a chosen answer about the package and a rejected one about passwords (tiny vocabulary)."""
    return [{"prompt": f"where is the order {i}", "chosen": "the package will arrive at the address",
             "rejected": "please reset my password" + " code" * (i % 3)} for i in range(n)]


def recipe(model, train_file, **overrides):
    base = {"model": str(model), "method": "dpo", "data": {"train": str(train_file)},
            "hyperparameters": {"epochs": 3, "batch_size": 4, "learning_rate": 5e-3, "precision": "fp32"},
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 1}
    for key, value in overrides.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return parse_recipe(base)


@pytest.fixture(scope="module")
def trl_setup(tiny_chat_model, tmp_path_factory):
    """TRL's DPOTrainer on the tiny model, with a reference made different from it, and one batch of 4 pairs."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs(4)]
    # fp32 throughout: with mixed precision accelerate wraps the reference's forward in autocast
    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl-dpo")), per_device_train_batch_size=4, report_to=[],
                     use_cpu=True, max_length=128, bf16=False, fp16=False)
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer, batch, reference


@pytest.mark.parametrize("kind,label_smoothing", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.1)])
def test_the_loss_matches_trl_on_the_same_batch(trl_setup, tiny_chat_model, kind, label_smoothing):
    trainer, batch, reference = trl_setup
    trainer.loss_types, trainer.loss_weights = [kind], [1.0]
    trainer.beta, trainer.label_smoothing = 0.3, label_smoothing
    mode = "train" if trainer.model.training else "eval"
    trainer._metrics[mode].clear()
    expected = float(trainer._compute_loss(trainer.model, batch, return_outputs=False))
    metrics = {k: v[-1] for k, v in trainer._metrics[mode].items()}

    method = DPO(recipe(tiny_chat_model, "x.jsonl", dpo={"loss": kind, "beta": 0.3, "label_smoothing": label_smoothing}),
                 "chat")
    method.reference = reference
    ours = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE),
            "pair_index": torch.arange(4)}
    terms = method.pair_terms(trainer.model, ours)
    assert float(terms["losses"].mean()) == pytest.approx(expected, abs=1e-5)
    assert float(terms["chosen"].mean()) == pytest.approx(metrics["rewards/chosen"], abs=1e-5)
    assert float(terms["rejected"].mean()) == pytest.approx(metrics["rewards/rejected"], abs=1e-5)
    assert float((terms["chosen"] - terms["rejected"]).mean()) == pytest.approx(metrics["rewards/margins"], abs=1e-5)


def test_dpo_learns_the_preference_and_logs_reward_metrics(tiny_chat_model, tmp_path):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(8))
    r = recipe(tiny_chat_model, train_file, data={"validation_split": 0.25}, evaluation={"every_steps": 2})
    result = train(r, get_settings(), tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert all({"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(e) for e in steps)
    assert steps[-1]["rewards/margins"] > steps[0]["rewards/margins"]
    evals = [e for e in events if e["type"] == "eval"]
    assert evals[-1]["eval_rewards_accuracies"] == 1.0 and evals[-1]["eval_rewards_margins"] > 0
    assert result.losses[-1] < result.losses[0]
    meta = json.loads((result.final_dir / "run.json").read_text())
    assert meta["method"] == "dpo" and meta["preference"]["beta"] == 0.1


def test_training_changes_every_trainable_weight_and_the_adapter_off_is_the_base(tiny_chat_model, tmp_path):
    """Two steps (LoRA's B starts at zero, so A gets a gradient once B has moved); the frozen base, which is
    the reference, does not move."""
    from transformers import AutoModelForCausalLM

    from tuneloop.engine.loop import Loop

    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(4))
    loop = Loop(recipe(tiny_chat_model, train_file, hyperparameters={"max_steps": 2, "epochs": None, "warmup_ratio": 0}),
                tmp_path / "run", get_settings())
    loop.setup()
    before = {n: p.detach().clone() for n, p in loop.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in loop.model.named_parameters() if not p.requires_grad}
    loop.train()
    after = dict(loop.model.named_parameters())
    assert before and all(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.equal(frozen[n], after[n]) for n in frozen)
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    ids = torch.tensor([[1, 5, 9, 14, 20]])
    with torch.no_grad(), loop.model.disable_adapter():
        assert torch.equal(loop.model(input_ids=ids).logits, base(input_ids=ids).logits)


def test_full_fine_tuning_uses_a_frozen_copy_or_precomputed_reference(tiny_chat_model, tmp_path):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(4))
    full = recipe(tiny_chat_model, train_file, adapter={"type": "full"},
                  hyperparameters={"max_steps": 2, "epochs": None, "learning_rate": 1e-3})
    from tuneloop.engine.loop import Loop

    loop = Loop(full, tmp_path / "copy", get_settings())
    loop.setup()
    reference = {n: p.detach().clone() for n, p in loop.method.reference.named_parameters()}
    copied = loop.train()
    assert all(torch.equal(reference[n], p) for n, p in loop.method.reference.named_parameters())
    assert not torch.equal(reference["lm_head.weight"] if "lm_head.weight" in reference else
                           reference["model.embed_tokens.weight"], loop.model.get_input_embeddings().weight)
    pre = full.model_copy(update={"dpo": full.dpo.model_copy(update={"precompute_reference": True})})
    precomputed = train(pre, get_settings(), tmp_path / "pre")
    stored = json.loads((tmp_path / "pre" / REFERENCE_FILE).read_text())
    assert stored["pairs"] == 4 and all(c < 0 and r < 0 for c, r in stored["values"].values())
    assert precomputed.losses == pytest.approx(copied.losses, abs=1e-5)  # the same reference, either way


def test_a_killed_run_resumes_exactly(tiny_chat_model, tmp_path):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(8))
    assert_resumes_exactly(recipe(tiny_chat_model, train_file, hyperparameters={"max_steps": 8, "epochs": None,
                                                                               "batch_size": 2},
                                  checkpoints={"every_steps": 3}, dpo={"precompute_reference": True}), tmp_path, 5)


def test_bad_data_and_settings_are_named(tiny_chat_model, tmp_path):
    chats = write_jsonl(tmp_path / "chats.jsonl", chat_rows(12))
    with pytest.raises(TrainingError, match="'dpo' needs preference pairs.*training example 1 is a chat record"):
        train(recipe(tiny_chat_model, chats), get_settings(), tmp_path / "run")
    from tuneloop.config.recipe import RecipeError

    with pytest.raises(RecipeError, match="dpo.beta: Input should be greater than 0"):
        recipe(tiny_chat_model, chats, dpo={"beta": 0})
    with pytest.raises(RecipeError, match="dpo.loss"):
        recipe(tiny_chat_model, chats, dpo={"loss": "kto"})


def ticket_pairs(folder, train_n: int, test_n: int, seed: int = 0, system: str | None = None):
    """Preference pairs from the shipped tickets: the classification prompt (or, with `system`, that system message
    and the ticket), the ticket's own team chosen over another team (train.jsonl and test.jsonl, no ticket in
    both)."""
    import random
    from pathlib import Path

    from tuneloop.engine.tokenize import classification_messages

    rows = [json.loads(line) for line in (Path(__file__).resolve().parents[2] / "src/tuneloop/examples/"
                                          "support_tickets.jsonl").read_text().splitlines()]
    labels = sorted({r["label"] for r in rows})
    rng = random.Random(seed)
    rng.shuffle(rows)

    def pair(row):
        wrong = rng.choice([label for label in labels if label != row["label"]])
        prompt = (classification_messages(row["text"], labels) if system is None else
                  [{"role": "system", "content": system}, {"role": "user", "content": row["text"]}])
        return {"input": {"messages": prompt},
                "preferred_output": [{"role": "assistant", "content": row["label"]}],
                "non_preferred_output": [{"role": "assistant", "content": wrong}]}

    return (write_jsonl(folder / "train.jsonl", [pair(r) for r in rows[:train_n]]),
            write_jsonl(folder / "test.jsonl", [pair(r) for r in rows[train_n : train_n + test_n]]))


@pytest.mark.real_model
def test_dpo_on_smollm2_prefers_the_right_team_on_held_out_tickets(real_chat_model, tmp_path):
    """DPO (LoRA) on pairs made from the shipped tickets: the held-out implicit-reward accuracy (the chosen answer's
    reward above the rejected one's) rises above 0.8 from about 0.47.

    Sized for the suite's time: 120 pairs, 2 epochs at 3e-3 (the defaults' 1e-3 wants 400 pairs seen), the
    reference precomputed once, one evaluation at the end, and a short system message with the ticket (39 tokens
    on average; the classification prompt that lists the teams is 62). Measured on 2 cores: 0.896 in 106 s (0.875
    at 2e-3; with the defaults on 200 pairs, 0.95 in about five minutes)."""
    train_file, test_file = ticket_pairs(tmp_path, 120, 48, system="Team?")
    r = parse_recipe({"model": str(real_chat_model), "method": "dpo",
                      "data": {"train": str(train_file), "validation": str(test_file)},
                      "hyperparameters": {"max_length": 128, "epochs": 2, "learning_rate": 3e-3},
                      "dpo": {"precompute_reference": True},
                      "evaluation": {"each_epoch": False, "every_steps": 30},
                      "checkpoints": {"each_epoch": False}, "seed": 0})
    train(r, get_settings(), tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [30]
    assert evals[-1]["eval_rewards_accuracies"] > 0.8, evals


def test_the_shared_prompt_gives_the_whole_conversations_log_probabilities(tiny_chat_model, tmp_path):
    """A pair's prompt runs once and both answers continue from its cache: the same log-probabilities (and
    gradients) as running each whole conversation, to 1e-5, with prompts of different lengths in one batch."""
    from transformers import AutoTokenizer

    from tuneloop.data.dataset import Source, load_records
    from tuneloop.engine.methods.dpo import collate_full, collate_shared, sequence_logps, shared_logps, tokenize_pairs
    from tuneloop.models.loading import load_causal_lm

    rows = pairs(4)
    rows[1]["prompt"] = "hi"
    rows[2]["chosen"] = "the package will arrive at the address please"
    rows[3]["rejected"] = "the package will never arrive"  # answers sharing their first tokens
    _, records = load_records(Source(write_jsonl(tmp_path / "p.jsonl", rows)))
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    examples, _ = tokenize_pairs(tokenizer, [r for _, r in records], 128)
    model, _ = load_causal_lm(str(tiny_chat_model), get_settings())
    full, full_counts = sequence_logps(model, collate_full(examples, tokenizer.pad_token_id))
    full.sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    shared, shared_counts = shared_logps(model, collate_shared(examples, tokenizer.pad_token_id))
    shared.sum().backward()
    assert torch.equal(full_counts, shared_counts)
    assert torch.allclose(shared, full, atol=1e-5), (shared, full)
    assert all(torch.allclose(p.grad, g, atol=1e-5) for p, g in zip(model.parameters(), expected))


def test_a_batch_runs_the_way_that_processes_fewer_tokens(tiny_chat_model, tmp_path):
    from transformers import AutoTokenizer

    from tuneloop.data.dataset import Source, load_records
    from tuneloop.engine.methods.dpo import collate_pairs, tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)

    def layout(rows):
        _, records = load_records(Source(write_jsonl(tmp_path / "p.jsonl", rows)))
        examples, _ = tokenize_pairs(tokenizer, [r for _, r in records], 256)
        return "shared prompts" if "prompt_ids" in collate_pairs(examples, tokenizer.pad_token_id) else "whole"

    # different long prompts, short answers: each prompt once per pair
    starts = ["where", "when", "please", "reset"]
    distinct = [{"prompt": f"{starts[i]} " + " ".join(["is the order and will the package arrive"] * 3),
                 "chosen": "billing", "rejected": "shipping"} for i in range(4)]
    assert layout(distinct) == "shared prompts"
    # one long system prompt for every pair and short questions: that prefix once for the whole batch
    system = [{"input": {"messages": [{"role": "system", "content": "you are a helpful assistant " * 12},
                                      {"role": "user", "content": f"topic {i}"}]},
               "preferred_output": [{"role": "assistant", "content": "billing shipping technical account"}],
               "non_preferred_output": [{"role": "assistant", "content": "returns feedback"}]} for i in range(4)]
    assert layout(system) == "whole"


def test_the_precomputed_reference_is_read_back_only_for_the_same_pairs(tiny_chat_model, tmp_path):
    from tuneloop.engine.loop import Loop

    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs(4))
    r = recipe(tiny_chat_model, train_file, hyperparameters={"max_steps": 1, "epochs": None},
               dpo={"precompute_reference": True})
    first = Loop(r, tmp_path / "run", get_settings())
    first.setup()
    path = tmp_path / "run" / REFERENCE_FILE
    stored = json.loads(path.read_text())
    stored["values"]["0"] = [-1.0, -2.0]  # as if written by this run: read back as it is
    path.write_text(json.dumps(stored))
    again = Loop(r, tmp_path / "run", get_settings())
    again.setup()
    assert again.method.precomputed[0] == (-1.0, -2.0)
    write_jsonl(train_file, pairs(5))  # other pairs: computed again, not read
    changed = Loop(r, tmp_path / "run", get_settings())
    changed.setup()
    assert len(changed.method.precomputed) == 5 and changed.method.precomputed[0] != (-1.0, -2.0)
    path.write_text('{"digest": "x", "val')  # a torn write: computed again
    torn = Loop(r, tmp_path / "run", get_settings())
    torn.setup()
    assert len(torn.method.precomputed) == 5
