"""GRPO: online RL (Shao et al., 2024). For each prompt the current policy samples `num_generations` completions
(one `generate()` per micro-batch, through the shared generation module); rewards score them; each completion's
advantage is its reward less its group's mean, divided by the group's (or the batch's) standard deviation; and the
policy makes each completion's tokens more or less likely by that advantage:

    loss per token = -min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A) + beta * KL(ref)

ratio = pi(token) / pi_old(token), pi_old being the policy that sampled: each rollout trains one step, so pi_old is
this step's own forward, detached, and the ratio is exactly 1 (as in TRL's default; the clip acts when a batch
brings its own `old_logps`), and KL TRL's k3 estimate
exp(ref - logp) - (ref - logp) - 1 times the ratio (TRL's default bias correction, DeepSeek-V3.2). Token losses are averaged per completion then over completions (`grpo`),
over all the batch's tokens (`dapo`), or summed over completions x max_completion_length (`dr_grpo`), as TRL's
GRPOTrainer does.

Rewards come from sources that the layers above register (`register_reward_source`): OpenAI-shaped graders, a
trained reward model, or a `module:function` (evals/rl.py registers all three; the CLI and the worker import it).
Each is a callable (prompts, completions, items) -> rewards, NaN where it could not score; the weighted sum of a
completion's rewards is its reward, and a completion that no source could score gets advantage 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.data.records import PromptRecord
from tuneloop.engine.methods import Defaults, EvalContext, Method, Prepared, register
from tuneloop.engine.methods.continuation import continuation_logps
from tuneloop.engine.methods.sft import (check_generates, epochs_reason, labelled_logits, load_policy,
                                         scaled_epochs)
from tuneloop.engine.tokenize import IGNORE
from tuneloop.models.generation import GenerationOptions, complete_ids, encode_chat
from tuneloop.models.run_folder import ROLLOUTS

RewardFn = Callable[[list[list[dict[str, Any]]], list[str], list[dict[str, Any]]], list[float]]
"""(prompts as messages, completions as text, the prompts' data lines) -> one reward each (NaN: not scored)."""
RewardFactory = Callable[[Any, Any], RewardFn]
"""(the recipe's RewardSource, Settings) -> the reward function; ValueError naming what is wrong."""
REWARD_SOURCES: dict[str, RewardFactory] = {}

ADAPTER_LEARNING_RATES = {"lora": 1e-4, "dora": 1e-4, "qlora": 1e-4, "ia3": 1e-3, "full": 1e-6, "freeze": 1e-6}
"""RL moves the policy with noisy, self-made targets: LoRA at 1e-4, a tenth of SFT's; full at TRL's 1e-6."""
TARGET_EPOCHS, MIN_PROMPTS_SEEN, MAX_EPOCHS = 1, 200, 4
ROLLOUTS_FILE = ROLLOUTS
"""In the run folder: a sample of each logging step's rollouts (prompt, completion, rewards, advantage)."""


def register_reward_source(kind: str) -> Callable[[RewardFactory], RewardFactory]:
    """Register how a recipe's reward of this kind (`grader`, `reward_model`, `function`) becomes a RewardFn."""

    def add(factory: RewardFactory) -> RewardFactory:
        REWARD_SOURCES[kind] = factory
        return factory

    return add


@dataclass
class PromptExample:
    prompt_ids: list[int]
    messages: list[dict[str, Any]]
    item: dict[str, Any]
    index: int

    n_target_tokens = 1


def group_advantages(rewards: torch.Tensor, groups: int, scale: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, each completion's group standard deviation) for rewards laid out group by group (G per prompt);
    NaN rewards are left out of the means and get advantage 0 (TRL's nan-aware baseline)."""
    grouped = rewards.view(groups, -1)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    spread = _nanstd(grouped, dim=1).unsqueeze(1).expand_as(grouped).reshape(-1)
    advantages = rewards - mean.expand_as(grouped).reshape(-1)
    if scale == "group":
        advantages = advantages / (spread + 1e-4)
    elif scale == "batch":
        advantages = advantages / (_nanstd(rewards, dim=0) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0), spread


def _nanstd(values: torch.Tensor, dim: int) -> torch.Tensor:
    """The sample standard deviation (n - 1), ignoring NaN."""
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    count = (~torch.isnan(values)).sum(dim=dim)
    squares = torch.nansum((values - mean) ** 2, dim=dim)
    return torch.sqrt(squares / (count - 1).clamp(min=1))


def token_losses(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, epsilon_low: float,
                 epsilon_high: float, beta: float = 0.0, ref_logps: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(loss per token, clipped per token (bool), KL per token or None); every tensor one entry per token."""
    ratio = torch.exp(logps - old_logps)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    losses = -torch.min(ratio * advantages, clipped_ratio * advantages)
    clipped = ((ratio < 1 - epsilon_low) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))
    kl = None
    if beta:
        assert ref_logps is not None
        kl = (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1) * ratio  # TRL's use_bias_correction_kl
        losses = losses + beta * kl
    return losses, clipped, kl


@register("grpo")
class GRPO(Method):
    name = "grpo"
    task_type = "CAUSAL_LM"

    def __init__(self, recipe: Any, model_kind: str):
        check_generates(recipe, model_kind)
        super().__init__(recipe, model_kind)
        section = recipe.grpo
        if not section.rewards:
            raise ValueError("method 'grpo' needs at least one reward under grpo.rewards (a grader, a reward_model "
                             "or a function)")
        self.rewards: list[tuple[str, float, RewardFn]] = []
        self.reference: Any = None
        self.tokenizer: Any = None
        self.window: dict[str, list[float]] = {}
        self.samples: list[dict[str, Any]] = []
        self.run_dir: Path | None = None
        self.prompts: list[PromptExample] = []

    # ---------------------------------------------------------------- set-up
    def load(self, settings: Any, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        for n, source in enumerate(self.recipe.grpo.rewards):
            kind = next(k for k in ("grader", "reward_model", "function") if getattr(source, k) is not None)
            if kind not in REWARD_SOURCES:
                raise ValueError(f"grpo.rewards[{n}]: no {kind} rewards in this process (import tuneloop.evals.rl, "
                                 "as the CLI and the worker do)")
            try:
                self.rewards.append((source.label(), source.weight, REWARD_SOURCES[kind](source, settings)))
            except ValueError as e:
                raise ValueError(f"grpo.rewards[{n}]: {e}") from None
        model, tokenizer = load_policy(self.recipe, settings, four_bit, dtype)
        if hasattr(model, "merge_and_unload"):  # started from a fine-tuned run: that model is the reference
            model = model.merge_and_unload()
        if self.recipe.grpo.beta and self.recipe.adapter.type in {"full", "freeze"}:
            import copy

            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        return model, tokenizer

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        limit = self.recipe.hyperparameters.max_length - self.recipe.grpo.max_completion_length
        if limit < 1:
            raise ValueError(f"max_length {self.recipe.hyperparameters.max_length} leaves no room for a prompt "
                             f"beside grpo.max_completion_length {self.recipe.grpo.max_completion_length}")
        out: dict[str, list[PromptExample]] = {}
        dropped = 0
        for split, part in (("training", records.train), ("validation", records.validation)):
            examples = out.setdefault(split, [])
            for n, record in enumerate(part):
                if not isinstance(record, PromptRecord):
                    raise ValueError(f"method 'grpo' needs prompts (chats that end with the user's message, with the "
                                     f"fields the rewards read); {split} example {n + 1} is a {record.kind} record")
                item = record.item()
                for name, _, fn in self.rewards:
                    problem = getattr(fn, "check_item", lambda item: None)(item)
                    if problem is not None:  # the split is shuffled: name the prompt, not only its place
                        asked = record.messages[-1].content.replace("\n", " ")
                        raise ValueError(f"{split} example {n + 1} ({asked[:60]!r}) {problem} (reward '{name}')")
                messages = [{"role": m.role, "content": m.content} for m in record.messages]
                ids = encode_chat(tokenizer, messages)[0].tolist()
                if len(ids) > limit:
                    dropped += split == "training"
                    continue
                examples.append(PromptExample(ids, messages, item, len(examples)))
        if not out["training"]:
            raise ValueError(f"no training prompt fits in max_length less max_completion_length ({limit} tokens)")
        return Prepared(out["training"], out["validation"], dropped)

    def defaults(self, examples: int) -> Defaults:
        adapter = self.recipe.adapter.type
        epochs = scaled_epochs(examples, TARGET_EPOCHS, MIN_PROMPTS_SEEN, cap=MAX_EPOCHS)
        return Defaults({"learning_rate": ADAPTER_LEARNING_RATES[adapter], "epochs": epochs, "warmup_ratio": 0.0},
                        {"learning_rate": f"online RL with {adapter}",
                         "epochs": epochs_reason(examples, epochs, TARGET_EPOCHS, MIN_PROMPTS_SEEN),
                         "warmup_ratio": "none: the first rollouts already carry the signal"})

    def start(self, model: Any, data: Prepared, run_dir: Any, ctx: EvalContext) -> None:
        self.run_dir = Path(run_dir)
        self.prompts = data.train
        if self.reference is not None:
            self.reference.to(ctx.device)

    def length(self, example: Any) -> int:
        return len(example.prompt_ids)

    # ---------------------------------------------------------------- rollouts
    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        """The prompts' indices; the batch itself is made in `rollout`."""
        return {"prompt_index": torch.tensor([e.index for e in examples], dtype=torch.long)}

    def _generate(self, model: Any, prompts: list[PromptExample], per_prompt: int, temperature: float,
                  seed: int | None) -> list[Any]:
        section = self.recipe.grpo
        options = GenerationOptions(max_tokens=section.max_completion_length, temperature=temperature,
                                    top_p=section.top_p if temperature > 0 else 1.0, seed=seed)
        ids = [p.prompt_ids for p in prompts for _ in range(per_prompt)]
        was_training = model.training
        model.eval()
        try:
            return complete_ids(model, self.tokenizer, ids, options, batch_size=len(ids), group=per_prompt)
        finally:
            model.train(was_training)

    def score(self, prompts: list[PromptExample], completions: list[str], per_prompt: int
              ) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """(weighted reward per completion, each source's rewards), prompts repeated `per_prompt` times in order."""
        messages = [p.messages for p in prompts for _ in range(per_prompt)]
        items = [p.item for p in prompts for _ in range(per_prompt)]
        per_source: dict[str, list[float]] = {}
        total = torch.zeros(len(completions))
        scored = torch.zeros(len(completions), dtype=torch.bool)
        for name, weight, fn in self.rewards:
            values = torch.tensor([float("nan") if v is None else float(v) for v in fn(messages, completions, items)],
                                  dtype=torch.float32)
            if len(values) != len(completions):
                raise ValueError(f"reward '{name}' gave {len(values)} rewards for {len(completions)} completions")
            per_source[name] = values.tolist()
            total += torch.nan_to_num(values, nan=0.0) * weight
            scored |= ~torch.isnan(values)
        total[~scored] = float("nan")
        return total, per_source

    @torch.no_grad()
    def _reference_logps(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        temperature = self.recipe.grpo.temperature
        if self.reference is not None:
            return completion_logps(self.reference, batch, temperature)
        with model.disable_adapter():
            return completion_logps(model, batch, temperature)

    def rollout(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        section = self.recipe.grpo
        prompts = [self.prompts[int(i)] for i in batch["prompt_index"]]
        # sampled from torch's generator, which checkpoints save and resume restores: a resumed run samples the same
        answers = self._generate(model, prompts, section.num_generations, section.temperature, None)
        completions = [a.text for a in answers]
        rewards, per_source = self.score(prompts, completions, section.num_generations)
        advantages, spread = group_advantages(rewards, len(prompts), section.scale_rewards)
        device = batch["prompt_index"].device
        out = {k: v.to(device) for k, v in grouped_batch(prompts, [a.token_ids for a in answers],
                                                        self.tokenizer.pad_token_id).items()}
        out["advantages"] = advantages.to(device)
        lengths = [len(a.token_ids) for a in answers]
        self._collect(rewards, per_source, spread, lengths)
        self._keep_samples(prompts, completions, rewards, per_source, advantages, section.num_generations)
        return out

    def _collect(self, rewards: torch.Tensor, per_source: dict[str, list[float]], spread: torch.Tensor,
                 lengths: list[int]) -> None:
        w = self.window
        w.setdefault("reward", []).extend(v for v in rewards.tolist() if not math.isnan(v))
        groups = spread.view(-1, self.recipe.grpo.num_generations)[:, 0]
        w.setdefault("frac_reward_zero_std", []).extend((groups < 1e-8).float().tolist())
        w.setdefault("reward_std", []).extend(groups.tolist())
        for name, values in per_source.items():
            w.setdefault(f"rewards/{name}", []).extend(v for v in values if not math.isnan(v))
            # the share this source could not score (a function that failed, a judge that did not answer)
            w.setdefault(f"unscored/{name}", []).extend(float(math.isnan(v)) for v in values)
        w.setdefault("completions/mean_length", []).extend(float(n) for n in lengths)
        w.setdefault("completions/clipped_ratio", []).extend(
            float(n >= self.recipe.grpo.max_completion_length) for n in lengths)

    def _keep_samples(self, prompts: list[PromptExample], completions: list[str], rewards: torch.Tensor,
                      per_source: dict[str, list[float]], advantages: torch.Tensor, per_prompt: int) -> None:
        keep = self.recipe.grpo.log_completions
        for i in range(min(keep, len(completions))):
            self.samples.append({"prompt": prompts[i // per_prompt].messages[-1]["content"],
                                 "completion": completions[i], "reward": _number(float(rewards[i])),
                                 "rewards": {k: _number(v[i]) for k, v in per_source.items()},
                                 "advantage": round(float(advantages[i]), 6)})

    # ---------------------------------------------------------------- the loss
    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        section = self.recipe.grpo
        logps = completion_logps(model, batch, section.temperature)
        counts = label_counts(batch)
        advantages = torch.repeat_interleave(batch["advantages"], counts)
        epsilon_high = section.epsilon_high if section.epsilon_high is not None else section.epsilon
        # each rollout is used once, by the policy that sampled it: its log-probabilities are this very forward's,
        # so the ratio is exactly 1 whatever the precision or dropout (TRL does the same when on-policy)
        old = batch["old_logps"] if "old_logps" in batch else logps.detach()
        reference = batch.get("ref_logps")
        if section.beta and reference is None:
            reference = self._reference_logps(model, batch)  # under the loop's autocast, as the policy's forward
        losses, clipped, kl = token_losses(logps, old, advantages, section.epsilon, epsilon_high, section.beta,
                                           reference)
        self.window.setdefault("clip_ratio", []).extend(clipped.float().tolist())
        if kl is not None:
            self.window.setdefault("kl", []).extend(kl.detach().float().tolist())
        if section.loss == "grpo":
            rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
            per_row = torch.zeros(len(counts), device=losses.device).index_add(0, rows, losses)
            return (per_row / counts.clamp(min=1)).sum(), len(counts)
        return losses.sum(), int(counts.sum())

    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        section = self.recipe.grpo
        completions = len(batch["advantages"])
        if section.loss == "grpo":
            return completions
        if section.loss == "dr_grpo":
            return completions * section.max_completion_length
        return int(label_counts(batch).sum())

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the batch stands for: each completion with its whole prompt (what a trainer that runs the prompt
        once per completion processes), so tokens/s compares with other trainers."""
        if "prompt_ids" not in batch:
            return int(batch["attention_mask"].sum())
        per_prompt = len(batch["advantages"]) // batch["prompt_mask"].shape[0]
        return int(per_prompt * batch["prompt_mask"].sum() + batch["answer_mask"].sum())

    def step_metrics(self, step: int = 0) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, values in self.window.items():
            if not values:
                continue
            mean = sum(values) / len(values)
            out[name] = round(mean, 6)
            if name.startswith("rewards/"):
                spread = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
                out[f"{name}/std"] = round(spread, 6)
        if "completions/mean_length" in self.window and self.window["completions/mean_length"]:
            out["completions/min_length"] = min(self.window["completions/mean_length"])
            out["completions/max_length"] = max(self.window["completions/mean_length"])
        self.window = {}
        if self.samples and self.run_dir is not None:
            with (self.run_dir / ROLLOUTS_FILE).open("a") as f:
                for sample in self.samples:
                    f.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")
        self.samples = []
        return out

    # ---------------------------------------------------------------- evaluation and output
    @torch.no_grad()
    def evaluate(self, model: Any, data: Prepared, ctx: EvalContext) -> dict[str, float]:
        """The mean reward on the validation prompts of `num_generations` completions each, sampled as in training
        from a fixed seed (every evaluation draws the same way, so they compare; as TRL evaluates), and of one greedy
        completion each (`eval_reward_greedy`)."""
        if not data.validation:
            return {}
        devices = [torch.device(ctx.device)] if torch.device(ctx.device).type == "cuda" else []
        group = self.recipe.grpo.num_generations
        # on a GPU, no more rows than a training step generates: what fits in training fits here
        rows = ctx.batch_size * group if devices else EVAL_ROWS
        with torch.random.fork_rng(devices=devices):  # the evaluation's seed leaves training's random stream alone
            sampled = held_out_rewards(self, model, data.validation, max(ctx.batch_size, rows // group), group,
                                       self.recipe.grpo.temperature, seed=self.recipe.seed)
        greedy = held_out_rewards(self, model, data.validation, max(ctx.batch_size, rows))
        return {**sampled, "eval_reward_greedy": greedy["eval_reward"]}

    def run_meta(self) -> dict[str, Any]:
        section = self.recipe.grpo
        return {"classifier": None, "label_set": None,
                "rl": {"rewards": [{"name": s.label(), "weight": s.weight} for s in section.rewards],
                       "num_generations": section.num_generations, "loss": section.loss, "beta": section.beta}}


EVAL_ROWS = 64
"""Completions generated together when evaluating on a CPU: decoding a small model reads all its weights for each token
whatever the rows, so 64 rows cost little more than 16 (SmolLM2-135M on 2 cores, 16 prompts x 8 samples of 8 tokens
and a greedy one each: about 55 s in batches of the training's 2 prompts, 23 s in batches of 64 rows)."""


def held_out_rewards(method: GRPO, model: Any, prompts: list[PromptExample], batch_size: int, per_prompt: int = 1,
                     temperature: float = 0.0, seed: int | None = None) -> dict[str, float]:
    """eval_reward (and eval_rewards_<source>): the mean reward of `per_prompt` completions per prompt (greedy at
    temperature 0), `batch_size` prompts at a time; `seed` starts each batch's sampling."""
    totals: list[float] = []
    per_source: dict[str, list[float]] = {}
    for start in range(0, len(prompts), batch_size):
        part = prompts[start : start + batch_size]
        answers = method._generate(model, part, per_prompt, temperature, None if seed is None else seed + start)
        rewards, sources = method.score(part, [a.text for a in answers], per_prompt)
        totals += [v for v in rewards.tolist() if not math.isnan(v)]
        for name, values in sources.items():
            per_source.setdefault(name, []).extend(v for v in values if not math.isnan(v))
    out = {"eval_reward": sum(totals) / max(len(totals), 1)}
    for name, values in per_source.items():
        out[f"eval_rewards_{name}"] = sum(values) / max(len(values), 1)
    return out


def grouped_batch(prompts: list[PromptExample], completions: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Each prompt once, left-padded (P, W), and its completions after it, right-padded (P x G, A), every completion
    token labelled: the layout `continuation_logps` runs (the prompt's forward shared by its group)."""
    width = max(len(p.prompt_ids) for p in prompts)
    prompt = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        prompt[row, width - len(p.prompt_ids):] = torch.tensor(p.prompt_ids)
        prompt_mask[row, width - len(p.prompt_ids):] = 1
    answer_width = max(len(c) for c in completions)
    answer = torch.full((len(completions), answer_width), pad_id, dtype=torch.long)
    answer_mask = torch.zeros((len(completions), answer_width), dtype=torch.long)
    labels = torch.full((len(completions), answer_width), IGNORE, dtype=torch.long)
    for row, c in enumerate(completions):
        answer[row, : len(c)] = torch.tensor(c)
        answer_mask[row, : len(c)] = 1
        labels[row, : len(c)] = torch.tensor(c)
    group = len(completions) // len(prompts)
    return {"prompt_ids": prompt, "prompt_mask": prompt_mask, "answer_ids": answer, "answer_mask": answer_mask,
            "answer_labels": labels, "order": torch.arange(len(prompts)).repeat_interleave(group)}


def label_counts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Completion tokens per completion row."""
    if "answer_labels" in batch:
        return (batch["answer_labels"] != IGNORE).sum(1)
    return (batch["labels"][:, 1:] != IGNORE).sum(1)


def completion_logps(model: Any, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Each completion token's log-probability under the sampling temperature (TRL's too), row-major (the rows'
    labelled positions in order): the grouped layout (`grouped_batch`) or whole rows (prompt and completion)."""
    if "prompt_ids" in batch:
        return continuation_logps(model, batch, batch["order"], temperature)[0]
    logits, targets = labelled_logits(model, {k: batch[k] for k in ("input_ids", "attention_mask", "labels")})
    return -F.cross_entropy(logits / temperature, targets, reduction="none")


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)
