"""Fine-tuning jobs: create (checking every field), validate their files, map them to an engine recipe."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, StringConstraints, ValidationError, field_validator,
                      WithJsonSchema)
from sqlalchemy.orm import Session

from tuneloop.config.recipe import AdapterType, Recipe, RecipeError, parse_recipe
from tuneloop.config.settings import Settings
from tuneloop.engine.methods import method_for
from tuneloop.models.loading import model_dir
from tuneloop.models.registry import ModelError, ModelSpec, resolve
from tuneloop.services import ServiceError
from tuneloop.services.files import require_file
from tuneloop.services.models import api_base_model
from tuneloop.services.validation import invalid
from tuneloop.store import repo
from tuneloop.store.tables import Job
from tuneloop.worker.jobs import ORG, fine_tuned_name

__all__ = ["ORG", "JobCreate", "fine_tuned_name", "create_job", "create_train_job", "request_recipe",
           "request_cancel", "require_job"]

FINAL = {"succeeded", "failed", "cancelled"}
MAX_LR_MULTIPLIER = 10.0
"""learning_rate_multiplier 10 is a learning rate of 2e-3 for adapters: beyond it training diverges."""
SEED_MAX = 2**31 - 1


def shown_value(value: Any) -> str:
    """A client's value in a message, cut short: a 5 MB string is not echoed back."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(kind: type, low: float, high: float, auto: bool) -> Any:
    """An integer (or a finite number) within [low, high] (low excluded for floats), or 'auto' when allowed;
    the error says which, and the schema says the same to clients."""
    noun = "an integer" if kind is int else "a number"
    either = f"{noun} or 'auto'" if auto else noun

    def check(value: Any) -> Any:
        if auto and value in ("auto", None):
            return "auto"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (kind is int and not isinstance(value, int)) or not math.isfinite(value):
            raise ValueError(f"must be {either}, got {shown_value(value)}")
        if not (low < value if kind is float else low <= value) or value > high:
            bounds = f"greater than {low} and at most {high}" if kind is float else f"from {low} to {high}"
            raise ValueError(f"must be {noun} {bounds}, got {shown_value(value)}")
        return value

    number: dict[str, Any] = {"type": "integer" if kind is int else "number", "maximum": high,
                              **({"minimum": low} if kind is int else {"exclusiveMinimum": low})}
    schema = {"anyOf": [{"const": "auto"}, number]} if auto else number
    return Annotated[Any, PlainValidator(check), WithJsonSchema(schema)]


class Hyperparameters(BaseModel):
    """OpenAI's three, then tuneloop's own knobs (any may be left out)."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: _number(int, 1, 50, auto=True) = "auto"
    batch_size: _number(int, 1, 256, auto=True) = "auto"
    learning_rate_multiplier: _number(float, 0, MAX_LR_MULTIPLIER, auto=True) = "auto"
    adapter: AdapterType | None = None
    lora_rank: _number(int, 1, 1024, auto=False) = None
    lora_alpha: _number(int, 1, 4096, auto=False) = None
    max_length: _number(int, 8, 131072, auto=False) = None
    max_steps: _number(int, 1, 10_000_000, auto=False) = None
    checkpoint_steps: _number(int, 1, 10_000_000, auto=False) = None


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


def _real(low: float, high: float, high_open: bool = False) -> Any:
    """A finite number from `low` (included) to `high` (excluded with `high_open`); never a string or a bool."""
    def check(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                not (low <= value and ((value < high) if high_open else (value <= high))):
            raise ValueError(f"must be a number from {low} to {high}{' (excluded)' if high_open else ''}, "
                             f"got {shown_value(value)}")
        return float(value)

    schema = {"type": "number", "minimum": low, **({"exclusiveMaximum": high} if high_open else {"maximum": high})}
    return Annotated[Any, PlainValidator(check), WithJsonSchema(schema)]


class DpoHyperparameters(Hyperparameters):
    """OpenAI's DPO hyperparameters (beta with the three of supervised), then tuneloop's own."""

    beta: _number(float, 0.001, 100, auto=True) = "auto"
    loss: Literal["sigmoid", "ipo", "hinge", "robust"] | None = None
    label_smoothing: _real(0.0, 0.5, high_open=True) = None
    sft_weight: _real(0.0, 100.0) = None

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing_needs_a_loss_that_uses_it(cls, value: Any, info: Any) -> Any:
        if value and info.data.get("loss") not in (None, "sigmoid", "robust"):
            raise ValueError(f"is used by the sigmoid and robust losses only, not '{info.data['loss']}'")
        return value


class Dpo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class ReinforcementHyperparameters(Hyperparameters):
    """OpenAI's reinforcement hyperparameters, then tuneloop's own (the grpo method's knobs)."""

    compute_multiplier: _number(float, 0, 16, auto=True) = "auto"
    """Scales the completions sampled per prompt (4 at 1; at least 2)."""
    eval_interval: _number(int, 1, 10_000_000, auto=True) = "auto"
    """Evaluate on the validation file every N steps (auto: each epoch)."""
    eval_samples: _number(int, 1, 1, auto=True) = "auto"
    """Completions per validation prompt: one greedy completion in this build."""
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = None
    """Accepted for OpenAI's clients; the models trained here do not reason, so it changes nothing."""
    num_generations: _number(int, 2, 64, auto=False) = None
    temperature: _real(0.01, 2.0) = None
    max_completion_length: _number(int, 1, 4096, auto=False) = None
    beta: _real(0.0, 100.0) = None
    epsilon: _real(0.001, 0.999) = None
    loss: Literal["grpo", "dr_grpo", "dapo"] | None = None
    scale_rewards: Literal["group", "batch", "none"] | None = None


class Reinforcement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any] = Field(description="An OpenAI grader: string_check, text_similarity, score_model, "
                                               "label_model, python (where the server allows) or multi")
    hyperparameters: ReinforcementHyperparameters = Field(default_factory=ReinforcementHyperparameters)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None
    reinforcement: Reinforcement | None = None


MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class JobCreate(BaseModel):
    """POST /v1/fine_tuning/jobs, as OpenAI takes it."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, description="A base model from GET /v1/models")
    training_file: str = Field(min_length=1, description="The id of an uploaded file (purpose fine-tune)")
    validation_file: str | None = Field(None, min_length=1)
    suffix: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
                               description="Up to 64 letters, digits, '.', '_' or '-'; part of the model's name")
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        None, max_length=16, description="Up to 16 pairs; keys up to 64 characters, values up to 512")
    method: Method | None = None
    hyperparameters: Hyperparameters | None = Field(None, description="Deprecated by OpenAI: use method")
    integrations: list[Any] | None = Field(None, max_length=0, description="Not supported: leave it out or empty")


def parse_request(body: Any) -> JobCreate:
    if isinstance(body, JobCreate):
        return body
    if not isinstance(body, dict):
        raise ServiceError(400, "the request body must be a JSON object")
    try:
        return JobCreate.model_validate(body)
    except ValidationError as e:
        raise invalid(e) from None


def _method(request: JobCreate) -> tuple[dict[str, Any], dict[str, Any]]:
    """(method as stored, the hyperparameters that were given)."""
    method = request.method or Method(supervised=Supervised(hyperparameters=request.hyperparameters or
                                                            Hyperparameters()))
    others = [name for name in ("supervised", "dpo", "reinforcement")
              if name != method.type and getattr(method, name) is not None]
    if others:
        raise ServiceError(400, f"method.{others[0]}: given with method.type '{method.type}'; set method.type to "
                                f"'{others[0]}', or put the hyperparameters under method.{method.type}",
                           f"method.{others[0]}")
    if method.type == "reinforcement" and method.reinforcement is None:
        raise ServiceError(400, "method.reinforcement: a reinforcement job needs method.reinforcement.grader",
                           "method.reinforcement.grader")
    hp: Hyperparameters = (method.dpo or Dpo()).hyperparameters if method.type == "dpo" else \
        method.reinforcement.hyperparameters if method.reinforcement is not None else \
        (method.supervised or Supervised()).hyperparameters
    given = {k: v for k, v in hp.model_dump(exclude_none=True).items() if v != "auto"}
    stored = {"n_epochs": hp.n_epochs, "batch_size": hp.batch_size,
              "learning_rate_multiplier": hp.learning_rate_multiplier,
              **({"beta": hp.beta} if isinstance(hp, DpoHyperparameters) else {}), **given}
    if isinstance(hp, ReinforcementHyperparameters):
        stored.update({k: getattr(hp, k) for k in ("compute_multiplier", "eval_interval", "eval_samples")})
        return {"type": "reinforcement", "reinforcement": {"grader": method.reinforcement.grader,
                                                           "hyperparameters": stored}}, given
    return {"type": method.type, method.type: {"hyperparameters": stored}}, given


def check_model(settings: Settings, model: str, *, any_path: bool = False, encoders: bool = False) -> ModelSpec:
    """A base model a job can train, ready on this machine (workers never download); a 400 naming `model`.
    Over the API only what `api_base_model` allows; `any_path`: the CLI's callers, which may name any folder.
    `encoders`: the job trains a classifier head, which an encoder can take (fine-tuning jobs train chat
    models)."""
    if any_path:
        try:
            spec = resolve(model)
        except ModelError as e:
            raise ServiceError(400, str(e), "model", "model_not_found") from None
    else:
        spec = api_base_model(settings, model)
    if spec.kind == "encoder" and not encoders:
        raise ServiceError(400, f"model '{model}' is an encoder; fine-tuning jobs train chat models", "model")
    if spec.source == "hub":
        try:
            model_dir(spec, settings.model_copy(update={"offline": True}))
        except ModelError as e:
            raise ServiceError(400, str(e), "model", "model_not_found") from None
    return spec


def request_recipe(request: JobCreate) -> Recipe:
    """The one place an OpenAI fine-tuning request becomes a recipe. Its files stay file ids (the worker maps
    them to the stored files); what the request leaves as 'auto' is left to the method's defaults, and
    learning_rate_multiplier scales the method's default learning rate for the adapter."""
    method, given = _method(request)
    kind = method["type"]
    data: dict[str, Any] = {"train": request.training_file}
    if request.validation_file is not None:
        data["validation"] = request.validation_file
    hyperparameters = {"epochs": given.get("n_epochs"), "batch_size": given.get("batch_size", 8),
                       **{k: given[k] for k in ("max_length", "max_steps") if k in given}}
    sections: dict[str, Any] = {}
    if kind == "dpo":
        sections["dpo"] = {k: given[k] for k in ("beta", "loss", "label_smoothing", "sft_weight") if k in given}
    if kind == "reinforcement":
        rl = {k: given[k] for k in ("num_generations", "temperature", "max_completion_length", "beta", "epsilon",
                                    "loss", "scale_rewards") if k in given}
        if "num_generations" not in rl and "compute_multiplier" in given:
            rl["num_generations"] = max(2, round(4 * float(given["compute_multiplier"])))
        sections["grpo"] = {"rewards": [{"grader": method["reinforcement"]["grader"]}], **rl}
    try:
        recipe = parse_recipe({
            "model": request.model, "method": {"supervised": "sft", "reinforcement": "grpo"}.get(kind, kind),
            "data": data, "seed": request.seed or 0, **sections,
            "adapter": {"type": given.get("adapter", "lora"), **({"r": given["lora_rank"]} if "lora_rank" in given else {}),
                        **({"alpha": given["lora_alpha"]} if "lora_alpha" in given else {})},
            "hyperparameters": hyperparameters,
            "checkpoints": {"each_epoch": True, "keep_last": 3,
                            **({"every_steps": given["checkpoint_steps"]} if "checkpoint_steps" in given else {})},
            "evaluation": {"each_epoch": request.validation_file is not None and "eval_interval" not in given,
                           **({"every_steps": given["eval_interval"]} if "eval_interval" in given else {}),
                           "at_start": kind == "reinforcement" and request.validation_file is not None}})
    except RecipeError as e:
        field = next((f for f in ("max_completion_length", "num_generations", "temperature", "epsilon", "beta")
                      if kind == "reinforcement" and f"grpo.{f}" in str(e)), None)
        raise ServiceError(400, str(e), f"method.{kind}.hyperparameters" + (f".{field}" if field else "")) from None
    if "learning_rate_multiplier" in given:
        default = method_for(recipe, "chat").defaults(1).values["learning_rate"]
        recipe.hyperparameters.learning_rate = default * float(given["learning_rate_multiplier"])
    return recipe


def create_job(session: Session, settings: Settings, body: dict[str, Any] | JobCreate, *,
               any_path: bool = False) -> Job:
    """A fine-tuning job from an OpenAI request (checked as `JobCreate`, its model by `check_model`)."""
    request = parse_request(body)
    check_model(settings, request.model, any_path=any_path)
    recipe = request_recipe(request)
    if request.method is not None and request.method.reinforcement is not None:
        from tuneloop.services.graders import parse_grader, resolve_judges

        parse_grader(settings, request.method.reinforcement.grader, "method.reinforcement.grader", session)
        for source in recipe.grpo.rewards:  # the worker loads judges by what this server resolved them to
            source.grader = resolve_judges(session, settings, source.grader or {})
    method, given = _method(request)
    return create_train_job(session, recipe, method=method, hyperparameters=given,
                            suffix=request.suffix, metadata=request.metadata)


def create_train_job(session: Session, recipe: Recipe, *, method: dict[str, Any] | None = None,
                     hyperparameters: dict[str, Any] | None = None, suffix: str | None = None,
                     metadata: dict[str, str] | None = None) -> Job:
    """A `train` job that runs `recipe` (its data sources: uploaded file ids). `method` and `hyperparameters`
    are what the OpenAI API shows for the job (by default, supervised with what the recipe sets)."""
    training_file = recipe.data.train[0].path
    require_file(session, training_file, "training_file")
    validation_file = recipe.data.validation.path if recipe.data.validation else None
    if validation_file is not None:
        require_file(session, validation_file, "validation_file")
    if hyperparameters is None:
        hyperparameters = {k: v for k, v in (("n_epochs", recipe.hyperparameters.epochs),
                                             ("batch_size", recipe.hyperparameters.batch_size)) if v is not None}
    method = method or {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto", **hyperparameters}}}
    job = Job(id=repo.new_id("ftjob"), kind="train", recipe=recipe.model_dump(mode="json"), model=recipe.model,
              training_file=training_file, validation_file=validation_file, suffix=suffix, seed=recipe.seed,
              method=method, hyperparameters=hyperparameters, extra={}, job_metadata=metadata,
              status="validating_files", result_files=[], created_at=time.time(), cancel_requested=False)
    session.add(job)
    repo.add_event(session, job_id=job.id, message=f"Created fine-tuning job: {job.id}")
    session.commit()
    return job


def request_cancel(session: Session, job_id: str, kind: str | None = "train") -> Job:
    job = require_job(session, job_id, kind)
    if job.status in FINAL:
        raise ServiceError(400, f"job {job_id} is already {job.status}", "fine_tuning_job_id")
    if job.status in {"validating_files", "queued", "paused"} or (job.status == "running" and job.worker_id is None):
        job.status, job.finished_at = "cancelled", time.time()
        repo.add_event(session, job_id=job.id, message="Job cancelled")
    else:
        job.cancel_requested = True
    session.commit()
    return job


def request_pause(session: Session, job_id: str) -> Job:
    job = require_job(session, job_id)
    if job.status != "running":
        raise ServiceError(400, f"only a running job can be paused; job {job_id} is {job.status}",
                           "fine_tuning_job_id")
    job.pause_requested = True
    repo.add_event(session, job_id=job.id, message="Pause requested: saving a checkpoint")
    session.commit()
    return job


def request_resume(session: Session, job_id: str) -> Job:
    job = require_job(session, job_id)
    if job.status != "paused":
        raise ServiceError(400, f"only a paused job can be resumed; job {job_id} is {job.status}",
                           "fine_tuning_job_id")
    job.status = "queued"
    repo.add_event(session, job_id=job.id, message="Resume requested: queued to continue from its checkpoint")
    session.commit()
    return job


def require_job(session: Session, job_id: str, kind: str | None = "train") -> Job:
    """The job, or a 404; `kind`: only a job of that kind (the fine-tuning API sees train jobs alone)."""
    job = repo.get_job(session, job_id=job_id)
    if job is None or (kind is not None and job.kind != kind):
        what = "fine-tuning job" if kind == "train" else "job"
        raise ServiceError(404, f"no {what} with id '{job_id}'", "fine_tuning_job_id" if kind == "train" else "job_id",
                           "job_not_found")
    return job


# ---------------------------------------------------------------------- jobs of every kind (native API, CLI, UI)
def job_view(job: Job) -> dict[str, Any]:
    """A job of any kind as the native API, `tuneloop jobs` and the jobs page show it: its kind, status and
    progress, what it produced, and what it links to (its run folder, project, model)."""
    params, meta = job.params or {}, job.job_metadata or {}
    progress = job.progress or {}
    return {"id": job.id, "object": "job", "kind": job.kind, "status": job.status, "finished": job.status in FINAL,
            "model": job.model, "fine_tuned_model": job.fine_tuned_model,
            "progress": {"done": progress.get("done", 0), "total": progress.get("total"),
                         "unit": progress.get("unit", "steps" if job.kind == "train" else "items")},
            "result": job.result, "error": job.error, "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at, "worker": job.worker_id,
            "links": {"run": Path(job.run_dir).name if job.run_dir else None,
                      "project": params.get("project") or meta.get("project"), "model": job.fine_tuned_model,
                      "comparison": params.get("output") if job.kind == "compare" else None,
                      "search": params.get("search") if job.kind == "search-trial" else None,
                      "eval": params.get("eval_id") if job.kind == "eval" else None}}


def list_all_jobs(session: Session, *, kind: str | None = None, after: str | None = None,
                  limit: int = 50) -> tuple[list[Job], bool]:
    if kind is not None and kind not in JOB_KINDS:
        raise ServiceError(400, f"kind '{kind}' is not one of {', '.join(JOB_KINDS)}", "kind")
    return repo.list_jobs(session, after=after, limit=limit, kind=kind)


JobKind = Literal["train", "repredict", "eval", "search-trial", "compare", "arena"]
"""The kinds a job may have."""
JOB_KINDS = get_args(JobKind)
