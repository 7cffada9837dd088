"""Hyperparameter search on Optuna. A search is a base recipe, a space over its fields (config/search.py), a sampler
(grid, random, tpe, gp), a pruner (none, median, hyperband) and a metric; its study lives in the project's database
(Optuna's tables in `optuna.db` beside an SQLite store, in the schema `optuna` of a PostgreSQL one: Optuna keeps its
own Alembic revision, which must not meet tuneloop's). Each trial is one job of kind `search-trial` on the worker
queue, so the trial count is capped across workers by the jobs queued, and several workers share the study. A trial
asks the study for its parameters, trains, reports every evaluation, and stops through the loop's control object
when the pruner says so (a checkpoint is written first). A grid's points are enqueued in the study, each taken by
exactly one trial."""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.config.recipe import Recipe, RecipeError, dump_recipe, parse_recipe
from tuneloop.config.search import Param, apply, grid, parse_space
from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.services import jobs as job_service
from tuneloop.services.files import require_file
from tuneloop.store import repo
from tuneloop.store.db import make_engine
from tuneloop.store.tables import Job, Search
from tuneloop.worker.kinds import job_session, register

SAMPLERS = ("grid", "random", "tpe", "gp")
PRUNERS = ("none", "median", "hyperband")
PLOTS = ("history", "parallel", "importances")
_PLOT_LOCK = threading.Lock()
MAX_TRIALS = 1000
ACTIVE = {"queued", "running", "paused", "validating_files"}
FINAL = {"succeeded", "failed", "cancelled"}


def direction_of(metric: str) -> str:
    return "minimize" if metric.endswith("loss") else "maximize"


# ---------------------------------------------------------------------- Optuna's storage, sampler, pruner
_STORAGES: dict[str, Any] = {}
_STORAGE_LOCK = threading.Lock()


def storage(settings: Settings) -> Any:
    """The study storage in the project's database, apart from tuneloop's own tables (one per database and
    process)."""
    import optuna
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _STORAGE_LOCK:
        if settings.db_url in _STORAGES:
            return _STORAGES[settings.db_url]
        url = make_url(settings.db_url)
        if url.get_backend_name() == "sqlite":
            made = optuna.storages.RDBStorage(f"sqlite:///{sqlite_study_path(settings)}",
                                              engine_kwargs={"connect_args": {"timeout": 60}})
        else:
            engine = make_engine(settings.db_url)
            try:
                with engine.begin() as connection:
                    connection.execute(text("CREATE SCHEMA IF NOT EXISTS optuna"))
            finally:
                engine.dispose()
            made = optuna.storages.RDBStorage(settings.db_url,
                                              engine_kwargs={"connect_args": {"options": "-csearch_path=optuna"}})
        _STORAGES[settings.db_url] = made
        return made


def sqlite_study_path(settings: Settings) -> Path | None:
    """optuna.db beside an SQLite store (None for PostgreSQL)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.db_url)
    if url.get_backend_name() != "sqlite":
        return None
    return Path(url.database or settings.home / "tuneloop.db").with_name("optuna.db")


@contextlib.contextmanager
def asking(settings: Settings) -> Iterator[None]:
    """Held while a trial asks the study for its parameters. PostgreSQL locks the waiting trial a worker takes
    (SELECT ... FOR UPDATE); SQLite ignores that, so there a file lock lets one worker ask at a time."""
    path = sqlite_study_path(settings)
    if path is None:
        yield
        return
    import fcntl

    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sampler(search: Search, slot: int = 0) -> Any:
    """The search's sampler; `slot` (the trial's job) offsets the seed, so trials sampled at once in separate
    processes do not draw the same random points."""
    import optuna

    seed = search.seed + slot
    startup = max(2, min(10, search.trials // 3))
    if search.sampler == "grid":
        return optuna.samplers.GridSampler({f: _param(p).grid_values() for f, p in search.space.items()}, seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPSampler is marked experimental
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)


def pruner(search: Search) -> Any:
    import optuna

    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


def load_study(settings: Settings, search: Search, slot: int = 0) -> Any:
    import optuna

    return optuna.load_study(study_name=search.study_name, storage=storage(settings), sampler=sampler(search, slot),
                             pruner=pruner(search))


def _param(data: dict[str, Any]) -> Param:
    kind = data["type"]
    if kind == "categorical":
        return Param("", "categorical", choices=tuple(data["choices"]))
    return Param("", kind, data["low"], data["high"], data.get("log", False), data.get("step"))


def suggest(trial: Any, field: str, param: Param) -> Any:
    if param.kind == "categorical":
        return trial.suggest_categorical(field, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(field, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(field, param.low, param.high, step=param.step, log=param.log)


# ---------------------------------------------------------------------- creating a search
def create_search(session: Session, settings: Settings, recipe: Recipe, space_data: Any, *, sampler_name: str = "tpe",
                  pruner_name: str = "none", trials: int | None = None, metric: str = "eval_loss", seed: int = 0,
                  name: str | None = None, points: list[dict[str, Any]] | None = None, queue: bool = True) -> Search:
    """Check the search whole, create its study, enqueue a grid's points (and any `points` given, tried first),
    and queue one `search-trial` job per trial (`queue` False: Ray Tune runs the trials, services/search_ray.py)."""
    if sampler_name not in SAMPLERS:
        raise ServiceError(400, f"sampler '{sampler_name}' is not one of {', '.join(SAMPLERS)}", "sampler")
    if pruner_name not in PRUNERS:
        raise ServiceError(400, f"pruner '{pruner_name}' is not one of {', '.join(PRUNERS)}", "pruner")
    if not metric.startswith("eval_"):
        raise ServiceError(400, f"metric '{metric}': a validation metric, such as eval_loss or eval_accuracy", "metric")
    if recipe.data.validation is None and recipe.data.validation_split == 0:
        raise ServiceError(400, f"the search compares trials by {metric} on validation data: set data.validation or "
                                "data.validation_split in the recipe", "recipe.data")
    try:
        space = parse_space(space_data, recipe)
        points_grid = grid(space) if sampler_name == "grid" else []
        for i, point in enumerate(points or []):
            unknown = sorted(set(point) - set(space))
            if unknown:
                raise RecipeError(f"points[{i}]: {unknown[0]} is not a field of the space ({', '.join(space)})")
            missing = sorted(set(space) - set(point))
            if missing:
                raise RecipeError(f"points[{i}]: gives no value for {missing[0]}; a point sets every field of the "
                                  "space")
            outside = [f for f, v in point.items() if not space[f].contains(v)]
            if outside:
                raise RecipeError(f"points[{i}]: {outside[0]} = {point[outside[0]]!r} is outside the space "
                                  f"({space[outside[0]].to_dict()})")
            apply(recipe, point)
        points_grid = [p for p in points_grid if p not in (points or [])]  # a point given is not tried twice
    except RecipeError as e:
        raise ServiceError(400, str(e), "space") from None
    given = len(points or [])
    if trials is None:
        trials = given + len(points_grid) if points_grid else max(10, given)
    if not 1 <= trials <= MAX_TRIALS:
        raise ServiceError(400, f"trials: from 1 to {MAX_TRIALS}, got {trials}", "trials")
    if points_grid and trials > given + len(points_grid):
        trials = given + len(points_grid)  # a grid is tried once, point by point (after the points given)
    import optuna

    search_id = repo.new_id("search")
    row = Search(id=search_id, name=name or search_id, recipe=recipe.model_dump(mode="json"),
                 space={f: p.to_dict() for f, p in space.items()}, sampler=sampler_name, pruner=pruner_name,
                 metric=metric, direction=direction_of(metric), trials=trials, seed=seed, study_name=search_id,
                 created_at=time.time())
    study = optuna.create_study(study_name=search_id, storage=storage(settings), direction=row.direction,
                                sampler=sampler(row), pruner=pruner(row))
    study.set_user_attr("metric", metric)
    for point in [*(points or []), *points_grid]:
        study.enqueue_trial(point)
    session.add(row)
    now = time.time()
    for slot in range(trials if queue else 0):
        job = Job(id=repo.new_id("job"), kind="search-trial", model=recipe.model, params={"search": search_id,
                  "slot": slot}, method={}, hyperparameters={}, extra={}, status="queued", result_files=[],
                  created_at=now + slot * 1e-6, cancel_requested=False,
                  progress={"done": 0, "total": None, "unit": "steps"})
        session.add(job)
        repo.add_event(session, job_id=job.id, message=f"Trial {slot + 1} of {trials} of search {search_id} queued")
    session.commit()
    return row


class SearchCreate(BaseModel):
    """POST /api/searches."""

    model_config = ConfigDict(extra="forbid", strict=True)  # 2 is not "2"
    recipe: dict[str, Any] = Field(description="The base recipe; its data named by uploaded file ids (file-...), "
                                               "dataset versions or files under TUNELOOP_ALLOWED_PATHS")
    space: dict[str, Any] = Field(description="Recipe field -> {type: float|int, low, high, log, step}, "
                                              "{type: categorical, choices}, or a list of choices")
    sampler: Literal["grid", "random", "tpe", "gp"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "none"
    trials: int | None = Field(None, ge=1, le=MAX_TRIALS, description="Default: the grid's size, else 10")
    metric: str = Field("eval_loss", pattern=r"^eval_\w+$", max_length=100)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    name: str | None = Field(None, max_length=200)
    points: list[dict[str, Any]] | None = Field(None, max_length=100,
                                                description="Points of the space to try first, in order")


def create_search_for_client(session: Session, settings: Settings, body: SearchCreate) -> Search:
    """An API client's search: the recipe may name only what is the client's to read (uploaded files, dataset
    versions, allowed paths) and models the server may train; it writes nowhere but the runs folder."""
    from tuneloop.data.versions import resolve_version

    try:
        recipe = parse_recipe(body.recipe)
    except RecipeError as e:
        raise ServiceError(400, str(e), "recipe") from None
    if recipe.output_dir is not None:
        raise ServiceError(400, "recipe.output_dir: a search's trials write their runs under the server's runs "
                                "folder; leave it out", "recipe.output_dir")
    if any(r.function for r in recipe.grpo.rewards):
        raise ServiceError(400, "recipe.grpo.rewards: reward functions run code from the server's disk; use graders "
                                "over the API", "recipe.grpo.rewards")
    from tuneloop.services.graders import parse_grader, resolve_judges
    from tuneloop.services.models import api_model_ref

    for i, reward in enumerate(recipe.grpo.rewards):  # only models the server serves, as a reinforcement job
        where = f"recipe.grpo.rewards[{i}]"
        if reward.reward_model:
            try:
                reward.reward_model = api_model_ref(session, settings, reward.reward_model)
            except ServiceError as e:
                raise ServiceError(e.status, f"{where}.reward_model: {e.message}", f"{where}.reward_model",
                                   e.code) from None
        if reward.grader is not None:
            parse_grader(settings, reward.grader, f"{where}.grader", session=session)
            reward.grader = resolve_judges(session, settings, reward.grader)
    sources = [*recipe.data.train, *([recipe.data.validation] if recipe.data.validation else [])]
    for i, source in enumerate(sources):
        where = "recipe.data.validation" if i == len(recipe.data.train) else f"recipe.data.train[{i}]"
        if source.path.startswith("file-"):
            require_file(session, source.path, where)
            continue
        if source.path not in {"", ".", ".."} and Path(source.path).name == source.path:  # a plain name only
            try:
                resolve_version(settings.datasets_dir, source.path)
                continue
            except Exception:  # noqa: BLE001 - not a dataset version: then an allowed path, or nothing
                pass
        if not settings.allows(source.path):
            raise ServiceError(404, f"{where}: no uploaded file, dataset version or allowed file '{source.path}'",
                               where, "data_not_found")
    encoders = recipe.method in ("classify", "reward", "token_classify")
    try:
        job_service.check_model(settings, recipe.model, encoders=encoders)
    except ServiceError as e:
        raise ServiceError(e.status, f"recipe.model: {e.message}", "recipe.model", e.code) from None
    spec = body.space.get("model")
    choices = spec if isinstance(spec, list) else spec.get("choices") if isinstance(spec, dict) else None
    for model in choices if isinstance(choices, list) else []:
        try:
            job_service.check_model(settings, str(model), encoders=encoders)
        except ServiceError as e:
            raise ServiceError(e.status, f"space.model: {e.message}", "space.model", e.code) from None
    return create_search(session, settings, recipe, body.space, sampler_name=body.sampler, pruner_name=body.pruner,
                         trials=body.trials, metric=body.metric, seed=body.seed, name=body.name, points=body.points)


def require_search(session: Session, search_id: str) -> Search:
    row = session.get(Search, search_id)
    if row is None:
        raise ServiceError(404, f"no search with id '{search_id}'", "search_id", "search_not_found")
    return row


def list_searches(session: Session) -> list[Search]:
    return list(session.scalars(select(Search).order_by(Search.created_at.desc())))


def trial_jobs(session: Session, search: Search) -> list[Job]:
    jobs = session.scalars(select(Job).where(Job.kind == "search-trial").order_by(Job.created_at))
    return [j for j in jobs if (j.params or {}).get("search") == search.id]


def cancel_search(session: Session, search_id: str) -> Search:
    """Cancel every trial not yet finished (a running one stops within seconds; its trial is then failed)."""
    search = require_search(session, search_id)
    for job in trial_jobs(session, search):
        if job.status in ACTIVE:
            try:
                job_service.request_cancel(session, job.id, kind="search-trial")
            except ServiceError:  # it finished meanwhile
                session.rollback()
    return search


# ---------------------------------------------------------------------- reading a search
def status(jobs: list[Job]) -> str:
    if any(j.status == "running" for j in jobs):
        return "running"
    if any(j.status in ACTIVE for j in jobs):
        return "queued"
    return "cancelled" if any(j.status == "cancelled" for j in jobs) else "finished"


def settle(study: Any, jobs: list[Job]) -> None:
    """Fail the trials still RUNNING in the study whose job has ended (cancelled, or killed before it could tell
    the study), and those no job owns once none is active: a trial is never left running for ever."""
    from optuna.trial import TrialState

    owner = {(j.result or {}).get("trial"): j for j in jobs if "trial" in (j.result or {})}
    active = any(j.status in ACTIVE for j in jobs)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        job = owner.get(t.number)
        if job is None and active or job is not None and job.status in ACTIVE:
            continue
        reason = (f"its job {job.id} was {job.status}" + (f": {job.error['message']}" if job.error else "")
                  if job is not None else "no job ran it to the end")
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", reason[:2000])
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        except Exception:  # noqa: BLE001 - another reader settled it first
            pass


def search_view(session: Session, settings: Settings, search: Search) -> dict[str, Any]:
    """The search with its trials (state, value, params, each evaluation, job, run, error) and its best trial."""
    from optuna.trial import TrialState

    study = load_study(settings, search)
    jobs = trial_jobs(session, search)
    if jobs:
        settle(study, jobs)
    by_trial = {(j.result or {}).get("trial"): j for j in jobs if "trial" in (j.result or {})}
    trials = []
    for t in study.get_trials(deepcopy=False):
        job = by_trial.get(t.number)
        state = t.state.name
        trials.append({"number": t.number, "state": state, "value": t.value, "params": t.params,
                       "evaluations": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                       "job": job.id if job else None, "job_status": job.status if job else None,
                       "run": Path(job.run_dir).name if job is not None and job.run_dir else None,
                       "error": t.user_attrs.get("error"),
                       "seconds": round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
                       if t.datetime_complete and t.datetime_start else None})
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not jobs and complete:
        # Ray: OptunaSearch tells a trial ASHA stopped as COMPLETE with its value then; the best is taken among
        # the trials that ran all their evaluations
        full = max(len(t.intermediate_values) for t in complete)
        for row in trials:
            row["stopped_early"] = row["state"] == "COMPLETE" and len(row["evaluations"]) < full
        complete = [t for t in complete if len(t.intermediate_values) == full]
    best = None
    if complete:
        pick = min if search.direction == "minimize" else max
        top = pick(complete, key=lambda t: t.value)
        best = {"trial": top.number, "value": top.value, "params": top.params,
                "recipe": dump_recipe(apply(parse_recipe(search.recipe), top.params))}
    counts = {s: sum(1 for t in trials if t["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    counts["queued"] = sum(1 for j in jobs if j.status == "queued")
    state = status(jobs) if jobs else "running" if counts["RUNNING"] else "finished"  # no jobs: Ray ran it
    return {"id": search.id, "object": "search", "name": search.name, "status": state,
            "sampler": search.sampler, "pruner": search.pruner, "metric": search.metric,
            "direction": search.direction, "trials": search.trials, "seed": search.seed, "space": search.space,
            "created_at": search.created_at, "counts": counts, "best": best, "trial_rows": trials,
            "jobs": [j.id for j in jobs]}


def write_results(settings: Settings, view: dict[str, Any], study: Any | None = None,
                  folder: Path | None = None) -> dict[str, Any]:
    """`searches/<id>/best.yaml` and the plots (those that can be drawn: each says why not otherwise)."""
    folder = folder or settings.home / "searches" / view["id"]
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"folder": str(folder), "best": None, "plots": {}, "skipped": {}}
    if view["best"]:
        path = folder / "best.yaml"
        path.write_text(view["best"]["recipe"])
        out["best"] = str(path)
    for name in PLOTS:
        try:
            png = plot(study, name, view["metric"])
        except ServiceError as e:
            out["skipped"][name] = e.message
            continue
        path = folder / f"{name}.png"
        path.write_bytes(png)
        out["plots"][name] = str(path)
    return out


def plot(study: Any, name: str, metric: str) -> bytes:
    """A PNG of Optuna's matplotlib plot: optimisation history, parallel coordinates or parameter importances."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    if name not in PLOTS:
        raise ServiceError(404, f"no plot '{name}'; the plots are {', '.join(PLOTS)}", "name")
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    needed = 2 if name == "importances" else 1
    if complete < needed:
        raise ServiceError(409, f"the {name} plot needs {needed} complete trial{'s' if needed > 1 else ''}; "
                                f"this search has {complete}", "name", "not_enough_trials")
    with _PLOT_LOCK, warnings.catch_warnings():  # pyplot is not thread-safe; the API draws in a thread pool
        warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
        if name == "history":
            ax = plots.plot_optimization_history(study, target_name=metric)
        elif name == "parallel":
            ax = plots.plot_parallel_coordinate(study, target_name=metric)
        else:
            if len(study.best_trial.params) < 1:
                raise ServiceError(409, "no parameters to rank", "name", "not_enough_trials")
            ax = plots.plot_param_importances(study, target_name=metric)
        figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
    return buffer.getvalue()


# ---------------------------------------------------------------------- a trial, as a job
@register("search-trial")
def run_trial(job_id: str, settings: Settings) -> None:
    with job_session(job_id, settings) as (session, job):
        Trial(session, settings, job).run()


class Trial:
    """One trial: the study's parameters for it (asked once; a restarted job keeps them and resumes its run from
    the last checkpoint), training with every evaluation reported, pruning through the control object."""

    def __init__(self, session: Session, settings: Settings, job: Job):
        self.session, self.settings, self.job = session, settings, job
        self.search = require_search(session, job.params["search"])
        self.study = load_study(settings, self.search, job.params["slot"])
        self.last_progress = 0.0

    def _start(self) -> tuple[Any, dict[str, Any], Path]:
        import optuna

        state = dict(self.job.result or {})
        if "trial" in state:
            trial = optuna.trial.Trial(self.study, state["trial_id"])
            return trial, state["params"], Path(state["run_dir"])
        with asking(self.settings):
            trial = self.study.ask()
        try:
            params = {f: suggest(trial, f, _param(p)) for f, p in self.search.space.items()}
        except Exception as e:
            from optuna.trial import TrialState

            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        run_dir = self.settings.runs_dir / f"run-{self.search.id.removeprefix('search-')[:12]}-trial-{trial.number}"
        self.job.result = {"trial": trial.number, "trial_id": trial._trial_id, "params": params,
                           "run_dir": str(run_dir)}
        self.job.run_dir = str(run_dir)
        repo.add_event(self.session, job_id=self.job.id, message=f"Trial {trial.number}: {params}")
        self.session.commit()  # at once: a restarted job continues this trial, never asks for another
        return trial, params, run_dir

    def run(self) -> None:
        from optuna.trial import TrialState

        from tuneloop.engine.checkpoint import list_checkpoints
        from tuneloop.engine.control import Control
        from tuneloop.engine.loop import resume, train
        from tuneloop.models.run_folder import Evaluation, RunFolder, Step
        from tuneloop.worker.jobs import recipe_with_files

        trial, params, run_dir = self._start()
        metric = self.search.metric
        control = Control()
        values: list[float] = []

        def listener(event: Any) -> None:
            if isinstance(event, Step) and time.time() - self.last_progress > 1.0:
                self.last_progress = time.time()
                self.job.progress = {"done": event.step, "total": event.total_steps, "unit": "steps"}
                self.session.commit()
            if not isinstance(event, Evaluation):
                return
            if metric not in event.metrics:
                raise RecipeError(f"the search's metric {metric} is not measured by this recipe's method (it "
                                  f"measures {', '.join(event.metrics)})")
            value = float(event.metrics[metric])
            values.append(value)
            if not math.isfinite(value):
                return
            trial.report(value, event.step)
            if trial.should_prune():
                control.request_stop("pruned")
                control.save = True  # a pruned trial keeps a checkpoint of where it stopped

        try:
            if RunFolder(run_dir).is_run() and list_checkpoints(run_dir):
                resume(run_dir, self.settings, listener, control)
            else:
                recipe = apply(recipe_with_files(self.session, self.settings, self.search.recipe), params)
                train(recipe, self.settings, run_dir, listener, control)
        except Exception as e:
            message = f"{type(e).__name__}: {e}"
            trial.set_user_attr("error", message[:2000])
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            self._finish("FAIL", None, message)
            raise
        if not values:  # a job resumed after its last evaluation: what it reported before
            reported = self.study.get_trials(deepcopy=False)[trial.number].intermediate_values
            values = [reported[k] for k in sorted(reported)]
        if control.reason == "pruned":
            self.study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
            self._finish("PRUNED", values[-1] if values else None)
        elif not values or not math.isfinite(values[-1]):
            message = f"the run gave no finite {metric}"
            trial.set_user_attr("error", message)
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            self._finish("FAIL", None, message)
            raise RuntimeError(message)
        else:
            self.study.tell(trial.number, values[-1], skip_if_finished=True)
            self._finish("COMPLETE", values[-1])

    def _finish(self, state: str, value: float | None, error: str | None = None) -> None:
        self.session.rollback()
        job = repo.get_job(self.session, job_id=self.job.id)
        assert job is not None
        job.result = {**(job.result or {}), "state": state, "value": value, **({"error": error} if error else {})}
        repo.add_event(self.session, job_id=job.id, level="error" if error else "info",
                       message=f"Trial {job.result['trial']} {state.lower()}"
                               + (f": {self.search.metric} {value:.4g}" if value is not None else "")
                               + (f": {error}" if error else ""))
        self.session.commit()
