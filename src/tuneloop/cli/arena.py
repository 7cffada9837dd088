"""`tuneloop arena`: models judged side by side on a dataset's prompts, by people in the review queue and by an LLM
judge; win rates and a Bradley–Terry ranking with intervals, and the judge's agreement with people."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneloop.cli.common import console, err_console, fail, handle_errors, open_sessions, print_json, settings

app = typer.Typer(help="Arenas: models' answers judged in pairs by people and an LLM judge, ranked with intervals.",
                  no_args_is_help=True)


def _run_here(make: Any, job_id: str, workers: int) -> None:
    """Run the arena job with workers started here (0: leave it to the server's), showing its progress."""
    from tuneloop.services.job_kinds import kinds
    from tuneloop.store import repo
    from tuneloop.worker.runner import Worker

    stop = threading.Event()
    threads = [threading.Thread(target=Worker(settings(), f"arena-{i}", kinds=kinds(), only={"arena"}).run,
                                kwargs={"stop": stop}, daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    try:
        with Progress(*columns, console=err_console, transient=True) as progress:
            task = progress.add_task("arena", total=None)
            while True:
                with make() as session:
                    job = repo.get_job(session, job_id=job_id)
                    state = job.progress or {}
                    progress.update(task, completed=state.get("done", 0), total=state.get("total"),
                                    description=state.get("unit", "arena"))
                    if job.status in ("succeeded", "failed", "cancelled"):
                        if job.status != "succeeded":
                            fail(f"the arena job {job.id} {job.status}: {(job.error or {}).get('message', '')}")
                        return
                time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


@app.command("create")
@handle_errors
def create_cmd(
    name: Annotated[str, typer.Argument(help="The arena's name (its review project's).")],
    model: Annotated[list[str], typer.Option("--model", help="A model to judge (2 to 4: repeat the option).")],
    data: Annotated[str, typer.Option(help="Prompts: a file or dataset version (chats ending with the user, or "
                                           "'prompt').")],
    rows: Annotated[int, typer.Option(help="How many prompts (the first N).")] = 50,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer, at most (greedy).")] = 256,
    judge: Annotated[Optional[str], typer.Option(help="An LLM judge: judges every pair in both orders.")] = None,
    workers: Annotated[int, typer.Option(help="Workers started here (0: the server's workers run it).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Each model answers the prompts; every pair of answers to a prompt becomes a record of the review project
    NAME (task arena: people judge A, B or tie, names hidden, sides random), and the judge, if given, judges them."""
    from tuneloop.services import arena

    make = open_sessions()
    with make() as session:
        job = arena.create_arena(session, settings(), name=name, models=model, refs=model, data=data, rows=rows,
                                 max_tokens=max_tokens, judge=judge)
        job_id = job.id
    err_console.print(f"arena {name}: {len(model)} models on {rows} prompts (job {job_id})", highlight=False)
    if workers:
        _run_here(make, job_id, workers)
        _show(make, name, as_json)


@app.command("judge")
@handle_errors
def judge_cmd(
    name: Annotated[str, typer.Argument(help="The arena.")],
    judge: Annotated[str, typer.Option(help="The judge: a model tuneloop can load, or one of the judge endpoint's.")],
    workers: Annotated[int, typer.Option(help="Workers started here (0: the server's workers run it).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Have an LLM judge judge every pair of the arena, in both orders (a verdict that changes is a tie)."""
    from tuneloop.services import arena
    from tuneloop.services.review import projects

    make = open_sessions()
    with make() as session:
        job = arena.judge_arena(session, settings(), projects.get_project(session, name), judge, judge)
        job_id = job.id
    if workers:
        _run_here(make, job_id, workers)
        _show(make, name, as_json)


@app.command("show")
@handle_errors
def show_cmd(name: Annotated[str, typer.Argument(help="The arena.")],
             as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False) -> None:
    """The ranking and win rates by people and by each judge, and each judge's agreement with people."""
    _show(open_sessions(), name, as_json)


def _show(make: Any, name: str, as_json: bool) -> None:
    from tuneloop.services import arena
    from tuneloop.services.review import projects

    with make() as session:
        found = arena.results(session, projects.get_project(session, name))
    if as_json:
        print_json(found)
        return
    console.print(f"arena {found['project']}: {len(found['models'])} models, {found['prompts']} prompts, "
                  f"{found['records']} pairs", highlight=False)
    _table("people", found["people"])
    for judge, summary in found["judges"].items():
        _table(f"judge {judge}", summary)
        agreement = summary["agreement_with_people"]
        kappa = f"{agreement['kappa']:.3f}" if agreement["kappa"] is not None else "-"
        console.print(f"agreement of {judge} with people: kappa {kappa} on {agreement['pairs']} pairs both judged"
                      + (f" ({agreement['agreement']:.0%} the same verdict)" if agreement["agreement"] is not None
                         else ""), highlight=False)


def _table(title: str, summary: dict[str, Any]) -> None:
    if not summary["judgements"]:
        console.print(f"{title}: no judgements yet", highlight=False)
        return
    rates = {r["model"]: r for r in summary["win_rates"]}
    table = Table(title=f"{title}: {summary['judgements']} judgements ({summary['ties']} ties)", title_justify="left")
    for column in ("rank", "model", "strength (Bradley–Terry)", "95% interval", "win rate", "95% interval", "games"):
        table.add_column(column)
    for row in summary["ranking"]:
        rate = rates[row["model"]]
        table.add_row(str(row["rank"]), row["model"], _number(row["strength"]), _interval(row["low"], row["high"]),
                      _number(rate["win_rate"]), _interval(rate["low"], rate["high"]), str(rate["games"]))
    console.print(table)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{low:.3f}–{high:.3f}"
