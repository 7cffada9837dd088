"""Graders for the API and for RL jobs: checking one (`parse_grader`), the judges and embedder they may use
(`grading_env`), and `/v1/fine_tuning/alpha/graders/run`'s answer (`run_grader`). The graders themselves are
`evals/graders.py`."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.evals import graders
from tuneloop.models import generation
from tuneloop.models.generation import GenerationOptions
from tuneloop.services import ServiceError
from tuneloop.services.models import api_model_ref

JUDGE_MAX_TOKENS = 64
"""A judge answers with a number or a label; more is never read."""


def parse_grader(settings: Settings, data: Any, param: str = "grader", session: Session | None = None) -> Any:
    """The grader, checked whole (shape, templates, formula, Python source, and with a session the judge models);
    a 400 naming the field otherwise."""
    try:
        grader = graders.parse(data, allow_python=settings.allow_python_graders, param=param)
    except graders.GraderError as e:
        raise ServiceError(400, e.message, e.param or param, "invalid_grader") from None
    if session is not None:
        for where, model in judge_models(grader, param):
            if not settings.judge_base_url:
                try:
                    api_model_ref(session, settings, model)
                except ServiceError:
                    raise ServiceError(400, f"{where}: no model '{model}' here to judge with: name a model from "
                                            "GET /v1/models, or set TUNELOOP_JUDGE_BASE_URL to an OpenAI-compatible "
                                            "endpoint that serves it", where, "invalid_grader") from None
    return grader


def resolve_judges(session: Session, settings: Settings, data: dict[str, Any]) -> dict[str, Any]:
    """The grader's JSON with each judge model a client named by its API id (ft:..., a run's name) replaced by what
    the worker loads (a run folder, a registered name); names this server does not serve stay as they are (the
    judge endpoint's)."""
    out = dict(data)
    if isinstance(out.get("model"), str):
        try:
            out["model"] = api_model_ref(session, settings, out["model"])
        except ServiceError:
            pass
    graders_ = out.get("graders")
    if isinstance(graders_, dict) and "type" not in graders_:
        out["graders"] = {name: resolve_judges(session, settings, sub) if isinstance(sub, dict) else sub
                          for name, sub in graders_.items()}
    elif isinstance(graders_, dict):
        out["graders"] = resolve_judges(session, settings, graders_)
    return out


def judge_models(grader: Any, param: str = "grader") -> list[tuple[str, str]]:
    """(field, model) of every judge the grader asks."""
    if isinstance(grader, (graders.ScoreModel, graders.LabelModel)):
        return [(f"{param}.model", grader.model)]
    if isinstance(grader, graders.Multi):
        return [j for name, sub in grader.named().items() for j in judge_models(sub, f"{param}.graders.{name}")]
    return []


class Judges:
    """`graders.Judge` for the server: a model it serves (a base, a fine-tune, a checkpoint, a run) answers through
    the model cache and the shared generation module; any other name goes to TUNELOOP_JUDGE_BASE_URL."""

    def __init__(self, settings: Settings, session: Session, cache: Any):
        self.settings, self.session, self.cache = settings, session, cache

    def __call__(self, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> tuple[str, int]:
        try:
            ref = api_model_ref(self.session, self.settings, model)
        except ServiceError:
            if not self.settings.judge_base_url:
                raise
            return self._endpoint(model, messages, sampling)
        options = GenerationOptions(max_tokens=min(sampling.get("max_completions_tokens") or JUDGE_MAX_TOKENS, 512),
                                    temperature=sampling.get("temperature") or 0.0,
                                    top_p=sampling.get("top_p") or 1.0, seed=sampling.get("seed"))
        with self.cache.using(ref) as (loaded, tokenizer):
            answer = generation.complete(loaded, tokenizer, messages, options)
        return answer.text, answer.completion_tokens

    def _endpoint(self, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> tuple[str, int]:
        import httpx

        body = {"model": model, "messages": messages, "temperature": sampling.get("temperature") or 0.0,
                "max_tokens": sampling.get("max_completions_tokens") or JUDGE_MAX_TOKENS}
        if sampling.get("seed") is not None:
            body["seed"] = sampling["seed"]
        headers = {"Authorization": f"Bearer {self.settings.judge_api_key}"} if self.settings.judge_api_key else {}
        response = httpx.post(f"{self.settings.judge_base_url.rstrip('/')}/chat/completions", json=body,
                              headers=headers, timeout=120.0)
        response.raise_for_status()
        data = response.json()
        return data["choices"][0]["message"]["content"] or "", int((data.get("usage") or {}).get("total_tokens", 0))


def grading_env(settings: Settings, judge: graders.Judge | None = None, embedder: Any = None) -> graders.GradingEnv:
    return graders.GradingEnv(judge=judge, embedder=embedder, allow_python=settings.allow_python_graders,
                              python_seconds=settings.python_grader_seconds,
                              python_memory_mb=settings.python_grader_memory_mb)


def run_grader(session: Session, settings: Settings, cache: Any, embedder: Any, data: Any, model_sample: str,
               item: Any) -> dict[str, Any]:
    """`/graders/run`: the grade of one answer to one data line, in OpenAI's shape. A data line that lacks a field
    the templates name is a 400 naming it (the grade would only say sample_parse_error)."""
    grader = parse_grader(settings, data, session=session)
    item = {} if item is None else item
    problem = graders.check_item(grader, item)
    if problem is not None:
        raise ServiceError(400, f"item {problem}", "item", "invalid_item")
    env = grading_env(settings, Judges(settings, session, cache), embedder)
    return graders.grade(grader, model_sample, item, env).response(grader)
