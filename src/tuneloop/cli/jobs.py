"""`tuneloop jobs`: jobs of every kind (training, re-predicting, evaluating) in the local database: list, show, cancel, follow."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from tuneloop.cli.common import console, err_console, fail, handle_errors, open_sessions, print_json

app = typer.Typer(help="Jobs of every kind (train, repredict, eval) that workers run: status, progress, events.",
                  no_args_is_help=True)

STOPPED = {"succeeded", "failed", "cancelled", "paused"}
"""Where `follow` stops: the final statuses, and paused (nothing moves until someone resumes it)."""


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def _progress(view: dict[str, Any]) -> str:
    p = view["progress"]
    return f"{p['done']}/{'?' if p['total'] is None else p['total']} {p['unit']}"


def _links(view: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in view["links"].items() if value) or "-"


def _message(view: dict[str, Any]) -> str:
    error = view["error"] or {}
    return (error.get("message") or str(error)) if error else ""


@app.command("list")
@handle_errors
def list_cmd(
    kind: Annotated[Optional[str], typer.Option(help="Only jobs of this kind (train, repredict or eval).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The newest this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Jobs newest first, with their kind, status, progress and what they link to (run, project, model)."""
    from tuneloop.services.jobs import job_view, list_all_jobs

    with open_sessions()() as session:
        jobs, more = list_all_jobs(session, kind=kind, limit=limit)
        views = [job_view(job) for job in jobs]
    if as_json:
        print_json({"data": views, "has_more": more})
        return
    if not views:
        console.print(f"no {kind + ' ' if kind else ''}jobs yet", highlight=False)
        return
    # id, kind, status and progress stay whole (the id is what the other commands take); model and links wrap
    table = Table(*(Column(name, no_wrap=True) for name in ("id", "kind", "status", "progress")),
                  Column("model", overflow="fold"), Column("links", overflow="fold"), box=box.SIMPLE_HEAD,
                  show_edge=False, collapse_padding=True)
    for view in views:
        table.add_row(view["id"], view["kind"], view["status"], _progress(view), view["model"], _links(view))
    console.print(table)
    if more:
        err_console.print(f"[dim]only the newest {limit}; more with --limit[/]")


@app.command("show")
@handle_errors
def show_cmd(job_id: Annotated[str, typer.Argument(help="The job id (from `tuneloop jobs list`).")],
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """One job: its status, progress, times, worker, links, and what it produced or why it failed."""
    from tuneloop.services.jobs import job_view, require_job

    with open_sessions()() as session:
        view = job_view(require_job(session, job_id, kind=None))
    if as_json:
        print_json(view)
        return
    console.print(f"[bold]{view['id']}[/] ({view['kind']}): {view['status']}", highlight=False)
    rows = [("model", view["model"]), ("fine-tuned model", view["fine_tuned_model"]),
            ("progress", _progress(view)), ("created", _when(view["created_at"])),
            ("started", _when(view["started_at"])), ("finished", _when(view["finished_at"])),
            ("worker", view["worker"]), ("links", _links(view)),
            ("result", json.dumps(view["result"]) if view["result"] else None)]
    for name, value in rows:
        if value and value != "-":
            console.print(f"  {name + ':':<17} {value}", highlight=False, markup=False)
    if view["error"]:
        console.print(Text(f"  {'error:':<17} {_message(view)}", style="red"))


@app.command("cancel")
@handle_errors
def cancel_cmd(job_id: Annotated[str, typer.Argument(help="The job id (from `tuneloop jobs list`).")]) -> None:
    """Cancel a job: at once when no worker runs it yet, else its worker stops it at its next step."""
    from tuneloop.services.jobs import request_cancel

    with open_sessions()() as session:
        job = request_cancel(session, job_id, kind=None)
        status = job.status
    if status == "cancelled":
        console.print(f"cancelled {job_id}", highlight=False)
    else:
        console.print(f"cancel requested: the worker running {job_id} stops it at its next step "
                      f"(`tuneloop jobs follow {job_id}` to watch)", highlight=False)


@app.command("follow")
@handle_errors
def follow_cmd(
    job_id: Annotated[str, typer.Argument(help="The job id (from `tuneloop jobs list`).")],
    interval: Annotated[float, typer.Option(min=0.01, help="Seconds between looks at the database.",
                                            hidden=True)] = 0.5,
) -> None:
    """Watch a job until it stops: a progress bar and each event as it comes; exits 1 when the job failed.

    It stops following when the job succeeds, fails, is cancelled or is paused.
    """
    from tuneloop.services.jobs import job_view, require_job
    from tuneloop.store import repo

    factory = open_sessions()
    with factory() as session:
        require_job(session, job_id, kind=None)  # an unknown id is an error before any progress bar
    since = 0
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[unit]}"), TimeElapsedColumn()]
    try:
        with Progress(*columns, console=err_console) as progress:
            task = progress.add_task(job_id, total=None, unit="")
            while True:
                with factory() as session:  # a fresh session each time: it sees what workers committed
                    view = job_view(require_job(session, job_id, kind=None))
                    events = repo.events_since(session, job_id=job_id, since=since, limit=1000)
                    lines = [(e.seq, e.created_at, e.level, e.message) for e in events]
                for seq, created_at, level, message in lines:
                    stamp = time.strftime("%H:%M:%S", time.localtime(created_at))
                    style = {"error": "red", "warning": "yellow", "warn": "yellow"}.get(level, "")
                    progress.console.print(Text.assemble((stamp + " ", "dim"), (message, style)))
                    since = seq
                p = view["progress"]
                progress.update(task, description=f"{view['kind']} {view['status']}", completed=p["done"],
                                total=p["total"], unit=p["unit"])
                if view["status"] in STOPPED:
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        err_console.print(f"stopped following; the job goes on (`tuneloop jobs cancel {job_id}` stops it)")
        raise typer.Exit(130) from None
    if view["status"] == "failed":
        fail(f"{job_id} failed: {_message(view) or 'no reason recorded'}", code=1)
    finished = f" in {view['finished_at'] - view['started_at']:.0f} s" \
        if view["finished_at"] and view["started_at"] else ""
    made = f": {view['fine_tuned_model']}" if view["fine_tuned_model"] else ""
    console.print(f"{job_id} {view['status']}{finished}{made}", highlight=False)
