"""`tuneloop review` (projects, pre-labels, agreement, export, the loop) and `tuneloop users`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import TimeRemainingColumn
from rich.table import Table

from tuneloop.cli.common import console, err_console, handle_errors, open_sessions, print_json, settings

app = typer.Typer(help="Review projects: people check and correct a model's labels; the loop trains on them.",
                  no_args_is_help=True)
users_app = typer.Typer(help="People who log in to the review UI (admin, reviewer, annotator).",
                        no_args_is_help=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------- users
@users_app.command("create")
@handle_errors
def users_create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="admin, reviewer or annotator.")] = "annotator",
    password: Annotated[Optional[str], typer.Option(help="The password (default: $TUNELOOP_PASSWORD, else asked).",
                                                    envvar="TUNELOOP_PASSWORD")] = None,
) -> None:
    """Create a user who can log in to the review UI."""
    from tuneloop.services.auth import create_user

    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with open_sessions()() as session:
        user = create_user(session, username=username, password=password, role=role)
        console.print(f"created {user.role} '{user.username}' ({user.id})", highlight=False)


@users_app.command("list")
@handle_errors
def users_list() -> None:
    """Every user with their role."""
    from tuneloop.store import review as store

    table = Table("id", "username", "role", "disabled")
    with open_sessions()() as session:
        for user in store.list_users(session):
            table.add_row(user.id, user.username, user.role, "yes" if user.disabled_at else "")
    console.print(table)


@contextlib.contextmanager
def _flag_for(code: str, hint: str) -> Iterator[None]:
    """A service error whose fix is a choice the UI offers as buttons: the CLI names its option."""
    from tuneloop.services import ServiceError

    try:
        yield
    except ServiceError as e:
        if e.code == code:
            e.message = f"{e.message} ({hint})"
        raise


# ---------------------------------------------------------------- projects
@app.command("tasks")
@handle_errors
def tasks_cmd() -> None:
    """The project tasks this installation has (one module each under services/review/tasks/)."""
    from tuneloop.services.review.tasks import for_task, task_titles

    table = Table("task", "people", "multi-label", "pre-labels", "trains")
    for name, title in task_titles().items():
        task = for_task(name)
        multi = "yes" if for_task(name, multi_label=True) is not task else ""
        trains = ("a classifier" if task.classifier_export else f"a chat model ({task.train_as})" if task.train_as
                  else f"method {task.trains}" if task.trains else "")
        table.add_row(name, title, multi, "yes" if task.prelabels else "", trains)
    console.print(table)


@app.command("create")
@handle_errors
def create_cmd(
    name: Annotated[str, typer.Argument(help="Project name.")],
    data: Annotated[str, typer.Option(help="A data file or an imported dataset version.")],
    task: Annotated[str, typer.Option(help="What people do with each record (`tuneloop review tasks` lists them).")
                    ] = "classification",
    labels: Annotated[Optional[str], typer.Option(help="Comma-separated label set (default: the data's labels).")] = None,
    multi_label: Annotated[bool, typer.Option(help="Each record may take several labels.")] = False,
    guidelines: Annotated[Optional[str], typer.Option(help="Guidelines text, or a file holding it.")] = None,
    overlap: Annotated[int, typer.Option(help="Annotations needed per record.")] = 1,
    holdout: Annotated[float, typer.Option(help="Fraction held out to measure each round's model.")] = 0.0,
    member: Annotated[Optional[list[str]], typer.Option(help="Username to add (repeatable).")] = None,
    unknown_labels: Annotated[str, typer.Option(help="Records labelled outside --labels: refuse the data, add "
                                                     "their labels, or drop those records.")] = "refuse",
    gold: Annotated[float, typer.Option(help="Fraction of the labelled records kept as gold questions.")] = 0.0,
    gold_rate: Annotated[float, typer.Option(help="Share of each person's records that are gold questions.")] = 0.1,
) -> None:
    """Create a review project from a data file or dataset version."""
    from tuneloop.services.review import projects

    text = guidelines or ""
    if guidelines and Path(guidelines).is_file():
        text = Path(guidelines).read_text()
    with open_sessions()() as session, _flag_for("unknown_labels", "choose with --unknown-labels add or "
                                                                  "--unknown-labels drop"):
        project = projects.create_project(session, settings(), name=name, task=task, data=data,
                                          labels=labels.split(",") if labels else None, multi_label=multi_label,
                                          guidelines=text, overlap=overlap, holdout=holdout,
                                          unknown_labels=unknown_labels, gold=gold, gold_rate=gold_rate)
        for username in member or []:
            projects.add_member(session, project, username)
        info = projects.summary(session, project)
    held = f", {info['holdout']} held out" if info["holdout"] else ""
    held += f", and {info['gold']} gold questions" if info["gold"] else ""
    labelled = f"; labels {', '.join(project.labels)}" if project.labels else ""
    console.print(f"created project '{name}' ({project.id}): {info['records']} {task} records{held}{labelled}",
                  highlight=False)


@app.command("add-member")
@handle_errors
def add_member_cmd(project: Annotated[str, typer.Argument(help="Project name or id.")],
                   usernames: Annotated[list[str], typer.Argument(help="Users to add.")]) -> None:
    """Let users see and annotate a project."""
    from tuneloop.services.review import projects

    with open_sessions()() as session:
        found = projects.get_project(session, project)
        for username in usernames:
            projects.add_member(session, found, username)
    console.print(f"added {', '.join(usernames)} to '{project}'")


@app.command("list")
@handle_errors
def list_cmd() -> None:
    """Projects with their progress."""
    from tuneloop.services.review import projects

    table = Table("name", "task", "records", "open", "annotated", "accepted", "overlap")
    with open_sessions()() as session:
        for project in projects.visible_projects(session, None):
            s = projects.counters(session, project)
            table.add_row(s["name"], s["task"], str(s["records"]), str(s["open"]), str(s["annotated"]),
                          str(s["accepted"]), str(s["overlap"]))
    console.print(table)


@app.command("show")
@handle_errors
def show_cmd(project: Annotated[str, typer.Argument(help="Project name or id.")],
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Progress, agreement among people, accuracy on gold questions, each model's agreement with people, and the
    rounds."""
    from tuneloop.services.review import gold, projects, quality, rounds

    with open_sessions()() as session:
        found = projects.get_project(session, project)
        info = {"summary": projects.summary(session, found), "agreement": quality.agreement(session, found),
                "models": quality.model_vs_human(session, found),
                "rounds": rounds.rounds_view(session, found), "gold": gold.gold_report(session, found)}
    if as_json:
        print_json(info)
        return
    s = info["summary"]
    console.print(f"[bold]{s['name']}[/] ({s['task']}): {s['records']} records, {s['open']} open, "
                  f"{s['annotated']} annotated, {s['accepted']} accepted", highlight=False)
    alpha = info["agreement"]["alpha"]
    console.print(f"Krippendorff's alpha {_fmt(alpha['value'])} on {alpha['records']} records", highlight=False)
    for pair in info["agreement"]["kappa_pairs"]:
        console.print(f"Cohen's kappa {' / '.join(pair['people'])}: {_fmt(pair['value'])} on {pair['records']} "
                      "records", highlight=False)
    for person in info["gold"]["people"]:
        flag = " [red]below the threshold[/]" if person["flagged"] else ""
        console.print(f"gold questions, {person['user']}: {person['correct']} of {person['answered']} right "
                      f"({person['accuracy']:.2f}){flag}", highlight=False)
    for model in info["models"]:
        console.print(f"model {model['model']}: accuracy {model['accuracy']:.3f}, kappa "
                      f"{_fmt(model['kappa']['value'])} on {model['records']} records", highlight=False)
    _print_rounds(info["rounds"])


def _print_rounds(rounds: list[dict]) -> None:
    if not rounds:
        return
    table = Table("round", "labels used", "accuracy", "macro-F1", "seconds", "model", "queue", title="rounds")
    for r in rounds:
        queue = "pre-fills it" if r.get("in_use") else (
            f"below {Path(r['below']['model']).name} ({_fmt(r['below']['accuracy'])})" if r.get("below") else "")
        used = "-" if r["labels_used"] is None else str(r["labels_used"])
        table.add_row(str(r["round"]), used, _fmt(r["accuracy"]), _fmt(r["macro_f1"]),
                      f"{r['seconds']:.0f}" if r["seconds"] is not None else "-", Path(r["model"]).name, queue)
    console.print(table)


@app.command("prelabel")
@handle_errors
def prelabel_cmd(
    project: Annotated[str, typer.Argument(help="Project name or id.")],
    model: Annotated[str, typer.Option(help="A registered or fine-tuned model (name, run folder or ft: id); "
                                            "with --base-url, the endpoint's model name.")] = "smollm2-135m-instruct",
    base_url: Annotated[Optional[str], typer.Option(help="An OpenAI-compatible endpoint (e.g. https://host/v1).")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="Its key (default $OPENAI_API_KEY).")] = None,
    records: Annotated[str, typer.Option(help="remaining (open and held-out records) or all.")] = "remaining",
    uncertainty: Annotated[str, typer.Option(help="margin or entropy of the label probabilities.")] = "margin",
    max_tokens: Annotated[int, typer.Option(help="Longest drafted answer (response projects).")] = 256,
) -> None:
    """Pre-label a project's records with a model; interrupted runs continue where they stopped."""
    from tuneloop.services.models import serving_ref
    from tuneloop.services.review import prelabel, projects

    with open_sessions()() as session:
        found = projects.get_project(session, project)
        if base_url:
            predictor = prelabel.Endpoint(base_url, api_key or os.environ.get("OPENAI_API_KEY", ""), model,
                                          max_tokens=max_tokens)
        else:
            with console.status(f"loading {model}"):
                predictor = prelabel.LocalModel(serving_ref(session, model), settings(), name=model,
                                                max_tokens=max_tokens)
        columns = [SpinnerColumn(), TextColumn("pre-labelling"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=err_console) as progress:
            task = progress.add_task("prelabel", total=None)
            result = prelabel.prelabel(session, found, predictor, records=records, uncertainty=uncertainty,
                                       on_progress=lambda done, total: progress.update(task, completed=done,
                                                                                       total=total))
    console.print(f"{result.predicted} records pre-labelled by {result.model}"
                  + (f" ({result.skipped} already had its prediction)" if result.skipped else ""), highlight=False)


@app.command("train")
@handle_errors
def train_cmd(
    project: Annotated[str, typer.Argument(help="Project name or id.")],
    model: Annotated[Optional[str], typer.Option(help="The base model: a chat model, or for classification and "
                                                      "spans an encoder (default: minilm-l6 for classification "
                                                      "and spans, smollm2-135m-instruct otherwise).")] = None,
    classifier: Annotated[str, typer.Option(help="Classification: head (a classifier layer), generative (the "
                                                 "chat model answers with the label), or auto.")] = "auto",
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the reviewed data (default: the method's).")
                      ] = None,
    method: Annotated[str, typer.Option(help="dpo: train on the project's preference pairs (preference and "
                                             "response projects); reward: a reward model on those pairs or on a "
                                             "rating project's answers to the same prompt; kto: a rating project's "
                                             "answers (4-5 desirable, 1-2 not); auto: the task's own training.")
                  ] = "auto",
) -> None:
    """Queue a fine-tuning job on the reviewed records; a worker (`tuneloop serve` or `tuneloop worker`) runs it."""
    from tuneloop.services.review import projects, rounds

    with open_sessions()() as session:
        job = rounds.train_on_reviewed(session, settings(), projects.get_project(session, project), model=model,
                                       epochs=epochs, classifier=classifier, any_path=True, method=method)
        examples = (job.job_metadata or {}).get("examples")
    console.print(f"queued {job.id} ({job.status}) on {examples} reviewed examples; a worker trains it.\n"
                  f"when it succeeds: tuneloop review repredict {project} --model <its fine_tuned_model>",
                  highlight=False)


@app.command("repredict")
@handle_errors
def repredict_cmd(
    project: Annotated[str, typer.Argument(help="Project name or id.")],
    model: Annotated[str, typer.Option(help="A fine-tuned model (ft:...), a run folder or a registered model.")],
) -> None:
    """Score the open and held-out records with a model (again, if it scored them before) and record the round;
    the model pre-fills the queue from then on unless it scores below the one that does."""
    from tuneloop.services.review import projects, rounds

    columns = [SpinnerColumn(), TextColumn("re-predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with open_sessions()() as session:
        found = projects.get_project(session, project)
        with Progress(*columns, console=err_console) as progress:
            task = progress.add_task("repredict", total=None)
            row = rounds.repredict(session, settings(), found, model,
                                   lambda done, total: progress.update(task, completed=done, total=total))
        view = next(v for v in rounds.rounds_view(session, found) if v["round"] == row.number)
    used = "labels used unknown (trained outside the project)" if row.labels_used is None else \
        f"{row.labels_used} labels"
    console.print(f"round {row.number}: {used}, accuracy on held-out records "
                  f"{_fmt(row.accuracy)} ({row.predicted} records scored, {row.seconds:.0f} s)", highlight=False)
    if view["below"]:
        console.print(f"[yellow]below {view['below']['model']} ({_fmt(view['below']['accuracy'])}), which keeps "
                      f"pre-filling the queue[/]; to use this model anyway: tuneloop review set {project} "
                      f"--prefill-model {model}", highlight=False)


@app.command("set")
@handle_errors
def set_cmd(
    project: Annotated[str, typer.Argument(help="Project name or id.")],
    prefill_model: Annotated[Optional[str], typer.Option(help="The model whose predictions pre-fill the queue.")] = None,
    hide_predictions: Annotated[Optional[bool], typer.Option("--hide-predictions/--show-predictions",
                                                             help="Whether people see a model's answer.")] = None,
    overlap: Annotated[Optional[int], typer.Option(help="Annotations needed per record.")] = None,
    gold_rate: Annotated[Optional[float], typer.Option(help="Share of each person's records that are gold "
                                                            "questions.")] = None,
    gold_threshold: Annotated[Optional[float], typer.Option(help="Gold accuracy below which a person is flagged.")
                              ] = None,
) -> None:
    """Change a project's settings."""
    from tuneloop.services.review import projects

    with open_sessions()() as session:
        found = projects.update_project(session, projects.get_project(session, project), prefill_model=prefill_model,
                                        hide_predictions=hide_predictions, overlap=overlap, gold_rate=gold_rate,
                                        gold_threshold=gold_threshold)
        console.print(f"{found.name}: pre-filled by {found.prefill_model or 'no model'}; predictions "
                      f"{'hidden' if found.hide_predictions else 'shown'} (never on held-out records)", highlight=False)


@app.command("export")
@handle_errors
def export_cmd(
    project: Annotated[str, typer.Argument(help="Project name or id.")],
    as_: Annotated[str, typer.Option("--as", help="classify, chat or sft (classification); sft or dpo (response, "
                                                  "preference); reward (rating); spans (character offsets) or bio "
                                                  "(spans).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSONL file (default: stdout).")] = None,
    split: Annotated[str, typer.Option(help="pool (for training), holdout, or all.")] = "pool",
    policy: Annotated[str, typer.Option(help="final (disagreements left out until adjudicated), majority (ties "
                                             "left out), or annotations (every answer, with its annotator).")
                      ] = "final",
) -> None:
    """Settled records as training data (JSONL); says what it left out, and why."""
    from tuneloop.services.review import export, projects

    with open_sessions()() as session:
        report = export.export_report(session, projects.get_project(session, project), as_, split, policy)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in report.rows)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    err_console.print(f"{'wrote ' if output else ''}{report.summary()}{f' to {output}' if output else ''}",
                      highlight=False)


@app.command("loop")
@handle_errors
def loop_cmd(
    project: Annotated[str, typer.Argument(help="Project name or id (classification, with held-out records).")],
    simulate_from: Annotated[str, typer.Option(help="Answer from this field of each record's data (the gold label) "
                                                    "instead of people.")],
    rounds: Annotated[int, typer.Option(help="Rounds of label → train → re-predict.")] = 3,
    per_round: Annotated[int, typer.Option(help="Records labelled per round.")] = 50,
    model: Annotated[str, typer.Option(help="What each round trains (a head on it).")] = "minilm-l6",
    order: Annotated[str, typer.Option(help="Queue order: uncertainty, models, random or id.")] = "uncertainty",
    epochs: Annotated[float, typer.Option(help="Epochs per round.")] = 8,
) -> None:
    """Run the loop without people, answering from gold labels, and print accuracy per round."""
    from tuneloop.services.review import loop, projects

    def report(stage: str, numbers: dict) -> None:
        if stage == "round":
            console.print(f"round {numbers['round']}: {numbers['labels']} labels → accuracy "
                          f"{_fmt(numbers['accuracy'])}, macro-F1 {_fmt(numbers['macro_f1'])} "
                          f"({numbers['seconds']:.0f} s)", highlight=False)
        else:
            err_console.print(f"[dim]{stage} {numbers}[/]", highlight=False)

    config = loop.LoopSettings(model=model, order=order, epochs=epochs)
    with open_sessions()() as session:
        found = projects.get_project(session, project)
        with console.status("running the loop"):
            done = loop.run_simulation(session, settings(), found, field=simulate_from, rounds=rounds,
                                       per_round=per_round, config=config, report=report)
    _print_rounds([{"round": r.number, "model": r.model, "labels_used": r.labels_used, "accuracy": r.accuracy,
                    "macro_f1": r.macro_f1, "seconds": r.seconds} for r in done])
    if len(done) > 1 and None not in (done[0].accuracy, done[-1].accuracy):
        console.print(f"accuracy {done[0].accuracy:.3f} → {done[-1].accuracy:.3f} over {len(done)} rounds")

