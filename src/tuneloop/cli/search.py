"""`tuneloop search`: a hyperparameter search on Optuna, each trial a job on the worker queue."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneloop.cli.common import console, err_console, handle_errors, open_sessions, print_json, settings


@handle_errors
def search_cmd(
    recipe: Annotated[Path, typer.Argument(help="The base recipe (YAML); its data needs validation "
                                                "(data.validation or data.validation_split).")],
    space: Annotated[Path, typer.Option(help="The search space (YAML): recipe field -> {type: float|int, low, "
                                             "high, log, step} or a list of choices.")],
    sampler: Annotated[str, typer.Option(help="grid, random, tpe or gp (Optuna's samplers).")] = "tpe",
    pruner: Annotated[str, typer.Option(help="none, median or hyperband (Optuna's pruners; they read every "
                                             "evaluation, so set evaluation.every_steps for early decisions).")
                      ] = "none",
    trials: Annotated[Optional[int], typer.Option(help="How many trials (default: the grid's size, else 10).")
                      ] = None,
    metric: Annotated[str, typer.Option(help="The validation metric to optimise: eval_loss (lower is better), "
                                             "eval_accuracy, or another eval_* metric the method measures.")
                      ] = "eval_loss",
    workers: Annotated[int, typer.Option(help="Workers this command starts to run the trials (0: queue them for "
                                              "the workers of `tuneloop serve` or `tuneloop worker`, and follow).")
                       ] = 1,
    seed: Annotated[int, typer.Option(help="The sampler's seed.")] = 0,
    name: Annotated[Optional[str], typer.Option(help="A name for the search.")] = None,
    ray: Annotated[Optional[str], typer.Option(help="Run the trials with Ray Tune on this cluster ('local' starts "
                                                    "one here; else an address such as auto or ray://host:10001), "
                                                    "Optuna searching and ASHA stopping trials that fall behind "
                                                    "(unless --pruner none).")] = None,
    cpus_per_trial: Annotated[int, typer.Option(help="With --ray: CPUs (and compute threads) of each trial.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the search with its trials as JSON.")] = False,
) -> None:
    """Search the space: each trial trains the recipe with the sampled fields and reports every evaluation to the
    study, which lives in the project's database (several workers, even on several machines sharing a PostgreSQL
    database, run one search together). At the end: a table of the trials, the best recipe as YAML, and plots
    (optimisation history, parallel coordinates, parameter importances)."""
    from tuneloop.config.recipe import load_recipe
    from tuneloop.services import searches as service

    base = load_recipe(recipe)
    try:
        space_data = yaml.safe_load(space.read_text())
    except OSError as e:
        raise ValueError(f"{space}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{space}: not valid YAML: {e}") from None
    make = open_sessions()
    with make() as session:
        row = service.create_search(session, settings(), base, space_data, sampler_name=sampler, pruner_name=pruner,
                                    trials=trials, metric=metric, seed=seed, name=name, queue=ray is None)
        search_id, count, direction = row.id, row.trials, row.direction
    err_console.print(f"search {search_id}: {count} trials ({sampler} sampler, "
                      f"{'ASHA scheduler on Ray' if ray and pruner != 'none' else pruner + ' pruner'}), {direction} "
                      f"{metric}", highlight=False)
    if ray is not None:
        _on_ray(make, search_id, ray, cpus_per_trial, as_json)
        return
    stop = threading.Event()
    threads = _start_workers(workers, stop)
    try:
        _follow(make, search_id, count, metric, direction)
    except KeyboardInterrupt:
        with make() as session:
            service.cancel_search(session, search_id)
        err_console.print("cancelled: the trials still running stop within seconds", highlight=False)
        raise typer.Exit(130) from None
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    with make() as session:
        search = service.require_search(session, search_id)
        view = service.search_view(session, settings(), search)
        written = service.write_results(settings(), view, service.load_study(settings(), search))
    if as_json:
        print_json({**view, "written": written})
        return
    _print(view, written)


def _on_ray(make: Any, search_id: str, address: str, cpus_per_trial: int, as_json: bool) -> None:
    from tuneloop.services import searches as service
    from tuneloop.services.search_ray import run_on_ray

    with make() as session:
        search = service.require_search(session, search_id)
        with err_console.status(f"running {search.trials} trials on Ray ({address})"):
            ray_view = run_on_ray(session, settings(), search, address, cpus_per_trial)
        view = service.search_view(session, settings(), search)
        written = service.write_results(settings(), view, service.load_study(settings(), search))
    if as_json:
        print_json({**view, "written": written, "ray": ray_view})
        return
    _print(view, written)
    stopped = sum(1 for t in ray_view["trials"] if t["stopped_early"])
    console.print(f"Ray Tune: {len(ray_view['trials'])} trials, {stopped} stopped early by ASHA; its results: "
                  f"{ray_view['results']}", highlight=False, soft_wrap=True)


def _start_workers(count: int, stop: threading.Event) -> list[threading.Thread]:
    from tuneloop.services.job_kinds import kinds
    from tuneloop.worker.runner import Worker

    threads = []
    for i in range(count):
        worker = Worker(settings(), f"search-{i}", kinds=kinds(), only={"search-trial"})
        thread = threading.Thread(target=worker.run, kwargs={"stop": stop}, daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _follow(make: Any, search_id: str, count: int, metric: str, direction: str) -> None:
    from tuneloop.services import searches as service

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("trials", total=count)
        while True:
            with make() as session:
                jobs = service.trial_jobs(session, service.require_search(session, search_id))
            done = [j for j in jobs if j.status in service.FINAL]
            values = [(j.result or {}).get("value") for j in done if (j.result or {}).get("state") == "COMPLETE"]
            values = [v for v in values if v is not None]
            best = (min(values) if direction == "minimize" else max(values)) if values else None
            pruned = sum(1 for j in done if (j.result or {}).get("state") == "PRUNED")
            running = sum(1 for j in jobs if j.status == "running")
            progress.update(task, completed=len(done), description=f"trials ({running} running, {pruned} pruned"
                            + (f", best {metric} {best:.4g})" if best is not None else ")"))
            if len(done) == len(jobs):
                return
            time.sleep(1.0)


def _print(view: dict[str, Any], written: dict[str, Any]) -> None:
    fields = list(view["space"])
    table = Table(title=f"search {view['id']}: {view['metric']} ({view['direction']})", title_justify="left")
    for column in ("trial", "state", view["metric"], *[f.rsplit(".", 1)[-1] for f in fields], "evaluations",
                   "seconds", "run"):
        table.add_column(column)
    best = (view["best"] or {}).get("trial")
    for row in view["trial_rows"]:
        value = f"{row['value']:.4g}" if row["value"] is not None else "-"
        params = [_shown(row["params"].get(f)) for f in fields]
        state = row["state"].lower() + (" (best)" if row["number"] == best else "")
        table.add_row(str(row["number"]), state, value, *params, str(len(row["evaluations"])),
                      str(row["seconds"] or "-"), row["run"] or "-")
    console.print(table)
    for row in view["trial_rows"]:
        if row["error"]:
            console.print(f"trial {row['number']} failed: {row['error']}", highlight=False, soft_wrap=True)
    if written["best"]:
        console.print(f"best: trial {best}, {view['metric']} {view['best']['value']:.4g}; its recipe: "
                      f"{written['best']}", highlight=False, soft_wrap=True)
    for name, path in written["plots"].items():
        console.print(f"plot {name}: {path}", highlight=False, soft_wrap=True)
    for name, why in written["skipped"].items():
        console.print(f"plot {name}: not drawn ({why})", highlight=False, soft_wrap=True)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)
