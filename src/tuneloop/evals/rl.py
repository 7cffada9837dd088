"""Rewards for online RL (the engine's `grpo` method), registered into its reward sources: OpenAI-shaped graders, a
trained reward model, and a `module:function`. Import this module before training (the CLI and the worker do).

A `function` is TRL's reward function, f(prompts, completions, **fields) -> list of floats (None: not scored),
where each field is a list with one value per completion. It runs in a separate process with the grader limits,
only where TUNELOOP_ALLOW_PYTHON_GRADERS=1, with the working folder on its import path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
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
        grades = graders.grade_batch(grader, completions, items, env)
        return [g.reward if not (g.errors.get("sample_parse_error")) else math.nan for g in grades]

    reward.check_item = lambda item: graders.check_item(grader, item)  # type: ignore[attr-defined]
    return reward


def _all(grader: Any) -> list[Any]:
    return [grader, *(grader.named().values() if isinstance(grader, graders.Multi) else [])]


def _uses_cosine(grader: Any) -> bool:
    return any(isinstance(g, graders.TextSimilarity) and g.evaluation_metric == "cosine" for g in _all(grader))


def _embedder(settings: Any) -> Any:
    from tuneloop.models.embedding import TextEmbedder

    return TextEmbedder(settings)


class LocalJudges:
    """Judges for training: a model this machine has (a registry name, a folder, a run), loaded once each, or
    TUNELOOP_JUDGE_BASE_URL for any other name."""

    def __init__(self, settings: Any):
        self.settings, self.loaded = settings, {}

    def __call__(self, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> tuple[str, int]:
        from tuneloop.models import generation
        from tuneloop.models.loading import load_causal_lm

        if model not in self.loaded:
            try:
                self.loaded[model] = load_causal_lm(model, self.settings)
            except Exception:
                if not self.settings.judge_base_url:
                    raise
                self.loaded[model] = None
        if self.loaded[model] is None:
            return _endpoint(self.settings, model, messages, sampling)
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


_FUNCTION_RUNNER = r"""
import importlib, json, math, resource, sys
seconds, megabytes, target = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))
cpu = max(1, int(seconds + 0.999))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
sys.path.insert(0, sys.argv[4])
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
    check = _call(settings, source.function, folder, [], [], {})  # the module and function exist and run
    if check is None:
        raise ValueError(f"function '{source.function}' could not be imported from {folder}")

    def reward(prompts: list, completions: list[str], items: list[dict]) -> list[float]:
        keys = sorted({k for item in items for k in item if k != "messages"})
        fields = {k: [item.get(k) for item in items] for k in keys}
        values = _call(settings, source.function, folder, prompts, completions, fields)
        if values is None or len(values) != len(completions):
            return [math.nan] * len(completions)
        return [math.nan if v is None else v for v in values]

    return reward


def _call(settings: Any, target: str, folder: str, prompts: list, completions: list[str],
          fields: dict[str, list]) -> list | None:
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _FUNCTION_RUNNER, str(settings.python_grader_seconds),
                               str(settings.python_grader_memory_mb), target, folder],
                              input=json.dumps({"prompts": prompts, "completions": completions, "fields": fields},
                                               default=str),
                              capture_output=True, text=True, timeout=settings.python_grader_seconds, cwd=folder,
                              env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"})
        return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None
