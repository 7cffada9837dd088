"""GRPO: advantages and the per-token loss against TRL's GRPOTrainer from fixed completions, rewards and
log-probabilities (to 1e-5), learning from a reward on a tiny model, rollouts kept in the run folder, resume, and
bad data or settings named."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import chat_rows, write_jsonl, assert_resumes_exactly
from tuneloop.config.recipe import RecipeError, parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.loop import TrainingError, train
from tuneloop.engine.methods.grpo import GRPO, REWARD_SOURCES, ROLLOUTS_FILE, completion_logps, group_advantages
from tuneloop.engine.tokenize import IGNORE, Example
import tuneloop.evals.rl  # noqa: F401 - registers the real reward sources (grader, reward_model, function)


def vowels(source, settings):
    """A dense toy reward the tiny model can learn: the share of its answer's characters that are vowels."""
    def reward(prompts, completions, items):
        return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]
    return reward


BEFORE = dict(REWARD_SOURCES)
"""The real sources, restored after each test (the toy function replaces `function` in this file's tests)."""


@pytest.fixture(autouse=True)
def toy_rewards():
    before = dict(REWARD_SOURCES)
    REWARD_SOURCES["function"] = vowels
    yield
    REWARD_SOURCES.clear()
    REWARD_SOURCES.update(before)


def prompts(n: int = 16) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"where is the order {i}"}], "team": "shipping"} for i in range(n)]


def recipe(model, train_file, **overrides):
    base = {"model": str(model), "method": "grpo", "data": {"train": str(train_file)},
            "hyperparameters": {"epochs": 6, "batch_size": 4, "learning_rate": 5e-2, "precision": "fp32"},
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "grpo": {"rewards": [{"function": "toy:vowels"}], "num_generations": 4, "max_completion_length": 6},
            "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 1}
    for key, value in overrides.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return parse_recipe(base)


def test_group_advantages_follow_trls_formula():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, float("nan"), 1.0, 0.0])
    advantages, spread = group_advantages(rewards, 2, "group")
    first = torch.tensor([1.0, 0.0, 0.5, 0.5])
    expected = (first - first.mean()) / (first.std() + 1e-4)
    assert advantages[:4].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    second = torch.tensor([2.0, 1.0, 0.0])  # the NaN left out of the mean and std, and its advantage 0
    assert advantages[5] == 0 and advantages[4] == pytest.approx(float((2 - second.mean()) / (second.std() + 1e-4)))
    assert spread[:4].tolist() == pytest.approx([float(first.std())] * 4)
    flat, flat_spread = group_advantages(torch.tensor([0.3, 0.3, 0.3, 0.3]), 1, "group")
    assert flat.tolist() == [0.0] * 4 and flat_spread.tolist() == [0.0] * 4  # a group that teaches nothing
    unscaled, _ = group_advantages(first, 1, "none")
    assert unscaled.tolist() == pytest.approx((first - first.mean()).tolist())


@pytest.mark.parametrize("loss,beta,scale,temperature", [
    ("grpo", 0.0, "group", 1.0), ("dapo", 0.0, "batch", 1.0), ("dr_grpo", 0.0, "none", 1.0), ("dapo", 0.04, "group", 0.7)])
def test_advantages_and_loss_match_trl(tiny_chat_model, tmp_path, loss, beta, scale, temperature):
    """TRL's own path from generation to loss, with its generation replaced by fixed completions and its rewards by
    fixed numbers; the old policy's and the reference's log-probabilities perturbed so that clipping and the KL
    term act."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    chats = [[{"role": "user", "content": "where is the order 1"}], [{"role": "user", "content": "reset it"}]]
    prompt_ids = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)
                  ["input_ids"] for c in chats]
    completion_ids = [[5, 6, 7, tokenizer.eos_token_id], [8, 9], [10, 11, 12], [6, tokenizer.eos_token_id],
                      [13], [14, 15, 16, 17], [18, 19], [20, 21, 22]]
    fixed = [1.0, 0.0, 0.25, 0.75, 0.5, 0.5, 0.9, 0.1]
    per_prompt = 4
    texts = [f"c{i}" for i in range(len(completion_ids))]
    reward_of = dict(zip(texts, fixed))

    def fixed_reward(prompts, completions, **kwargs):
        return [reward_of[c] for c in completions]

    args = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=8, num_generations=per_prompt,
                      max_completion_length=6, report_to=[], use_cpu=True, bf16=False, fp16=False, loss_type=loss,
                      beta=beta, epsilon=0.2, scale_rewards=scale, temperature=temperature)
    trainer = GRPOTrainer(model=model, reward_funcs=[fixed_reward], args=args, processing_class=tokenizer,
                          train_dataset=Dataset.from_list([{"prompt": c} for c in chats]))
    rollouts = ([prompt_ids[i // per_prompt] for i in range(8)], completion_ids, None, texts, None, {}, None, None)
    trainer._generate = lambda prompts: rollouts
    model.eval()  # TRL's eval-mode normalisers: no accumulation to spread over
    inputs = trainer._generate_and_score_completions([{"prompt": chats[i // per_prompt]} for i in range(8)])
    mask = inputs["completion_mask"].bool()
    generator = torch.Generator().manual_seed(1)
    noise = 0.3 * torch.randn(inputs["completion_mask"].shape, generator=generator)
    with torch.no_grad():
        current = trainer._get_per_token_logps_and_entropies(
            model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1), inputs["completion_ids"].size(1))[0]
    inputs["old_per_token_logps"] = current + noise
    if beta:
        inputs["ref_per_token_logps"] = current - noise.flip(0)
    expected = float(trainer._compute_loss(model, inputs))

    method = GRPO(recipe(tiny_chat_model, "x.jsonl", grpo={"loss": loss, "beta": beta, "scale_rewards": scale,
                                                          "temperature": temperature,
                                                          "max_completion_length": 6, "num_generations": per_prompt}),
                  "chat")
    advantages, _ = group_advantages(torch.tensor(fixed), 2, scale)
    assert advantages.tolist() == pytest.approx(inputs["advantages"].tolist(), abs=1e-5)
    rows = [Example(prompt_ids[i // per_prompt] + c, [IGNORE] * len(prompt_ids[i // per_prompt]) + c)
            for i, c in enumerate(completion_ids)]
    from tuneloop.engine.methods.sft import collate

    batch = collate(rows, tokenizer.pad_token_id)
    batch["advantages"] = advantages
    batch["old_logps"] = inputs["old_per_token_logps"][mask]
    if beta:
        batch["ref_logps"] = inputs["ref_per_token_logps"][mask]
    assert completion_logps(model, batch, temperature).tolist() == pytest.approx(current[mask].tolist(), abs=1e-5)
    loss_sum, _ = method.loss(model, batch)
    assert float(loss_sum) / method.targets(batch) == pytest.approx(expected, abs=1e-5)


def test_grpo_raises_the_reward_and_keeps_rollouts(tiny_chat_model, tmp_path):
    train_file = write_jsonl(tmp_path / "prompts.jsonl", prompts(16))
    r = recipe(tiny_chat_model, train_file, data={"validation_split": 0.25}, evaluation={"every_steps": 3})
    result = train(r, get_settings(), tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert all({"reward", "reward_std", "rewards/toy:vowels", "rewards/toy:vowels/std", "frac_reward_zero_std",
                "completions/mean_length", "clip_ratio"} <= set(e) for e in steps)
    assert all(e["unscored/toy:vowels"] == 0.0 for e in steps)
    evals = [e for e in events if e["type"] == "eval"]
    assert evals[-1]["eval_reward"] > evals[0]["eval_reward"]
    rollouts = [json.loads(line) for line in (tmp_path / "run" / ROLLOUTS_FILE).read_text().splitlines()]
    assert {r["step"] for r in rollouts} == {e["step"] for e in steps}
    assert {"prompt", "completion", "reward", "rewards", "advantage"} <= set(rollouts[0])
    meta = json.loads((result.final_dir / "run.json").read_text())
    assert meta["method"] == "grpo" and meta["rl"]["rewards"] == [{"name": "toy:vowels", "weight": 1.0}]


def test_completions_a_reward_could_not_score_are_counted_in_the_step_events(tiny_chat_model, tmp_path):
    def half_fails(source, settings):  # a reward function that failed for every other completion (None: unscored)
        return lambda prompts, completions, items: [None if i % 2 else 1.0 for i in range(len(completions))]

    REWARD_SOURCES["function"] = half_fails
    train_file = write_jsonl(tmp_path / "prompts.jsonl", prompts(8))
    train(recipe(tiny_chat_model, train_file, hyperparameters={"epochs": 1}), get_settings(), tmp_path / "run")
    steps = [e for e in map(json.loads, (tmp_path / "run" / "events.jsonl").read_text().splitlines())
             if e["type"] == "step"]
    assert [e["unscored/toy:vowels"] for e in steps] == [0.5, 0.5]
    assert all(e["reward"] == 1.0 for e in steps)  # the mean of what was scored


def test_training_changes_every_trainable_weight_and_keeps_the_reference(tiny_chat_model, tmp_path):
    """With beta > 0 the reference is the adapter switched off: after two steps it still gives the base's logits."""
    from transformers import AutoModelForCausalLM

    from tuneloop.engine.loop import Loop

    train_file = write_jsonl(tmp_path / "prompts.jsonl", prompts(8))
    loop = Loop(recipe(tiny_chat_model, train_file, grpo={"beta": 0.04},
                       hyperparameters={"max_steps": 2, "epochs": None, "warmup_ratio": 0}), tmp_path / "run",
                get_settings())
    loop.setup()
    before = {n: p.detach().clone() for n, p in loop.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in loop.model.named_parameters() if not p.requires_grad}
    loop.train()
    after = dict(loop.model.named_parameters())
    assert before and all(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.equal(frozen[n], after[n]) for n in frozen)
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad(), loop.model.disable_adapter():
        assert torch.equal(loop.model(input_ids=ids).logits, base(input_ids=ids).logits)


def test_a_killed_run_resumes_exactly(tiny_chat_model, tmp_path):
    train_file = write_jsonl(tmp_path / "prompts.jsonl", prompts(8))
    assert_resumes_exactly(recipe(tiny_chat_model, train_file, hyperparameters={"max_steps": 5, "epochs": None,
                                                                               "batch_size": 2},
                                  checkpoints={"every_steps": 2}), tmp_path, 3)


def test_bad_data_and_settings_are_named(tiny_chat_model, tmp_path):
    chats = write_jsonl(tmp_path / "chats.jsonl", chat_rows(12))
    with pytest.raises(TrainingError, match="'grpo' needs prompts.*training example 1 is a chat record"):
        train(recipe(tiny_chat_model, chats), get_settings(), tmp_path / "run")
    with pytest.raises(RecipeError, match="num_generations"):
        recipe(tiny_chat_model, chats, grpo={"num_generations": 1})
    with pytest.raises(RecipeError, match="exactly one of grader, reward_model or function"):
        recipe(tiny_chat_model, chats, grpo={"rewards": [{"weight": 1.0}]})
    with pytest.raises(TrainingError, match="at least one reward"):
        train(recipe(tiny_chat_model, chats, grpo={"rewards": []}), get_settings(), tmp_path / "run2")


def test_the_grouped_layout_gives_the_whole_rows_log_probabilities_and_gradients(tiny_chat_model):
    """Each prompt run once with its completions continuing from its KV cache: the same log-probabilities and the
    same gradients as every (prompt, completion) row run whole."""
    from transformers import AutoModelForCausalLM

    from tuneloop.engine.methods.grpo import PromptExample, grouped_batch
    from tuneloop.engine.methods.sft import collate

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    prompts = [PromptExample([1, 5, 9, 14, 20, 3], [], {}, 0), PromptExample([1, 7, 3], [], {}, 1)]
    completions = [[4, 8, 2], [6], [10, 11, 12, 2], [13, 2]]
    rows = [Example(prompts[i // 2].prompt_ids + c, [IGNORE] * len(prompts[i // 2].prompt_ids) + c)
            for i, c in enumerate(completions)]
    grouped = grouped_batch(prompts, completions, 0)
    whole = collate(rows, 0)
    results = []
    for batch in (grouped, whole):
        model.zero_grad()
        logps = completion_logps(model, batch, 0.8)
        (logps * torch.linspace(-1, 1, len(logps))).sum().backward()
        results.append((logps.detach(), [p.grad.clone() for p in model.parameters()]))
    assert results[0][0].tolist() == pytest.approx(results[1][0].tolist(), abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(results[0][1], results[1][1]))



@pytest.mark.real_model
def test_grpo_on_smollm2_raises_the_held_out_reward_of_a_team_grader(real_chat_model, tmp_path):
    """GRPO with a string_check grader (the completion names the ticket's team) on the shipped tickets raises the
    held-out reward of SmolLM2's greedy answers over the starting model's (measured: greedy 0.08 -> 0.54, sampled 0.06 -> 0.51).

    `ilike` also pays an answer that lists several teams, and the policy learns that too ("account, billing,
    returns"; the rollouts show it): the rise is the grader's reward, as the issue asks, not accuracy."""
    import random
    from pathlib import Path

    REWARD_SOURCES.update(BEFORE)  # the real sources, not this file's toy function
    rows = [json.loads(line) for line in (Path(__file__).resolve().parents[2] / "src/tuneloop/examples/"
                                          "support_tickets.jsonl").read_text().splitlines()]
    teams = sorted({r["label"] for r in rows})
    random.Random(0).shuffle(rows)

    def prompt(row):
        ask = (f"Ticket: {row['text']}\n\nWhich team should handle this ticket: {', '.join(teams)}? Answer with the "
               "team's name only.")
        return {"messages": [{"role": "user", "content": ask}], "team": row["label"]}

    train_file = write_jsonl(tmp_path / "train.jsonl", [prompt(r) for r in rows[:20]])
    test_file = write_jsonl(tmp_path / "test.jsonl", [prompt(r) for r in rows[400:424]])
    grader = {"type": "string_check", "name": "team", "input": "{{ sample.output_text }}",
              "reference": "{{ item.team }}", "operation": "ilike"}
    r = parse_recipe({"model": str(real_chat_model), "method": "grpo",
                      "data": {"train": str(train_file), "validation": str(test_file)},
                      "hyperparameters": {"max_steps": 10, "batch_size": 2, "learning_rate": 1e-3,
                                          "warmup_ratio": 0.0, "max_length": 256},
                      "grpo": {"rewards": [{"grader": grader}], "num_generations": 8, "temperature": 0.5,
                               "max_completion_length": 8},
                      "evaluation": {"at_start": True, "each_epoch": False, "every_steps": 10},
                      "checkpoints": {"each_epoch": False}, "seed": 0})
    train(r, get_settings(), tmp_path / "run")
    evals = [e for e in map(json.loads, (tmp_path / "run" / "events.jsonl").read_text().splitlines())
             if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [0, 10]
    assert evals[-1]["eval_reward_greedy"] > evals[0]["eval_reward_greedy"] + 0.1, evals  # greedy answers
    assert evals[-1]["eval_reward"] > evals[0]["eval_reward"] + 0.1, evals                # 8 samples a prompt
