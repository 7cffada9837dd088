"""Prompt baselines: a base model prompted with a system message and k examples from the training data, compared
like any fine-tune ("was fine-tuning worth it?").

Written on the command line as `zero-shot` or `5-shot` (the base model and the examples come from elsewhere:
`--base`, `--train`), or as a YAML file:

    model: smollm2-135m-instruct
    system: "Route the support ticket to one team."
    k: 5
    seed: 0
    selection: nearest        # random, or nearest by minilm-l6 embedding of the test text
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneloop.config.recipe import RecipeError

SHOT = re.compile(r"^(zero|\d{1,2})-shot$")
MAX_SHOTS = 64


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    """The base model; None: the comparison's base (`--base`, else the first fine-tune's base)."""
    system: str | None = None
    """The system message; None: the task's own (a classification prompt lists the labels)."""
    k: int = Field(0, ge=0, le=MAX_SHOTS)
    """Examples from the training data, shown as earlier turns of the conversation."""
    seed: int = 0
    selection: Literal["random", "nearest"] = "random"
    """random: the same k examples (seeded) for every test row; nearest: the k training texts closest to each test
    text by minilm-l6 embedding."""
    name: str | None = None
    """What the comparison calls it; default `zero-shot`, `5-shot`, or the file's name."""

    @property
    def label(self) -> str:
        return self.name or ("zero-shot" if self.k == 0 else f"{self.k}-shot")


def is_prompt_candidate(text: str) -> bool:
    """`zero-shot`, `K-shot`, or a .yaml/.yml file."""
    return bool(SHOT.match(text)) or text.endswith((".yaml", ".yml"))


def parse_prompt_candidate(text: str) -> PromptConfig:
    """The prompt config a candidate names; RecipeError naming the file and field when it is wrong."""
    match = SHOT.match(text)
    if match:
        k = 0 if match.group(1) == "zero" else int(match.group(1))
        if k > MAX_SHOTS:
            raise RecipeError(f"{text}: at most {MAX_SHOTS} examples")
        return PromptConfig(k=k)
    path = Path(text)
    if not path.is_file():
        raise RecipeError(f"{text}: no such prompt config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{text}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{text}: a prompt config is a mapping (model, system, k, seed, selection)")
    try:
        config = PromptConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        allowed = ", ".join(PromptConfig.model_fields)
        extra = f" (allowed: {allowed})" if first["type"] == "extra_forbidden" else ""
        raise RecipeError(f"{text}: {where}: {first['msg']}{extra}") from None
    return config if config.name else config.model_copy(update={"name": path.stem})
