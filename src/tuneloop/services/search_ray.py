"""The same search on a Ray cluster: Ray Tune runs the trials, with Optuna as the search algorithm (`OptunaSearch`
on the search's own study, in the project's database, so the trials table, best recipe and plots are those of any
search) and ASHA as the scheduler, which stops trials whose evaluations fall behind (`--pruner none`: none is
stopped). The only module that imports ray (an optional dependency: `pip install 'tuneloop[ray]'`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.services import searches
from tuneloop.store.tables import Search


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        return False
    return True


def distributions(search: Search) -> dict[str, Any]:
    """The space as Optuna distributions, for OptunaSearch."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for field, data in search.space.items():
        param = searches._param(data)
        if param.kind == "categorical":
            out[field] = CategoricalDistribution(list(param.choices))
        elif param.kind == "int":
            out[field] = IntDistribution(int(param.low), int(param.high), log=param.log, step=int(param.step or 1))
        else:
            out[field] = FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    return out


def _trainable(config: dict[str, Any], recipe: dict[str, Any], settings: dict[str, Any], metric: str,
               threads: int) -> None:
    """One trial, in a Ray worker: the recipe with the sampled fields, each evaluation reported to Tune."""
    import torch
    from ray import tune

    from tuneloop.config.search import apply
    from tuneloop.engine.loop import train
    from tuneloop.models.run_folder import Evaluation

    torch.set_num_threads(threads)
    config_settings = Settings.from_child(settings)
    trial_id = tune.get_context().get_trial_id()
    run_dir = config_settings.runs_dir / f"run-ray-{trial_id}"

    def listener(event: Any) -> None:
        if isinstance(event, Evaluation) and metric in event.metrics:
            tune.report({metric: float(event.metrics[metric]), "step": event.step, "run": run_dir.name})

    train(apply(parse_recipe(recipe), config), config_settings, run_dir, listener)


def run_on_ray(session: Session, settings: Settings, search: Search, address: str, cpus_per_trial: int = 1,
               local_cpus: int | None = None) -> dict[str, Any]:
    """Run the search's trials with Ray Tune on the cluster at `address` ('local': a Ray started here, with
    `local_cpus` CPUs). Returns what Tune saw of each trial (its last step, and whether ASHA stopped it)."""
    if not ray_available():
        raise ServiceError(400, "--ray needs Ray Tune: pip install 'tuneloop[ray]' (ray[tune])", "ray")
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from tuneloop.worker.jobs import recipe_with_files

    mode = "min" if search.direction == "minimize" else "max"
    recipe = recipe_with_files(session, settings, search.recipe).model_dump(mode="json")
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=local_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        algorithm = OptunaSearch(space=distributions(search), metric=search.metric, mode=mode,
                                 sampler=searches.sampler(search), study_name=search.study_name,
                                 storage=searches.storage(settings))
        scheduler = FIFOScheduler() if search.pruner == "none" else ASHAScheduler(
            time_attr="training_iteration", metric=search.metric, mode=mode, max_t=10_000, grace_period=1,
            reduction_factor=2)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, recipe=recipe, settings=settings.to_child(), metric=search.metric,
                                 threads=cpus_per_trial), {"cpu": cpus_per_trial})
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=algorithm, scheduler=scheduler,
                                                                  num_samples=search.trials),
                           run_config=tune.RunConfig(name=search.id, storage_path=str(settings.home / "ray_results"),
                                                     verbose=0))
        results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    trials = []
    longest = max((r.metrics.get("training_iteration", 0) for r in results if r.metrics), default=0)
    for result in results:
        metrics = result.metrics or {}
        trials.append({"value": metrics.get(search.metric), "evaluations": metrics.get("training_iteration", 0),
                       "stopped_early": metrics.get("training_iteration", 0) < longest,
                       "run": metrics.get("run"), "error": str(result.error)[:500] if result.error else None,
                       "params": {k: v for k, v in (result.config or {}).items()}})
    return {"trials": trials, "address": address, "results": str(Path(settings.home / "ray_results" / search.id))}
