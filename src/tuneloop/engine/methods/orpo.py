"""ORPO: preference learning with no reference model (Hong et al., 2024). Each pair's loss is the chosen answer's
negative log-likelihood (per token) minus beta * log sigmoid(log odds ratio), where the odds of an answer are
p / (1 - p) with p its per-token average probability:

    log_odds = (c - r) - (log(1 - e^c) - log(1 - e^r)),  c, r = mean log-probability of the chosen, rejected tokens

so one pass over the pairs both teaches the chosen answers and pushes the rejected ones down; there is no SFT run
first and no second model. The odds-ratio term is TRL's `odds_ratio_loss`; the NLL term is the paper's, on the
answer's tokens (TRL's ORPOTrainer also counts the prompt's tokens in it). Batching, the shared-prompt layout and
the reward metrics (beta * c, beta * r) are DPO's (dpo.py)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.engine.methods import Defaults, register
from tuneloop.engine.methods.dpo import DPO, pair_logps
from tuneloop.engine.methods.sft import epochs_reason, load_policy, scaled_epochs

ADAPTER_LEARNING_RATES = {"lora": 5e-4, "dora": 5e-4, "qlora": 5e-4, "ia3": 3e-3, "full": 8e-6, "freeze": 8e-6}
"""ORPO also learns the answers themselves, as SFT does: LoRA at SFT's rate; full at the paper's 8e-6."""
TARGET_EPOCHS, MIN_PAIRS_SEEN, MAX_EPOCHS = 3, 400, 8


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, stable at both ends (Maechler's split at -log 2)."""
    x = x.clamp(max=-1e-7)  # both branches are computed: at x = 0 one is -inf, and its gradient NaN
    return torch.where(x > -0.6931472, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def odds_ratio_terms(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(beta * log sigmoid(log odds ratio), log odds ratio) per pair, from mean per-token log-probabilities."""
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    return beta * F.logsigmoid(log_odds), log_odds


@register("orpo")
class ORPO(DPO):
    name = "orpo"

    def load(self, settings: Any, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        return load_policy(self.recipe, settings, four_bit, dtype)  # no reference

    def start(self, model: Any, data: Any, run_dir: Any, ctx: Any) -> None:
        pass

    def defaults(self, examples: int) -> Defaults:
        adapter = self.recipe.adapter.type
        epochs = scaled_epochs(examples, TARGET_EPOCHS, MIN_PAIRS_SEEN, cap=MAX_EPOCHS)
        return Defaults({"learning_rate": ADAPTER_LEARNING_RATES[adapter], "epochs": epochs, "warmup_ratio": 0.1},
                        {"learning_rate": f"ORPO with {adapter} (it learns the answers too)",
                         "epochs": epochs_reason(examples, epochs, TARGET_EPOCHS, MIN_PAIRS_SEEN),
                         "warmup_ratio": "10% of the steps"})

    def pair_terms(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logps, counts = pair_logps(model, batch)
        average = logps / counts.clamp(min=1)
        half = len(batch["pair_index"])
        beta = self.recipe.orpo.beta
        chosen, rejected = average[:half], average[half:]
        ratio, log_odds = odds_ratio_terms(chosen, rejected, beta)
        return {"losses": -chosen - ratio, "chosen": beta * chosen.detach(), "rejected": beta * rejected.detach(),
                "log_odds": log_odds.detach()}

    def run_meta(self) -> dict[str, Any]:
        return {"classifier": None, "label_set": None, "preference": {"method": "orpo", "beta": self.recipe.orpo.beta}}
