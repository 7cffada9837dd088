"""Rewards for online RL (the engine's `grpo` method), registered into its reward sources: OpenAI-shaped graders, a
trained reward model, and a `module:function`. Import this module before training (the CLI and the worker do).

A `function` is TRL's reward function, f(prompts, completions, **fields) -> list of floats (None: not scored),
where each field is a list with one value per completion. It runs in a separate process with the grader limits,
only where TUNELOOP_ALLOW_PYTHON_GRADERS=1, with the working folder on its import path."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from tuneloop.engine.methods.grpo import register_reward_source
from tuneloop.evals import graders


@register_reward_source("grader")
def grader_reward(source: Any, settings: Any) -> Any:
    grader = graders.parse(source.grader, allow_python=settings.allow_python_graders)
    judge = None
    if any(isinstance(g, (graders.ScoreModel, graders.LabelModel)) for g in _all(grader)):
        judge = LocalJudges(settings)
    env = graders.GradingEnv(judge=judge, allow_python=settings.allow_python_graders,
                             python_seconds=settings.python_grader_seconds,
                             python_memory_mb=settings.python_grader_memory_mb,
                             embedder=_embedder(settings) if _uses_cosine(grader) else None)

    def reward(prompts: list, completions: list[str], items: list[dict]) -> list[float]:
        """A completion the grader cannot read (not JSON where the template asks output_json) scores 0, as OpenAI
        scores it; only a data line that lacks a field the grader names is not scored (NaN)."""
        grades = graders.grade_batch(grader, completions, items, env)
        return [math.nan if graders.check_item(grader, item) is not None else g.reward for g, item in zip(grades, items)]

    reward.check_item = lambda item: graders.check_item(grader, item)  # type: ignore[attr-defined]
    return reward


def _all(grader: Any) -> list[Any]:
    return [grader, *(grader.named().values() if isinstance(grader, graders.Multi) else [])]


def _uses_cosine(grader: Any) -> bool:
    return any(isinstance(g, graders.TextSimilarity) and g.evaluation_metric == "cosine" for g in _all(grader))


def _embedder(settings: Any) -> Any:
    from tuneloop.models.embedding import TextEmbedder

    return TextEmbedder(settings)


def is_local(model: str) -> bool:
    """A judge this machine has: a registered name, or a folder or file that exists (a run, a converted model). The
    services resolve a client's model id (ft:..., a run's name) to one of these when they create the job."""
    from tuneloop.models.registry import EMBEDDED

    return model in EMBEDDED or Path(model).exists()


class LocalJudges:
    """Judges for training: a model this machine has (`is_local`), loaded once each; any other name goes to
    TUNELOOP_JUDGE_BASE_URL (never downloaded from the hub). A judge that cannot be loaded fails every grade that
    asks it (model_grader_server_error, reward 0), and says so once on stderr (the run's training.log)."""

    def __init__(self, settings: Any):
        self.settings, self.loaded, self.broken = settings, {}, {}

    def __call__(self, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> tuple[str, int]:
        from tuneloop.models import generation
        from tuneloop.models.loading import load_causal_lm

        if model in self.broken:
            raise RuntimeError(self.broken[model])
        if not is_local(model):
            if not self.settings.judge_base_url:
                self.broken[model] = f"no judge '{model}' on this machine, and no TUNELOOP_JUDGE_BASE_URL"
                print(self.broken[model], file=sys.stderr, flush=True)
                raise RuntimeError(self.broken[model])
            return _endpoint(self.settings, model, messages, sampling)
        if model not in self.loaded:
            try:
                self.loaded[model] = load_causal_lm(model, self.settings)
            except Exception as e:  # noqa: BLE001 - any loading failure: kept, reported once
                self.broken[model] = f"the judge '{model}' could not be loaded: {type(e).__name__}: {e}"
                print(self.broken[model], file=sys.stderr, flush=True)
                raise RuntimeError(self.broken[model]) from None
        judge, tokenizer = self.loaded[model]
        options = generation.GenerationOptions(max_tokens=sampling.get("max_completions_tokens") or 64,
                                               temperature=sampling.get("temperature") or 0.0,
                                               seed=sampling.get("seed"))
        answer = generation.complete(judge, tokenizer, messages, options)
        return answer.text, answer.completion_tokens


def _endpoint(settings: Any, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> tuple[str, int]:
    import httpx

    body = {"model": model, "messages": messages, "temperature": sampling.get("temperature") or 0.0,
            "max_tokens": sampling.get("max_completions_tokens") or 64}
    headers = {"Authorization": f"Bearer {settings.judge_api_key}"} if settings.judge_api_key else {}
    response = httpx.post(f"{settings.judge_base_url.rstrip('/')}/chat/completions", json=body, headers=headers,
                          timeout=120.0)
    response.raise_for_status()
    data = response.json()
    return data["choices"][0]["message"]["content"] or "", int((data.get("usage") or {}).get("total_tokens", 0))


@register_reward_source("reward_model")
def reward_model_reward(source: Any, settings: Any) -> Any:
    from tuneloop.evals.rewards import RewardScorer

    scorer = RewardScorer.load(source.reward_model, settings)

    def reward(prompts: list, completions: list[str], items: list[dict]) -> list[float]:
        return scorer.score([[*p, {"role": "assistant", "content": c}] for p, c in zip(prompts, completions)])

    return reward


_CALL = r"""
import importlib, json, sys
target = sys.argv[3]
job = json.loads(sys.stdin.read())
module, name = target.split(":", 1)
fn = getattr(importlib.import_module(module), name)
values = fn(job["prompts"], job["completions"], **job["fields"])
print(json.dumps([None if v is None else float(v) for v in values]))
"""


@register_reward_source("function")
def function_reward(source: Any, settings: Any) -> Any:
    if not settings.allow_python_graders:
        raise ValueError(f"function '{source.function}' is user code: it runs only where TUNELOOP_ALLOW_PYTHON_GRADERS=1 "
                         "is set, in a separate process with time and memory limits")
    folder = os.getcwd()
    if _call(settings, source.function, folder, [], [], {}) is None:  # the module and function exist and run
        raise ValueError(f"function '{source.function}' could not be imported and called from {folder}")

    def reward(prompts: list, completions: list[str], items: list[dict]) -> list[float]:
        keys = sorted({k for item in items for k in item if k != "messages"})
        fields = {k: [item.get(k) for item in items] for k in keys}
        # TRL's shapes: conversational prompts get completions as messages
        shaped = [[{"role": "assistant", "content": c}] for c in completions]
        values = _call(settings, source.function, folder, prompts, shaped, fields)
        if values is None or len(values) != len(completions):
            print(f"reward function {source.function} failed or answered {0 if values is None else len(values)} values "
                  f"for {len(completions)} completions: this batch is not scored", file=sys.stderr, flush=True)
            return [math.nan] * len(completions)
        return [math.nan if v is None else v for v in values]

    return reward


def _call(settings: Any, target: str, folder: str, prompts: list, completions: list, fields: dict[str, list]
          ) -> list | None:
    from tuneloop.evals import sandbox

    try:
        values = sandbox.run(_CALL, {"prompts": prompts, "completions": completions, "fields": fields},
                             settings.python_grader_seconds, settings.python_grader_memory_mb, [target], path=folder)
    except sandbox.Failed:
        return None
    if not isinstance(values, list) or not all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) for v in values):
        return None
    return values
