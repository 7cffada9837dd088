"""Graders in OpenAI's shapes: a score for a model's answer (`sample`) to a data line (`item`). Used by RL training
(`grpo` rewards, `reinforcement` jobs), `/v1/fine_tuning/alpha/graders/run|validate`, and evaluations.

- `string_check`: `eq`, `ne`, `like` (the reference occurs in the input), `ilike` (the same, ignoring case): 1 or 0.
- `text_similarity`: `fuzzy_match` (rapidfuzz's ratio), `bleu` (sacrebleu's sentence BLEU), `gleu` (NLTK's
  sentence GLEU), `rouge_1`..`rouge_5` and `rouge_l` (rouge-score's F-measure, on words of any script), `cosine`
  (all-MiniLM-L6-v2 embeddings, the embedded encoder), each from 0 to 1. `meteor` needs NLTK's WordNet data.
- `score_model`: a judge model answers the grader's messages with a number within `range`.
- `label_model`: a judge model answers with one of `labels`; 1 when it is one of `passing_labels`.
- `python`: `grade(sample, item)` from the grader's source, run in a separate process with a time limit and a memory
  limit, only where the caller enables it (`GradingEnv.allow_python`; the server's TUNELOOP_ALLOW_PYTHON_GRADERS).
- `multi`: named graders combined by `calculate_output`, a formula over their names (simpleeval: + - * / ^, min,
  max, abs, floor, ceil, exp, sqrt, log).

Templates are Jinja2 (sandboxed, strict): `{{ item.field }}`, `{{ sample.output_text }}`, `{{ sample.output_json.x }}`;
a field the line lacks is an error that names it. A value that is not text is written as JSON.

A judge is any callable `(model, messages, sampling) -> (text, tokens)`; the services layer supplies one that asks a
model tuneloop serves, or an OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from tuneloop.evals.metrics import rouge, words
from tuneloop.evals.templates import GraderError, check_template, render, sample_namespace, template_item_fields

__all__ = ["GraderError", "render", "sample_namespace"]  # from templates.py, part of this module's surface

# ------------------------------------------------------------------------------------------------ shapes

ROUGE = ("rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
METRICS = ("cosine", "fuzzy_match", "bleu", "gleu", "meteor", *ROUGE)


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN is no threshold, and no JSON either


class StringCheck(_Shape):
    type: Literal["string_check"]
    name: str
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarity(_Shape):
    type: Literal["text_similarity"]
    name: str
    input: str
    reference: str
    evaluation_metric: Literal[METRICS]  # type: ignore[valid-type]
    pass_threshold: float | None = None


class InputText(_Shape):
    type: Literal["input_text", "output_text"]
    text: str


class JudgeMessage(_Shape):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | InputText | list[str | InputText]
    type: Literal["message"] | None = None

    def text(self) -> str:
        parts = self.content if isinstance(self.content, list) else [self.content]
        return "".join(p if isinstance(p, str) else p.text for p in parts)


class SamplingParams(_Shape):
    max_completions_tokens: int | None = Field(None, ge=1, le=4096)
    seed: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    reasoning_effort: str | None = None


class ScoreModel(_Shape):
    type: Literal["score_model"]
    name: str
    model: str = Field(min_length=1)
    input: list[JudgeMessage] = Field(min_length=1)
    range: list[float] = Field(default_factory=lambda: [0.0, 1.0])
    sampling_params: SamplingParams | None = None
    pass_threshold: float | None = None

    @field_validator("range")
    @classmethod
    def _range(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not value[0] < value[1]:
            raise ValueError("range must be two numbers [low, high] with low < high")
        return value


class LabelModel(_Shape):
    type: Literal["label_model"]
    name: str
    model: str = Field(min_length=1)
    input: list[JudgeMessage] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)

    @field_validator("passing_labels")
    @classmethod
    def _subset(cls, value: list[str], info: ValidationInfo) -> list[str]:
        labels = info.data.get("labels") or []
        unknown = [label for label in value if label not in labels]
        if unknown:
            raise ValueError(f"{unknown} are not among labels {labels}")
        return value


class Python(_Shape):
    type: Literal["python"]
    name: str
    source: str = Field(min_length=1)
    image_tag: str | None = None
    pass_threshold: float | None = None


Single = Annotated[Union[StringCheck, TextSimilarity, ScoreModel, LabelModel, Python], Field(discriminator="type")]


class Multi(_Shape):
    type: Literal["multi"]
    name: str
    graders: dict[str, Single] | Single
    calculate_output: str = Field(min_length=1)
    pass_threshold: float | None = None

    def named(self) -> dict[str, Any]:
        """The graders by the names the formula uses (a single grader goes by its own name)."""
        return self.graders if isinstance(self.graders, dict) else {self.graders.name: self.graders}


Grader = Annotated[Union[StringCheck, TextSimilarity, ScoreModel, LabelModel, Python, Multi],
                   Field(discriminator="type")]


class _Holder(BaseModel):
    grader: Grader


# ------------------------------------------------------------------------------------------------ templates

def templates(grader: Any, param: str = "grader") -> list[tuple[str, str]]:
    """(template, where) for every template string in the grader."""
    if isinstance(grader, (StringCheck, TextSimilarity)):
        return [(grader.input, f"{param}.input"), (grader.reference, f"{param}.reference")]
    if isinstance(grader, (ScoreModel, LabelModel)):
        return [(m.text(), f"{param}.input[{i}].content") for i, m in enumerate(grader.input)]
    if isinstance(grader, Multi):
        return [t for name, sub in grader.named().items() for t in templates(sub, f"{param}.graders.{name}")]
    return []


def item_fields(grader: Any) -> set[str]:
    """The item fields the grader's templates name: every data line must have them (`check_item`)."""
    return {f for source, _ in templates(grader) for f in template_item_fields(source)}


def check_item(grader: Any, item: Any) -> str | None:
    """What a data line lacks for this grader (None when it has all the fields the templates name)."""
    if not isinstance(item, dict):
        return "is not a JSON object"
    missing = sorted(f for f in item_fields(grader) if f not in item)
    if missing:
        return f"lacks the field{'s' if len(missing) > 1 else ''} {', '.join(missing)} that the grader's templates name"
    return None


def field_problems(graders_: Sequence[Any], items: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, str]]:
    """(line, what it lacks) for each numbered data line that lacks a field one of the graders names; a line
    once, however many graders name the field."""
    for number, item in items:
        for grader in graders_:
            problem = check_item(grader, item)
            if problem is not None:
                yield number, problem
                break


# ------------------------------------------------------------------------------------------------ validation

def _formula_names(formula: str) -> set[str]:
    import ast

    tree = ast.parse(_python_formula(formula), mode="eval")
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(FORMULA_FUNCTIONS)


def parse(data: Any, *, allow_python: bool, param: str = "grader") -> Any:
    """A grader from its JSON, checked whole: its shape, templates, formula and Python source. GraderError names the
    first problem's field."""
    try:
        grader = _Holder.model_validate({"grader": data}).grader
    except ValidationError as e:
        error = e.errors()[0]
        loc = [str(p) if not isinstance(p, int) else f"[{p}]" for p in error["loc"]]
        where = ".".join(p for p in loc if p not in {"string_check", "text_similarity", "score_model",
                                                       "label_model", "python", "multi"}
                        and not p.startswith(("dict[", "function-")))
        where = param + where.replace(".[", "[").removeprefix("grader")
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "union_tag_invalid":
            tag = error.get("input", {}).get("type")
            inside = ".graders" in where
            message = (f"a multi grader's graders are single graders; {tag!r} is not one of string_check, "
                       "text_similarity, score_model, label_model, python" if inside and tag == "multi" else
                       f"unknown grader type {tag!r}; one of string_check, text_similarity, score_model, "
                       f"label_model, python{'' if inside else ', multi'}")
            where = where + ".type"
        elif error["type"] == "union_tag_not_found":
            where = where + ".type"
            message = "a grader needs a type"
        raise GraderError(f"{where}: {message}", where) from None
    _check(grader, allow_python, param)
    return grader


def _check(grader: Any, allow_python: bool, param: str) -> None:
    for source, where in templates(grader, param):
        check_template(source, where)
    if isinstance(grader, TextSimilarity) and grader.evaluation_metric == "meteor" and not _has_wordnet():
        raise GraderError(f"{param}.evaluation_metric: meteor needs NLTK's WordNet data, which this server lacks "
                          "(python -m nltk.downloader wordnet); use rouge_l, bleu, gleu, fuzzy_match or cosine",
                          f"{param}.evaluation_metric")
    if isinstance(grader, Python):
        if not allow_python:
            raise GraderError(f"{param}: python graders are off on this server; an operator who trusts the "
                              "grader's authors turns them on with TUNELOOP_ALLOW_PYTHON_GRADERS=1", f"{param}.type")
        import ast

        try:
            tree = ast.parse(grader.source)
        except SyntaxError as e:
            raise GraderError(f"{param}.source: line {e.lineno}: {e.msg}", f"{param}.source") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "grade" for n in tree.body):
            raise GraderError(f"{param}.source: defines no function grade(sample, item)", f"{param}.source")
    if isinstance(grader, Multi):
        named = grader.named()
        for name, sub in named.items():
            _check(sub, allow_python, f"{param}.graders.{name}")
        try:
            names = _formula_names(grader.calculate_output)
        except SyntaxError as e:
            raise GraderError(f"{param}.calculate_output: the formula does not parse: {e.msg}",
                              f"{param}.calculate_output") from None
        unknown = sorted(names - set(named))
        if unknown:
            raise GraderError(f"{param}.calculate_output: the formula names {', '.join(unknown)}, which are not "
                              f"graders here (graders: {', '.join(named)})", f"{param}.calculate_output")


def _has_wordnet() -> bool:
    try:
        import nltk

        nltk.data.find("corpora/wordnet")
        return True
    except (LookupError, ImportError):
        return False


def dump(grader: Any) -> dict[str, Any]:
    return grader.model_dump(mode="json", exclude_none=True)


# ------------------------------------------------------------------------------------------------ grading

Judge = Callable[[str, list[dict[str, str]], dict[str, Any]], tuple[str, int]]
"""(model, messages, sampling params) -> (the judge's answer, tokens it used)."""
Embedder = Callable[[list[str]], Any]
"""texts -> unit vectors (rows), for `cosine`."""


@dataclass
class GradingEnv:
    """What grading may use: a judge for model graders, an embedder for cosine, and whether (and how tightly) Python
    graders run."""

    judge: Judge | None = None
    embedder: Embedder | None = None
    allow_python: bool = False
    python_seconds: float = 10.0
    """Wall-clock limit for one batch of Python grades (CPU time is limited to the same)."""
    python_memory_mb: int = 512


ERROR_FLAGS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
               "model_grader_refusal_error", "model_grader_server_error", "other_error", "python_grader_runtime_error",
               "python_grader_server_error", "sample_parse_error", "truncated_observation_error",
               "unresponsive_reward_error")


@dataclass
class Grade:
    """One grade, as `/graders/run` answers it."""

    reward: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    """Flags from ERROR_FLAGS that were raised, with `*_details` strings."""
    token_usage: dict[str, int] = field(default_factory=dict)
    """Judge tokens per judge model."""
    execution_time: float = 0.0

    def failed(self, flag: str, details: str | None = None) -> "Grade":
        self.errors[flag] = True
        if details:
            key = {"python_grader_server_error": "python_grader_server_error_type"}.get(flag, f"{flag}_details")
            self.errors[key] = details
        return self

    def response(self, grader: Any, sampled_model: str | None = None) -> dict[str, Any]:
        errors: dict[str, Any] = {flag: bool(self.errors.get(flag)) for flag in ERROR_FLAGS}
        errors.update({k: v for k, v in self.errors.items() if k not in ERROR_FLAGS})
        errors.setdefault("model_grader_server_error_details", None)
        errors.setdefault("python_grader_runtime_error_details", None)
        errors.setdefault("python_grader_server_error_type", None)
        scores = {grader.name: self.reward, **self.sub_rewards}
        return {"reward": self.reward, "sub_rewards": self.sub_rewards,
                "model_grader_token_usage_per_model": self.token_usage,
                "metadata": {"name": grader.name, "type": grader.type, "errors": errors,
                             "execution_time": round(self.execution_time, 6), "scores": scores,
                             "token_usage": sum(self.token_usage.values()) if self.token_usage else None,
                             "sampled_model_name": sampled_model}}


def grade(grader: Any, output_text: str, item: dict[str, Any], env: GradingEnv) -> Grade:
    return grade_batch(grader, [output_text], [item], env)[0]


def grade_batch(grader: Any, outputs: Sequence[str], items: Sequence[dict[str, Any]], env: GradingEnv) -> list[Grade]:
    """One grade per (answer, data line). Errors in one case (a missing field, a judge's unreadable answer, a
    Python exception) give that case reward 0 with its error flag; they never stop the batch."""
    started = time.perf_counter()
    samples = [sample_namespace(o) for o in outputs]
    if isinstance(grader, Multi):
        out = _grade_multi(grader, samples, list(items), env)
    elif isinstance(grader, Python):
        out = _grade_python(grader, samples, list(items), env)
    else:
        out = [_grade_one(grader, s, i, env) for s, i in zip(samples, items)]
    took = (time.perf_counter() - started) / max(len(out), 1)
    for g in out:
        g.execution_time = took
    return out


def _grade_one(grader: Any, sample: dict[str, Any], item: dict[str, Any], env: GradingEnv) -> Grade:
    try:
        if isinstance(grader, StringCheck):
            return Grade(_string_check(grader.operation, render(grader.input, sample, item),
                                       render(grader.reference, sample, item)))
        if isinstance(grader, TextSimilarity):
            return Grade(similarity(grader.evaluation_metric, render(grader.input, sample, item),
                                    render(grader.reference, sample, item), env.embedder))
        if isinstance(grader, (ScoreModel, LabelModel)):
            return _grade_judged(grader, sample, item, env)
    except GraderError as e:
        return Grade(0.0).failed("sample_parse_error" if "names a field" in e.message else "other_error", e.message)
    raise GraderError(f"grader type {grader.type!r} cannot grade one sample alone")


def _string_check(operation: str, text: str, reference: str) -> float:
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    return float(reference.lower() in text.lower())


def similarity(metric: str, text: str, reference: str, embedder: Embedder | None = None) -> float:
    """The text's similarity to the reference, from 0 to 1."""
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return fuzz.ratio(text, reference) / 100.0
    if metric == "bleu":
        import sacrebleu

        return sacrebleu.sentence_bleu(text, [reference]).score / 100.0
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([words(reference)], words(text)))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        return float(meteor_score([reference.split()], text.split()))
    if metric in ROUGE:
        return rouge("rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}", text, reference)
    if metric == "cosine":
        if embedder is None:
            raise GraderError("cosine similarity needs an embedding model, and none is available here")
        a, b = embedder([text, reference])
        return float(max(0.0, min(1.0, float((a * b).sum()))))
    raise GraderError(f"unknown evaluation_metric {metric!r}")


# ---------------------------------------------------------------- model judges

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _judge_messages(grader: Any, sample: dict[str, Any], item: dict[str, Any]) -> list[dict[str, str]]:
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": render(m.text(), sample, item)}
                for m in grader.input]
    if isinstance(grader, ScoreModel):
        low, high = grader.range
        rule = f"Answer with one number from {low:g} to {high:g} and nothing else."
    else:
        rule = f"Answer with exactly one of these labels and nothing else: {', '.join(grader.labels)}."
    return [*messages, {"role": "system", "content": rule}]


def read_score(text: str, low: float, high: float) -> float | None:
    """The judge's number: `{"result": x}` (OpenAI's structured answer) or the first number in the text, clamped
    into the range; None when there is none."""
    value: Any = None
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            value = parsed.get("result", parsed.get("score"))
        elif isinstance(parsed, (int, float)):
            value = parsed
    except (ValueError, RecursionError):
        pass
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        found = NUMBER.search(text)
        value = float(found.group()) if found else None
    if value is None or not math.isfinite(value):
        return None
    return min(max(float(value), low), high)


def read_label(text: str, labels: list[str]) -> str | None:
    """The label the judge answered: the whole answer (ignoring case, quotes and a final full stop), or else the
    label named first in it."""
    cleaned = text.strip().strip("\"'`*").rstrip(".").strip().lower()
    for label in labels:
        if cleaned == label.lower():
            return label
    found = [(m.start(), label) for label in labels
             if (m := re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", text.lower()))]
    return min(found)[1] if found else None


def _grade_judged(grader: Any, sample: dict[str, Any], item: dict[str, Any], env: GradingEnv) -> Grade:
    if env.judge is None:
        return Grade(0.0).failed("model_grader_server_error", "no judge model is available here")
    messages = _judge_messages(grader, sample, item)
    sampling = (grader.sampling_params.model_dump(exclude_none=True)
                if isinstance(grader, ScoreModel) and grader.sampling_params else {})
    try:
        text, tokens = env.judge(grader.model, messages, sampling)
    except Exception as e:  # a judge that is down or refuses: that case scores 0 with the reason
        return Grade(0.0).failed("model_grader_server_error", f"{type(e).__name__}: {e}")
    usage = {grader.model: int(tokens)}
    if isinstance(grader, ScoreModel):
        score = read_score(text, *grader.range)
        if score is None:
            return Grade(0.0, token_usage=usage).failed("model_grader_parse_error", text[:200])
        return Grade(score, token_usage=usage)
    label = read_label(text, grader.labels)
    if label is None:
        return Grade(0.0, token_usage=usage).failed("model_grader_parse_error", text[:200])
    return Grade(float(label in grader.passing_labels), token_usage=usage)


# ---------------------------------------------------------------- python, in a separate process

_GRADE = r"""
import json, sys, traceback
job = json.loads(sys.stdin.read())
out = []
try:
    scope = {"__name__": "grader"}
    exec(compile(job["source"], "<grader>", "exec"), scope)
    grade = scope["grade"]
except BaseException:
    print(json.dumps({"setup": traceback.format_exc(limit=-2)}))
    sys.exit(0)
for case in job["cases"]:
    try:
        value = grade(case["sample"], case["item"])
        out.append({"score": float(value)})
    except BaseException as e:
        out.append({"error": "".join(traceback.format_exception_only(type(e), e)).strip()[-500:]})
print(json.dumps({"results": out}))
"""


def _grade_python(grader: Python, samples: list[dict[str, Any]], items: list[dict[str, Any]],
                  env: GradingEnv) -> list[Grade]:
    """Every case in one child process (`sandbox.run`: limits, no network, its own /proc where it can). Its answer
    is checked: one finite score or error per case, or every case fails with python_grader_server_error."""
    from tuneloop.evals import sandbox

    if not env.allow_python:
        return [Grade(0.0).failed("python_grader_server_error", "disabled") for _ in samples]
    try:
        result = sandbox.run(_GRADE, {"source": grader.source,
                                      "cases": [{"sample": s, "item": i} for s, i in zip(samples, items)]},
                             env.python_seconds, env.python_memory_mb)
    except sandbox.Failed as e:
        if e.kind == "timeout":
            return [Grade(0.0).failed("unresponsive_reward_error", f"no grade within {env.python_seconds:g} s")
                    for _ in samples]
        return [Grade(0.0).failed("python_grader_server_error", e.kind) for _ in samples]
    if isinstance(result, dict) and isinstance(result.get("setup"), str):
        return [Grade(0.0).failed("python_grader_runtime_error", result["setup"].strip()[-500:]) for _ in samples]
    results = result.get("results") if isinstance(result, dict) else None
    if not isinstance(results, list) or len(results) != len(samples) or not all(isinstance(r, dict) for r in results):
        return [Grade(0.0).failed("python_grader_server_error", "the grader's process answered out of shape")
                for _ in samples]
    out = []
    for r in results:
        score = r.get("score")
        if "error" in r:
            out.append(Grade(0.0).failed("python_grader_runtime_error", str(r["error"])[:500]))
        elif isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            out.append(Grade(0.0).failed("python_grader_runtime_error", f"grade returned {str(score)[:60]}"))
        else:
            out.append(Grade(float(score)))
    return out


# ---------------------------------------------------------------- multi

FORMULA_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs, "floor": math.floor,
                                                      "ceil": math.ceil, "exp": math.exp, "sqrt": math.sqrt,
                                                      "log": math.log}


def formula_value(formula: str, names: dict[str, float]) -> float:
    """`calculate_output` over the sub-graders' rewards (simpleeval; `^` is a power, as in OpenAI's formulas)."""
    from simpleeval import SimpleEval

    return float(SimpleEval(functions=FORMULA_FUNCTIONS, names=names).eval(_python_formula(formula)))


def _python_formula(formula: str) -> str:
    """`^` means a power in a formula (with a power's precedence), `**` in Python."""
    return formula.replace("^", "**")


def _grade_multi(grader: Multi, samples: list[dict[str, Any]], items: list[dict[str, Any]],
                 env: GradingEnv) -> list[Grade]:
    named = grader.named()
    texts = [s["output_text"] for s in samples]
    per_grader = {name: grade_batch(sub, texts, items, env) for name, sub in named.items()}
    out = []
    for n in range(len(samples)):
        subs = {name: grades[n] for name, grades in per_grader.items()}
        result = Grade(0.0, sub_rewards={name: g.reward for name, g in subs.items()})
        for g in subs.values():
            result.errors.update(g.errors)
            for model, tokens in g.token_usage.items():
                result.token_usage[model] = result.token_usage.get(model, 0) + tokens
        try:
            value = formula_value(grader.calculate_output, result.sub_rewards)
            if not math.isfinite(value):
                raise ValueError(f"the formula gave {value}")
            result.reward = value
        except Exception as e:  # simpleeval's own errors, a division by zero, a math domain error, inf or nan
            result.failed("formula_parse_error" if isinstance(e, SyntaxError) else "other_error",
                          f"{type(e).__name__}: {e}")
        out.append(result)
    return out
