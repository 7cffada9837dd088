"""`tuneloop train` and `tuneloop eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tuneloop.cli.common import console, err_console, fail, handle_errors, settings
from tuneloop.config.recipe import RecipeError, load_recipe, parse_recipe

ADAPTERS = "lora, dora, ia3, qlora, full, freeze"


class TrainProgress:
    """A rich progress bar fed by training events: loss, learning rate, tokens/s and ETA."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=err_console)
        self.task = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "start":
            self.progress.start()
            self.task = self.progress.add_task("train", total=event["total_steps"], completed=event["from_step"],
                                               loss="-", lr="-", tps="-")
        elif kind == "resumed" and self.task is not None:
            self.progress.update(self.task, completed=event["step"])
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=event["step"], loss=f"{event['loss']:.4f}",
                                 lr=f"{event['lr']:.2e}", tps=f"{event['tokens_per_second']:.0f}")
        elif kind == "eval":
            self.progress.console.print(f"step {event['step']}: eval_loss {event['eval_loss']:.4f}")
        elif kind == "early_stop":
            self.progress.console.print(f"early stop at step {event['step']}: best {event['metric']} "
                                        f"{event['best']:.4f} ({event['best_checkpoint']})")
        elif kind in {"done", "error"}:
            self.progress.stop()
            if kind == "error":
                err_console.print(f"[bold red]training failed:[/] {event['message']}")


@handle_errors
def train_cmd(
    recipe_file: Annotated[Optional[Path], typer.Argument(help="A recipe YAML (see configs/).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Base model (overrides the recipe).")] = None,
    data: Annotated[Optional[list[str]], typer.Option(help="Training file or dataset version (repeatable).")] = None,
    validation: Annotated[Optional[str], typer.Option(help="Validation file or dataset version.")] = None,
    method: Annotated[Optional[str], typer.Option(help="sft or classify.")] = None,
    adapter: Annotated[Optional[str], typer.Option(help=f"Adapter type: {ADAPTERS}.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the data.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per micro-batch.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Run folder (default $TUNELOOP_HOME/runs/...).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Resume this run folder from its last checkpoint.")] = None,
) -> None:
    """Fine-tune a model. `tuneloop train --data train.jsonl` works with no recipe file."""
    from tuneloop.engine.loop import TrainingError, resume as resume_run, train

    try:
        if resume is not None:
            result = resume_run(resume, settings(), TrainProgress())
        else:
            raw: dict[str, Any] = load_recipe(recipe_file).model_dump(exclude_unset=True) if recipe_file else {}
            overrides = {"model": model, "method": method, "output_dir": str(output) if output else None}
            raw.update({k: v for k, v in overrides.items() if v is not None})
            if data:
                raw.setdefault("data", {})["train"] = data
            if validation:
                raw.setdefault("data", {})["validation"] = validation
            if adapter:
                raw.setdefault("adapter", {})["type"] = adapter
            hp = {"max_steps": max_steps, "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size}
            raw.setdefault("hyperparameters", {}).update({k: v for k, v in hp.items() if v is not None})
            recipe = parse_recipe(raw)
            if not recipe.data.train:
                fail("no training data: pass --data FILE or give data.train in the recipe")
            result = train(recipe, settings(), listener=TrainProgress())
    except (RecipeError, TrainingError) as e:
        fail(str(e), 1)
    console.print(f"[green]✓[/] {result.steps} steps in {result.seconds:.0f}s "
                  f"({result.tokens_per_second:.0f} tokens/s); final loss {result.losses[-1]:.4f}\n"
                  f"run: {result.run_dir}\nmodel: {result.final_dir}\n"
                  f"try it: tuneloop chat {result.run_dir}", highlight=False)


@handle_errors
def eval_cmd(
    model: Annotated[str, typer.Argument(help="A model name/folder or a run folder.")],
    data: Annotated[Path, typer.Option(help="Labelled test data (text + label).")],
    plot: Annotated[Optional[Path], typer.Option(help="Write the confusion matrix as a PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Evaluate a classifier: accuracy, macro-F1, per-label precision/recall, confusion matrix."""
    from tuneloop.data.dataset import Source, load_records
    from tuneloop.data.records import LabelledRecord
    from tuneloop.evals.metrics import format_confusion, plot_confusion
    from tuneloop.models.loading import find_run_output

    _, records = load_records(Source(data))
    if not all(isinstance(r, LabelledRecord) for _, r in records):
        fail(f"{data}: evaluation needs labelled data (text + label)")
    run_output = find_run_output(model)
    labels = None
    if run_output is not None:
        labels = json.loads((run_output / "run.json").read_text()).get("label_set")
    labels = labels or sorted({label for _, r in records for label in r.labels})
    report = evaluate_with_progress(model, [r.text for _, r in records], [r.labels[0] for _, r in records], labels)
    if plot:
        plot_confusion(report, plot)
    if run_output is not None:
        (run_output.parent / "eval.json").write_text(json.dumps({"data": str(data), **report.to_dict()}, indent=1))
    if as_json:
        console.print_json(data=report.to_dict())
        return
    print_classification(report)
    console.print(format_confusion(report), highlight=False, markup=False)


def evaluate_with_progress(model_ref: str, texts: list[str], gold: list[str], labels: list[str]):
    from tuneloop.evals.classify import evaluate_classification
    from tuneloop.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(model_ref, settings())
    with Progress(TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task("eval", total=len(texts))
        return evaluate_classification(model, tokenizer, texts, gold, labels,
                                       on_progress=lambda n: progress.advance(task, n))


def print_classification(report) -> None:
    table = Table(title=f"accuracy {report.accuracy:.3f}   macro-F1 {report.macro_f1:.3f}   (n={report.n})")
    for col in ("label", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, m in report.per_label.items():
        table.add_row(label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(int(m["support"])))
    console.print(table)
