"""Recipes: what to train. A YAML file validated by these models; every field has a working default."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSource(_Section):
    path: str
    """A data file, or an imported dataset's version id or name. In a job's recipe, an uploaded file's id
    (`file-...`), which the worker maps to the stored file."""
    format: str | None = None
    """Data format; detected from the content when empty."""
    weight: float = Field(1.0, gt=0)
    """Mixing weight when several datasets are combined (examples are sampled in this proportion)."""


class DataSection(_Section):
    train: list[DataSource] = Field(default_factory=list)
    """Training data: one or more sources."""
    validation: DataSource | None = None
    """Held-out data for evaluation during training; see validation_split otherwise."""
    validation_split: float = Field(0.0, ge=0, lt=1)
    """Share of the training data held out for validation when no validation source is given."""

    @field_validator("train", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        return [{"path": v} if isinstance(v, str) else v for v in value]

    @field_validator("validation", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


AdapterType = Literal["lora", "dora", "ia3", "qlora", "full", "freeze"]


class AdapterSection(_Section):
    type: AdapterType = "lora"
    """lora/dora/ia3/qlora train small adapter weights; full trains everything; freeze trains the last layers."""
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Which linear layers get adapters: 'all-linear' or a list of module names."""
    trainable_layers: int = Field(0, ge=0)
    """With type 'freeze': how many of the last transformer layers to train (0 = only the head)."""


class Hyperparameters(_Section):
    epochs: float | None = Field(None, gt=0)
    """Passes over the training data (ignored when max_steps is set). Empty: the method's default, scaled to
    the data. sft and generative classify: 3 passes, more for small data so that at least 100 examples are
    seen (at most 25 passes), fewer for large data so that at most 25,000 are (OpenAI's `n_epochs: auto`).
    classify with a head: 8 passes, and at least 2,000 examples seen."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps."""
    learning_rate: float | None = Field(None, gt=0)
    """Peak learning rate of the base model's trainable weights. Empty: the method's default by adapter type.
    sft: lora, dora, qlora 2e-4; ia3 3e-3; full and freeze 2e-5. Generative classify (answers of a label):
    lora, dora, qlora 5e-4; ia3 3e-3; full and freeze 5e-5.
    classify with a head: lora, dora 5e-4; ia3 3e-3; full 5e-5; freeze 1e-3."""
    head_learning_rate: float | None = Field(None, gt=0)
    """Peak learning rate of a classification head (classify with a head). Empty: 2e-3, since the head
    starts from random weights."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    """Share of the steps spent warming up. Empty: the method's default: 0.03, or 0.1 for a new head."""
    batch_size: int = Field(8, ge=1)
    """Examples per micro-batch."""
    gradient_accumulation: int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    order: Literal["length", "random", "sequential"] = "length"
    """Training order each epoch. length: seeded batches of similar lengths in shuffled order (least padding);
    random: the examples shuffled, batched in that order; sequential: the data's own order (the training
    sources one after another, each repeated as its weight says; a validation split keeps the rest in order)."""
    max_length: int = Field(512, ge=8)
    """Tokens per example; longer ones are truncated from the end."""
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the gradient norm to this (None: no clipping)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast where the CPU/GPU supports it, else fp32. Weights stay fp32 either way."""


class EvaluationSection(_Section):
    every_steps: int | None = Field(None, ge=1)
    """Evaluate on the validation data every N optimizer steps."""
    each_epoch: bool = True
    """Evaluate at the end of each epoch."""
    at_start: bool = False
    """Evaluate the starting model once before the first step (an Evaluation event at step 0), to compare with:
    the base model's reward before RL, say. It does not count for early stopping."""


class EarlyStoppingSection(_Section):
    enabled: bool = False
    metric: str = Field("eval_loss", pattern=r"^eval_\w+$")
    """The validation metric to watch: eval_loss (lower is better) or another the method reports, such as
    eval_accuracy (higher is better)."""
    patience: int = Field(3, ge=1)
    """Evaluations without improvement before stopping."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest change that counts as an improvement."""


class CheckpointSection(_Section):
    every_steps: int | None = Field(None, ge=1)
    """Save a checkpoint every N optimizer steps."""
    each_epoch: bool = True
    """Save a checkpoint at the end of each epoch."""
    keep_last: int = Field(2, ge=1)
    """How many recent checkpoints to keep (the best one is always kept)."""


class PreferenceSection(_Section):
    """Learning from preference pairs (method dpo): how the policy's margin over the reference is scored."""

    beta: float = Field(0.1, gt=0)
    """How far the policy may move from the reference: larger keeps it closer (the reward scale)."""
    loss: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """sigmoid: DPO's -log sigmoid(beta * margin); ipo: the squared loss of IPO on per-token log-ratios; hinge:
    max(0, 1 - beta * margin) (SLiC); robust: sigmoid corrected for a share `label_smoothing` of flipped labels."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """The share of pairs assumed flipped (robust; with sigmoid, conservative DPO)."""
    sft_weight: float = Field(0.0, ge=0)
    """Weight of an NLL term on the chosen answer (per token), added to each pair's loss (RPO)."""
    precompute_reference: bool = False
    """Compute the reference's log-probabilities once before training and keep them in the run folder (full
    fine-tuning then needs no second copy of the model in memory)."""


class OddsRatioSection(_Section):
    """ORPO (method orpo): preference pairs with no reference model."""

    beta: float = Field(0.1, gt=0)
    """Weight of the odds-ratio term beside the chosen answer's NLL (the paper's lambda)."""


class UnpairedSection(_Section):
    """KTO (method kto): answers marked desirable or undesirable one by one."""

    beta: float = Field(0.1, gt=0)
    """How far the policy may move from the reference (the reward scale), as in DPO."""
    desirable_weight: float | None = Field(None, gt=0)
    """Weight of the desirable answers' loss. Empty: from the class counts (the smaller class weighted up so that
    w_D * n_D = w_U * n_U)."""
    undesirable_weight: float | None = Field(None, gt=0)
    """Weight of the undesirable answers' loss. Empty: from the class counts."""


class RewardSource(_Section):
    """One reward for online RL: exactly one of `grader`, `reward_model` or `function`, with its weight."""

    grader: dict[str, Any] | None = None
    """An OpenAI-shaped grader (string_check, text_similarity, score_model, label_model, python, multi), its
    templates over `item.<field>` (the prompt line's fields) and `sample.output_text` (the completion)."""
    reward_model: str | None = None
    """A trained reward model (a run of method reward): its score of the prompt and completion."""
    function: str | None = None
    """`module:function` (a CLI recipe): f(prompts, completions, **fields) -> list of floats, TRL's signature; run
    in a separate process with time and memory limits, only with TUNELOOP_ALLOW_PYTHON_GRADERS=1."""
    weight: float = 1.0
    name: str | None = None
    """How the reward is named in metrics (default: the grader's name, the model or the function)."""

    @model_validator(mode="after")
    def _one(self) -> "RewardSource":
        given = [k for k in ("grader", "reward_model", "function") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a reward names exactly one of grader, reward_model or function (got "
                             f"{', '.join(given) or 'none'})")
        if self.function is not None and ":" not in self.function:
            raise ValueError(f"function '{self.function}' must be written module:function")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        if self.grader is not None:
            return str(self.grader.get("name") or self.grader.get("type") or "grader")
        return str(self.reward_model or self.function)


class OnlineRLSection(_Section):
    """Online RL (method grpo): completions sampled from the policy, scored by rewards, and made more likely in
    proportion to how much better than their group they scored."""

    rewards: list[RewardSource] = Field(default_factory=list)
    """Rewards combined with their weights; at least one."""
    num_generations: int = Field(4, ge=2, le=64)
    """Completions sampled per prompt (a group: advantages are measured within it)."""
    temperature: float = Field(1.0, gt=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_completion_length: int = Field(64, ge=1, le=4096)
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantages: the reward less its group's mean, divided by the group's standard deviation (group), that of
    the rewards sampled together (batch: the prompts of one micro-batch, all of a step's unless
    gradient_accumulation splits it), or not divided (none, as Dr. GRPO)."""
    epsilon: float = Field(0.2, gt=0, lt=1)
    """The PPO-style clip: the probability ratio to the policy that sampled is kept within [1 - epsilon,
    1 + epsilon_high]."""
    epsilon_high: float | None = Field(None, gt=0)
    """The upper clip (DAPO's clip-higher); empty: epsilon."""
    beta: float = Field(0.0, ge=0)
    """Weight of the KL to the reference (the adapter switched off, or a frozen copy); 0, as TRL today, needs no
    reference at all."""
    loss: Literal["grpo", "dr_grpo", "dapo"] = "dapo"
    """How token losses are averaged: per completion then over completions (grpo), over all tokens of the batch
    (dapo, TRL's default), or summed and divided by completions x max_completion_length (dr_grpo)."""
    log_completions: int = Field(4, ge=0)
    """Rollouts (prompt, completion, rewards) written to rollouts.jsonl at each logging step."""


class RewardSection(_Section):
    """Training a reward model (method reward) on preference pairs."""

    use_margin: bool = True
    """Subtract each pair's own `margin` field (a number; 0 where a pair has none) inside the Bradley-Terry loss: the
    chosen answer must win by at least that much."""
    center_coefficient: float = Field(0.0, ge=0)
    """Weight of (r(chosen) + r(rejected))^2, which keeps the rewards centred on 0 (TRL's center_rewards_coefficient;
    0.01 is a common choice)."""


class Recipe(_Section):
    model: str = "smollm2-135m-instruct"
    """Base model: a registry name, a folder, a .gguf file, a hub id, or a previous run folder
    (sequential fine-tuning: the same adapter type continues that run's adapter; another merges it first)."""
    method: str = "sft"
    """A registered training method (engine/methods/). sft: learn the assistant answers. classify: learn the
    label of each text (see classifier). token_classify: named entities in span data. dpo: prefer the chosen
    answer of each preference pair over the rejected one (see dpo); orpo: the same with no reference model; kto:
    answers marked desirable or undesirable (see kto); grpo: online RL on prompts, with rewards from graders,
    a reward model or a function (see grpo). reward: a reward model that scores the chosen
    answer above the rejected one (see reward)."""
    classifier: Literal["auto", "head", "generative"] = "auto"
    """With method classify: 'head' trains a sequence-classification layer on an encoder or a decoder;
    'generative' teaches a chat model to answer with the label (scored by each label's likelihood);
    'auto' picks head for encoders and generative for chat models."""
    dpo: PreferenceSection = Field(default_factory=PreferenceSection)
    """With method dpo: the loss and its knobs."""
    grpo: OnlineRLSection = Field(default_factory=OnlineRLSection)
    """With method grpo: rewards, sampling, advantages, clipping, KL and the loss's normalisation."""
    kto: UnpairedSection = Field(default_factory=UnpairedSection)
    """With method kto: beta and the two class weights."""
    orpo: OddsRatioSection = Field(default_factory=OddsRatioSection)
    """With method orpo: the weight of the odds-ratio term."""
    reward: RewardSection = Field(default_factory=RewardSection)
    """With method reward: the margin and centring of the Bradley-Terry loss."""
    train_on: Literal["assistant", "all"] = "assistant"
    """sft loss on assistant tokens only (honouring weight: 0), or on every token."""
    data: DataSection = Field(default_factory=DataSection)
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection)
    checkpoints: CheckpointSection = Field(default_factory=CheckpointSection)
    seed: int = 0
    """Seeds data order, adapter initialisation and dropout; the same seed gives the same losses."""
    output_dir: str | None = None
    """Run folder; default $TUNELOOP_HOME/runs/<run id>."""
    logging_steps: int = Field(1, ge=1)
    """Write a step event every N optimizer steps."""

    @model_validator(mode="after")
    def _checks(self) -> "Recipe":
        if self.early_stopping.enabled and self.data.validation is None and self.data.validation_split == 0:
            raise ValueError("early_stopping needs validation data: set data.validation or data.validation_split")
        if self.method == "grpo" and self.grpo.max_completion_length >= self.hyperparameters.max_length:
            raise ValueError(f"grpo.max_completion_length {self.grpo.max_completion_length} leaves no room for a prompt "
                             f"within hyperparameters.max_length {self.hyperparameters.max_length}")
        return self


class RecipeError(ValueError):
    """A recipe is invalid; the message names each field and the allowed values."""


def _explain(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "recipe"
        got = f" (got {e['input']!r})" if e["type"] not in {"missing"} and not isinstance(e["input"], dict) else ""
        message = e["msg"].replace("Value error, ", "")
        if e["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{where}: {message}{got}")
    return "invalid recipe:\n  " + "\n  ".join(lines)


def parse_recipe(data: dict[str, Any]) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_explain(e)) from None


def load_recipe(path: Path) -> Recipe:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of fields, got {type(data).__name__}")
    return parse_recipe(data)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
