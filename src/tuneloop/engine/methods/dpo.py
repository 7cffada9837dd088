"""Direct preference optimisation: make the chosen answer of each pair more likely than the rejected one,
relative to a reference model, with no reward model (Rafailov et al., 2023), and its variants (`dpo.loss`):

- sigmoid: -log sigmoid(beta * margin), where margin = (log pi(chosen) - log ref(chosen)) - (log pi(rejected)
  - log ref(rejected)), each a sum over the answer's tokens; with `label_smoothing`, conservative DPO.
- robust: sigmoid corrected for a share `label_smoothing` of flipped pairs (Chowdhury et al., 2024).
- hinge: max(0, 1 - beta * margin) (SLiC).
- ipo: (margin' - 1 / (2 beta))^2, with margin' on per-token averages of the log-ratios (IPO, as TRL computes it).

The reference is the same model with its adapter switched off (LoRA, DoRA, IA3: no second copy in memory); for
full or freeze fine-tuning a frozen copy, or with `precompute_reference` the reference's log-probabilities
computed once before training and kept in the run folder. A run started from an SFT run (`model: runs/sft`)
merges that run's adapter into the base first, so the SFT model is the reference.

A pair's chosen and rejected conversations share their prompt. A batch runs one of two ways, whichever
processes fewer tokens (`collate_pairs` decides):
- shared prompts: each prompt once per pair (left-padded, so every prompt ends in the same column), and the two
  answers continue from its KV cache (transformers' own cache, reordered to chosen rows then rejected rows;
  gradients flow through it). Best when the prompts differ from pair to pair.
- whole conversations, chosen rows then rejected rows, through the SFT engine's forward, where a prefix every
  row shares (one system prompt, as in classification data) runs once for the whole batch.
Either way the LM head runs only where an answer token is predicted.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.data.records import PreferenceRecord
from tuneloop.engine.methods import Defaults, EvalContext, Method, Prepared, register
from tuneloop.engine.methods.continuation import answer_sums, continuation_logps
from tuneloop.engine.methods.sft import (check_generates, collate, epochs_reason, labelled_logits,
                                         load_policy, scaled_epochs, shared_prefix_length)
from tuneloop.engine.tokenize import IGNORE, Example, record_messages, tokenize_messages

ADAPTER_LEARNING_RATES = {"lora": 1e-3, "dora": 1e-3, "qlora": 1e-3, "ia3": 3e-3, "full": 5e-6, "freeze": 5e-6}
"""LoRA at 1e-3: on 200 pairs from the shipped tickets (SmolLM2, 2 epochs, 50 steps) 5e-5 reached a held-out
reward accuracy of 0.72, 5e-4 0.87 and 1e-3 0.94 (tests/engine/test_dpo.py's marked test). The weights
themselves move at 5e-6 (TRL's examples use 5e-7 to 1e-6 over many more steps); not measured here yet."""
TARGET_EPOCHS, MIN_PAIRS_SEEN, MAX_EPOCHS = 2, 400, 5
"""Two passes, more on few pairs (at least 400 seen) but at most five: many passes over a handful of pairs
over-optimise the margin."""
REFERENCE_FILE = "reference_logps.json"
"""In the run folder: the reference's log-probabilities per training and validation pair (precompute_reference)."""


@dataclass
class PairExample:
    chosen: Example
    rejected: Example
    index: int
    """The pair's place among the prepared pairs of its split (validation pairs count on from the training ones),
    the key of its precomputed reference log-probabilities."""

    @property
    def n_target_tokens(self) -> int:
        return self.chosen.n_target_tokens + self.rejected.n_target_tokens


def pair_messages(record: PreferenceRecord) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(prompt + chosen, prompt + rejected) as message dicts; only the answers are learnt (the prompt's own
    assistant turns get weight 0)."""
    prompt = [{**m, "weight": 0} if m["role"] == "assistant" else m
              for m in record_messages(record.model_copy(update={"chosen": []}))]
    chosen = [{"role": m.role, "content": m.content} for m in record.chosen]
    rejected = [{"role": m.role, "content": m.content} for m in record.rejected]
    return [*prompt, *chosen], [*prompt, *rejected]


def tokenize_pairs(tokenizer: Any, records: list[Any], max_length: int, first_index: int = 0,
                   split: str = "training", method: str = "dpo") -> tuple[list[PairExample], int]:
    """Pairs whose chosen and rejected answers both keep a token after truncation, and how many were dropped;
    ValueError naming the first example that is not a preference pair."""
    examples, dropped = [], 0
    for n, record in enumerate(records):
        if not isinstance(record, PreferenceRecord):
            raise ValueError(f"method '{method}' needs preference pairs (prompt, chosen, rejected); {split} example "
                             f"{n + 1} is a {record.kind} record")
        chosen_messages, rejected_messages = pair_messages(record)
        chosen = tokenize_messages(tokenizer, chosen_messages, max_length)
        rejected = tokenize_messages(tokenizer, rejected_messages, max_length)
        if chosen.n_target_tokens == 0 or rejected.n_target_tokens == 0:
            dropped += 1
            continue
        examples.append(PairExample(chosen, rejected, first_index + len(examples)))
    return examples, dropped


def collate_full(examples: list[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """The chosen conversations, then the rejected ones, whole and right-padded (2B rows), and each pair's index."""
    batch = collate([e.chosen for e in examples] + [e.rejected for e in examples], pad_id)
    batch["pair_index"] = torch.tensor([e.index for e in examples], dtype=torch.long)
    return batch


def shared_length(example: PairExample) -> int:
    """How many leading tokens the pair's two conversations share, up to the first answer token (which the
    prompt's last position predicts); 0 when they differ from the start."""
    chosen, rejected = example.chosen, example.rejected
    first = min(next(t for t, label in enumerate(e.labels) if label != IGNORE) for e in (chosen, rejected))
    common = 0
    for a, b in zip(chosen.input_ids, rejected.input_ids):
        if a != b:
            break
        common += 1
    return min(common, first)


def collate_pairs(examples: list[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """The batch as `collate_shared` or `collate_full` builds it, whichever runs fewer tokens: the whole
    conversations with the prefix all rows share run once, or each pair's prompt once and the answers padded."""
    full = collate_full(examples, pad_id)
    prefix = shared_prefix_length(full, 0.0)
    last = [max(t for t, label in enumerate(side.labels) if label != IGNORE)
            for side in [*(e.chosen for e in examples), *(e.rejected for e in examples)]]
    full_tokens = prefix + sum(t - prefix for t in last)
    cut = [shared_length(e) for e in examples]
    if any(n == 0 for n in cut):  # a pair whose two conversations differ from their first token: nothing to share
        return full
    answer_width = max(len(side.input_ids) - n for e, n in zip(examples, cut) for side in (e.chosen, e.rejected))
    shared_tokens = len(examples) * max(cut) + 2 * len(examples) * answer_width
    return collate_shared(examples, pad_id, cut) if shared_tokens < full_tokens else full


def collate_shared(examples: list[PairExample], pad_id: int, cut: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Each pair's shared prompt once, left-padded (B, W); then the answers that continue it, chosen rows and then
    rejected rows, right-padded (2B, A), with the label of each answer position (the token it is; IGNORE where
    none); and each pair's index."""
    cut = cut or [shared_length(e) for e in examples]
    width = max(cut)
    prompt = torch.full((len(examples), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (e, n) in enumerate(zip(examples, cut)):
        prompt[row, width - n:] = torch.tensor(e.chosen.input_ids[:n])
        prompt_mask[row, width - n:] = 1
    rests = [(e.chosen, n) for e, n in zip(examples, cut)] + [(e.rejected, n) for e, n in zip(examples, cut)]
    answer_width = max(len(side.input_ids) - n for side, n in rests)
    answer = torch.full((len(rests), answer_width), pad_id, dtype=torch.long)
    answer_mask = torch.zeros((len(rests), answer_width), dtype=torch.long)
    labels = torch.full((len(rests), answer_width), IGNORE, dtype=torch.long)
    for row, (side, n) in enumerate(rests):
        m = len(side.input_ids) - n
        answer[row, :m] = torch.tensor(side.input_ids[n:])
        answer_mask[row, :m] = 1
        labels[row, :m] = torch.tensor(side.labels[n:])
    return {"prompt_ids": prompt, "prompt_mask": prompt_mask, "answer_ids": answer, "answer_mask": answer_mask,
            "answer_labels": labels, "pair_index": torch.tensor([e.index for e in examples], dtype=torch.long)}


def shared_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps` for a `collate_pairs` batch: the prompts run once, the answers continue from their cache."""
    pairs = batch["prompt_mask"].shape[0]
    order = torch.cat([torch.arange(pairs), torch.arange(pairs)]).to(batch["prompt_mask"].device)
    token_logps, counts = continuation_logps(model, batch, order)
    return answer_sums(token_logps, counts), counts


def pair_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return shared_logps(model, batch) if "prompt_ids" in batch else sequence_logps(model, batch)


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the answer tokens' log-probabilities per row, answer tokens per row), each (rows,)."""
    logits, targets = labelled_logits(model, {k: v for k, v in batch.items() if k != "pair_index"})
    token_logps = -F.cross_entropy(logits, targets, reduction="none")        # row-major, as the rows' labels
    counts = (batch["labels"][:, 1:] != IGNORE).sum(1)
    rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    return torch.zeros(len(counts), device=token_logps.device).index_add(0, rows, token_logps), counts


def preference_losses(kind: str, beta: float, label_smoothing: float, chosen: torch.Tensor, rejected: torch.Tensor,
                      ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, chosen_tokens: torch.Tensor,
                      rejected_tokens: torch.Tensor) -> torch.Tensor:
    """Each pair's loss (see the module's docstring), from summed log-probabilities of policy and reference."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    margin = chosen_ratio - rejected_ratio
    if kind == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)
    if kind == "robust":
        return (-(1 - label_smoothing) * F.logsigmoid(beta * margin)
                + label_smoothing * F.logsigmoid(-beta * margin)) / (1 - 2 * label_smoothing)
    if kind == "hinge":
        return torch.relu(1 - beta * margin)
    if kind == "ipo":
        averaged = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        return (averaged - 1 / (2 * beta)) ** 2
    raise ValueError(f"dpo.loss '{kind}' is not one of sigmoid, ipo, hinge, robust")


@register("dpo")
class DPO(Method):
    name = "dpo"
    task_type = "CAUSAL_LM"

    def __init__(self, recipe: Any, model_kind: str):
        check_generates(recipe, model_kind)
        super().__init__(recipe, model_kind)
        self.reference: Any = None
        self.precomputed: dict[int, tuple[float, float]] | None = None
        self.window: dict[str, list[float]] = {}

    # ---------------------------------------------------------------- set-up
    def load(self, settings: Any, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        model, tokenizer = load_policy(self.recipe, settings, four_bit, dtype)
        if hasattr(model, "merge_and_unload"):  # started from a fine-tuned run: that model is the reference
            model = model.merge_and_unload()
        if self.recipe.adapter.type in {"full", "freeze"} and not self.recipe.dpo.precompute_reference:
            import copy

            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        return model, tokenizer

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        max_length = self.recipe.hyperparameters.max_length
        train, dropped = tokenize_pairs(tokenizer, records.train, max_length, method=self.name)
        validation, _ = tokenize_pairs(tokenizer, records.validation, max_length, len(train), "validation", self.name)
        if not train:
            raise ValueError("no training pair keeps an answer token on both sides after truncation to max_length")
        return Prepared(train, validation, dropped)

    def defaults(self, examples: int) -> Defaults:
        adapter = self.recipe.adapter.type
        epochs = scaled_epochs(examples, TARGET_EPOCHS, MIN_PAIRS_SEEN, cap=MAX_EPOCHS)
        return Defaults({"learning_rate": ADAPTER_LEARNING_RATES[adapter], "epochs": epochs, "warmup_ratio": 0.1},
                        {"learning_rate": f"preference learning with {adapter}",
                         "epochs": (f"{TARGET_EPOCHS} passes, raised toward {MIN_PAIRS_SEEN} pairs seen but at most "
                                    f"{MAX_EPOCHS} ({examples} in the data)" if epochs == MAX_EPOCHS else
                                    epochs_reason(examples, epochs, TARGET_EPOCHS, MIN_PAIRS_SEEN)),
                         "warmup_ratio": "10% of the steps"})

    def length(self, example: Any) -> int:
        return len(example.chosen.input_ids) + len(example.rejected.input_ids)

    # ---------------------------------------------------------------- the reference
    @torch.no_grad()
    def reference_logps(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's summed log-probabilities of the batch's rows."""
        if self.precomputed is not None:
            pairs = [self.precomputed[int(i)] for i in batch["pair_index"]]
            device = batch["pair_index"].device
            return torch.tensor([c for c, _ in pairs] + [r for _, r in pairs], device=device)
        if self.reference is not None:
            return pair_logps(self.reference, batch)[0]
        with model.disable_adapter():
            return pair_logps(model, batch)[0]

    def start(self, model: Any, data: Prepared, run_dir: Any, ctx: EvalContext) -> None:
        if self.reference is not None:
            self.reference.to(ctx.device)
        if self.recipe.dpo.precompute_reference:
            self.precompute(model, data, Path(run_dir), ctx)

    def precompute(self, model: Any, data: Prepared, run_dir: Path, ctx: EvalContext) -> None:
        """Every pair's reference log-probabilities, computed once at the training precision (the model before
        any step is the reference), or read back on resume when the file holds these very pairs. Written
        atomically, with a digest of the pairs' tokens: a changed data file or a torn write means computing
        again (`start` runs before a resume loads its checkpoint, so the model is still the reference)."""
        path = Path(run_dir) / REFERENCE_FILE
        pairs = [*data.train, *data.validation]
        digest = hashlib.blake2b(json.dumps([[p.chosen.input_ids, p.rejected.input_ids] for p in pairs]).encode(),
                                 digest_size=16).hexdigest()
        try:
            stored = json.loads(path.read_text())
            if stored.get("digest") == digest:
                self.precomputed = {int(k): tuple(v) for k, v in stored["values"].items()}  # type: ignore[misc]
                return
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        values: dict[int, tuple[float, float]] = {}
        was_training = model.training
        model.eval()
        pad_id = ctx.tokenizer.pad_token_id
        for start in range(0, len(pairs), ctx.batch_size):
            part = pairs[start : start + ctx.batch_size]
            batch = {k: v.to(ctx.device) for k, v in collate_pairs(part, pad_id).items()}
            with torch.no_grad(), ctx.autocast():
                logps = pair_logps(model, batch)[0].tolist()
            for i, example in enumerate(part):
                values[example.index] = (logps[i], logps[len(part) + i])
        model.train(was_training)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"digest": digest, "pairs": len(pairs), "values": values}))
        os.replace(partial, path)
        self.precomputed = values

    # ---------------------------------------------------------------- training
    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_pairs(examples, pad_id)

    def pair_terms(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logps, counts = pair_logps(model, batch)
        ref = self.reference_logps(model, batch)
        half = len(batch["pair_index"])
        section = self.recipe.dpo
        losses = preference_losses(section.loss, section.beta, section.label_smoothing, logps[:half], logps[half:],
                                   ref[:half], ref[half:], counts[:half], counts[half:])
        if section.sft_weight:
            losses = losses - section.sft_weight * logps[:half] / counts[:half].clamp(min=1)
        chosen_rewards = section.beta * (logps[:half] - ref[:half]).detach()
        rejected_rewards = section.beta * (logps[half:] - ref[half:]).detach()
        return {"losses": losses, "chosen": chosen_rewards, "rejected": rejected_rewards}

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        terms = self.pair_terms(model, batch)
        for name, values in rewards_metrics(terms).items():
            self.window.setdefault(name, []).extend(values)
        return terms["losses"].sum(), len(terms["losses"])

    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["pair_index"])

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the batch stands for: both whole conversations of each pair (what a trainer that runs the
        prompt twice processes), so tokens/s compares with other trainers."""
        if "prompt_ids" not in batch:
            return int(batch["attention_mask"].sum())
        return int(2 * batch["prompt_mask"].sum() + batch["answer_mask"].sum())

    def step_metrics(self, step: int = 0) -> dict[str, float]:
        out = {name: round(sum(v) / len(v), 6) for name, v in self.window.items() if v}
        self.window = {}
        return out

    @torch.no_grad()
    def evaluate(self, model: Any, data: Prepared, ctx: EvalContext) -> dict[str, float]:
        total, values = 0.0, {}
        for batch in self.eval_batches(data.validation, ctx):
            with ctx.autocast():
                terms = self.pair_terms(model, batch)
            total += float(terms["losses"].sum())
            for name, v in rewards_metrics(terms).items():
                values.setdefault(name, []).extend(v)
        n = max(len(data.validation), 1)
        return {"eval_loss": total / n, **{f"eval_{name.replace('/', '_')}": sum(v) / len(v)
                                          for name, v in values.items() if v}}

    def run_meta(self) -> dict[str, Any]:
        section = self.recipe.dpo
        return {"classifier": None, "label_set": None,
                "preference": {"beta": section.beta, "loss": section.loss, "label_smoothing": section.label_smoothing,
                               "sft_weight": section.sft_weight}}


def rewards_metrics(terms: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per pair: the implicit rewards of the chosen and rejected answers, whether chosen wins, and the margin
    (TRL's names: rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins)."""
    chosen, rejected = terms["chosen"].float(), terms["rejected"].float()
    return {"rewards/chosen": chosen.tolist(), "rewards/rejected": rejected.tolist(),
            "rewards/accuracies": (chosen > rejected).float().tolist(), "rewards/margins": (chosen - rejected).tolist()}
