"""Search spaces: which recipe fields a hyperparameter search varies, and over what. A YAML mapping from a recipe
field (dotted, as the recipe nests it; a field's own name is enough where only one section has it) to its range:

    hyperparameters.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
    adapter.r: {type: int, low: 4, high: 32, step: 4}
    adapter.type: [lora, dora]                  # a list is the choices of a categorical
    epochs: {type: categorical, choices: [1, 2]}

Every value a range can take is checked against the recipe before anything runs (each choice, and each end of a
range), so a search never queues a trial whose recipe is invalid. An unknown field lists the fields there are."""

from __future__ import annotations

import itertools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel

from tuneloop.config.recipe import Recipe, RecipeError, parse_recipe

MAX_GRID = 1000
MAX_CHOICES = 100
NOT_SEARCHED = {"data", "output_dir", "grpo.rewards", "adapter.target_modules"}
"""Fields a search does not vary: the data, where the run goes, and lists."""


@dataclass(frozen=True)
class Param:
    """One searched field: `kind` float, int or categorical."""

    field: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    def grid_size(self) -> int:
        """How many points a grid search tries on this field (counted before any is made)."""
        if self.kind == "categorical":
            return len(self.choices)
        assert self.low is not None and self.high is not None
        if self.step is None:
            raise RecipeError(f"space: {self.field}: a grid needs choices, or a range with a step")
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def contains(self, value: Any) -> bool:
        """Whether a value is one this field's range or choices can take."""
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def grid_values(self) -> list[Any]:
        """The points a grid search tries: the choices, or the range in its steps."""
        count = self.grid_size()
        if self.kind == "categorical":
            return list(self.choices)
        assert self.low is not None and self.step is not None
        values = [self.low + i * self.step for i in range(count)]
        return [int(round(v)) if self.kind == "int" else round(v, 12) for v in values]


def _leaf(annotation: Any) -> tuple[str, Any] | None:
    """(kind, detail) of a field a search can vary: ('float'|'int'|'bool'|'str'|'literal', choices) or None."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        kinds = [_leaf(a) for a in typing.get_args(annotation) if a is not type(None)]
        kinds = [k for k in kinds if k is not None]
        return kinds[0] if len(kinds) == 1 else None
    if origin is Literal:
        return "literal", typing.get_args(annotation)
    if annotation in (float, int, bool, str):
        return annotation.__name__, None
    return None


def recipe_fields(model: type[BaseModel] = Recipe, prefix: str = "") -> dict[str, tuple[str, Any]]:
    """Every recipe field a search may vary, dotted, with its kind."""
    out: dict[str, tuple[str, Any]] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if path in NOT_SEARCHED:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(recipe_fields(annotation, f"{path}."))
            continue
        leaf = _leaf(annotation)
        if leaf is not None:
            out[path] = leaf
    return out


def resolve_field(name: str) -> str:
    """The dotted field a space names: itself, or the one field whose last part it is."""
    fields = recipe_fields()
    if name in fields:
        return name
    matches = [f for f in fields if f.rsplit(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise RecipeError(f"space: '{name}' is ambiguous: write one of {', '.join(matches)}")
    raise RecipeError(f"space: '{name}' is not a recipe field a search can vary; the fields are: "
                      f"{', '.join(fields)}")


def _number(value: Any, field: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecipeError(f"space: {field}.{what}: a number, got {value!r}")
    return float(value)


def parse_param(name: str, spec: Any) -> Param:
    field = resolve_field(name)
    kind, detail = recipe_fields()[field]
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise RecipeError(f"space: {field}: a range {{type, low, high}} or a list of choices, got {spec!r}")
    unknown = sorted(set(spec) - {"type", "low", "high", "log", "step", "choices"})
    if unknown:
        raise RecipeError(f"space: {field}.{unknown[0]}: unknown key; a range takes type, low, high, log, step; "
                          "a categorical takes type and choices")
    given = spec.get("type") or ("categorical" if "choices" in spec else None)
    if given == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise RecipeError(f"space: {field}.choices: a non-empty list")
        if any(isinstance(c, (dict, list)) for c in choices):
            raise RecipeError(f"space: {field}.choices: plain values (numbers, text, true/false)")
        if len(choices) > MAX_CHOICES:
            raise RecipeError(f"space: {field}.choices: at most {MAX_CHOICES}")
        return Param(field, "categorical", choices=tuple(choices))
    if given not in ("float", "int"):
        raise RecipeError(f"space: {field}.type: float, int or categorical, got {given!r}")
    if kind in ("literal", "str", "bool"):
        raise RecipeError(f"space: {field} takes {'one of ' + ', '.join(map(str, detail)) if detail else kind}; "
                          "give it as choices: [...]")
    if given == "float" and kind == "int":
        raise RecipeError(f"space: {field} is a whole number: use type int")
    low, high = _number(spec.get("low"), field, "low"), _number(spec.get("high"), field, "high")
    if not low < high:
        raise RecipeError(f"space: {field}: low {low:g} must be below high {high:g}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise RecipeError(f"space: {field}.log: true or false")
    if log and low <= 0:
        raise RecipeError(f"space: {field}: a log scale needs low above 0")
    step = spec.get("step")
    if step is not None:
        step = _number(step, field, "step")
        if step <= 0 or log:
            raise RecipeError(f"space: {field}.step: a positive step, and not with log")
    if given == "int":
        if not (low.is_integer() and high.is_integer() and (step is None or step.is_integer())):
            raise RecipeError(f"space: {field}: an int range has whole-number low, high and step")
        return Param(field, "int", int(low), int(high), log, int(step) if step else None)
    return Param(field, "float", low, high, log, step)


def parse_space(data: Any, recipe: Recipe) -> dict[str, Param]:
    """The space, checked against `recipe`: each choice and each end of a range must make a valid recipe."""
    if not isinstance(data, dict) or not data:
        raise RecipeError("space: a mapping of recipe fields to ranges, with at least one field")
    space: dict[str, Param] = {}
    for name, spec in data.items():
        param = parse_param(str(name), spec)
        if param.field in space:
            raise RecipeError(f"space: {param.field} is given twice")
        space[param.field] = param
    for param in space.values():
        values = param.choices if param.kind == "categorical" else (param.low, param.high)
        for value in values:
            try:
                apply(recipe, {param.field: value})
            except RecipeError as e:
                detail = str(e).removeprefix("invalid recipe:\n  ")
                raise RecipeError(f"space: {param.field} = {value!r} does not make a valid recipe: {detail}") from None
    return space


def load_space(path: Path, recipe: Recipe) -> dict[str, Param]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    except OSError as e:
        raise RecipeError(f"{path}: {e.strerror}") from None
    return parse_space(data, recipe)


def apply(recipe: Recipe, params: dict[str, Any]) -> Recipe:
    """The recipe with each dotted field set, validated whole."""
    data = recipe.model_dump(mode="json")
    for field, value in params.items():
        node = data
        *parents, last = field.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return parse_recipe(data)


def grid(space: dict[str, Param]) -> list[dict[str, Any]]:
    """Every point of the grid, in a fixed order."""
    names = list(space)
    size = math.prod(space[n].grid_size() for n in names)  # counted first: a range of 10^12 steps is never made
    if size > MAX_GRID:
        raise RecipeError(f"space: the grid has {size} points; at most {MAX_GRID}")
    values = [space[n].grid_values() for n in names]
    return [dict(zip(names, point)) for point in itertools.product(*values)]
