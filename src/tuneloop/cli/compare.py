"""`tuneloop compare`: models, fine-tunes and prompt baselines on one test set, with intervals and paired tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneloop.cli.common import console, err_console, handle_errors, settings

SHOWN_DISAGREEMENTS = 5


@handle_errors
def compare_cmd(
    candidates: Annotated[list[str], typer.Argument(help="Models to compare, the first being the one the others are "
                                                         "tested against: a model name or folder, a run folder, a "
                                                         "checkpoint, or a prompt baseline (zero-shot, 5-shot, or a "
                                                         "YAML prompt config).")],
    data: Annotated[str, typer.Option(help="Test data: a file or a dataset version.")],
    task: Annotated[str, typer.Option(help="auto, classification or sft (auto reads the data, as tuneloop eval "
                                           "does).")] = "auto",
    train: Annotated[Optional[str], typer.Option(help="Where k-shot baselines take their examples (default: the "
                                                      "first fine-tune's training data).")] = None,
    base: Annotated[Optional[str], typer.Option(help="The model prompt baselines prompt (default: the first "
                                                     "fine-tune's base, else the embedded chat model).")] = None,
    max_generate: Annotated[int, typer.Option(help="Conversations: answer this many by greedy generation for exact "
                                                   "match and ROUGE-L.")] = 50,
    max_new_tokens: Annotated[int, typer.Option(help="Conversations: tokens per generated answer, at most.")] = 128,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals and paired tests.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap (and of random k-shot examples).")] = 0,
    latency_samples: Annotated[int, typer.Option(help="Single-item requests timed per candidate.")] = 10,
    plot: Annotated[Optional[Path], typer.Option(help="Also copy the PNG of the table here.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="The folder to write (default: <home>/comparisons/cmp-TIME)."
                                                   )] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print comparison.json.")] = False,
) -> None:
    """One table: each candidate's metrics with 95% bootstrap intervals, a paired test against the first candidate
    (McNemar for accuracy, a paired bootstrap otherwise), latency and tokens per second, and a PNG plot. Prompt
    baselines are candidates too, so the table answers "was fine-tuning worth it?"."""
    from tuneloop.services.comparisons import run_comparison

    if resamples < 100:
        raise typer.BadParameter("at least 100", param_hint="--resamples")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:

        def on_stage(description: str, total: int):
            task_id = progress.add_task(description, total=total)
            return lambda n: progress.advance(task_id, n)

        result = run_comparison(settings(), candidates, data, task=task, train=train, base=base,
                                max_generate=max_generate, max_new_tokens=max_new_tokens, resamples=resamples,
                                seed=seed, latency_samples=latency_samples, output=output, on_stage=on_stage)
    folder = Path(result["folder"])
    if plot:
        plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "comparison.png", plot)
    if as_json:
        console.print_json(data=result)
        return
    print_comparison(result)
    show_disagreements(folder / "items.jsonl", result)
    console.print(f"results: {folder}/comparison.json, every item in items.jsonl, plot comparison.png",
                  highlight=False)


def _interval(m: dict[str, float] | None) -> str:
    return "–" if m is None else f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def _versus(v: dict[str, Any] | None) -> str:
    if v is None:
        return ""
    return f"{v['delta']:+.3f} p={v['p_value']:.3g}"


def print_comparison(result: dict[str, Any]) -> None:
    rows = result["rows"]
    metrics = list(dict.fromkeys(m for row in rows for m in row["metrics"]))
    console.print(f"task: {result['task']} ({result['task_source']}); scored by {result['scored_by']}",
                  highlight=False)
    table = Table(title=f"{result['data']}: {result['n']} items, 95% bootstrap intervals ({result['resamples']} "
                        f"resamples); vs {rows[0]['candidate']}: "
                        + ("McNemar for accuracy, paired bootstrap otherwise" if result["task"] == "classification"
                           else "paired bootstrap"))
    table.add_column("candidate")
    for name in metrics:
        table.add_column(name.replace("_", " ") + (" ↓" if name == "loss" else ""), justify="right")
        table.add_column(f"Δ {name.replace('_', ' ')}", justify="right")
    table.add_column("latency p50 ms", justify="right")
    table.add_column("tokens/s", justify="right")
    for row in rows:
        cells = [row["candidate"]]
        for name in metrics:
            cells += [_interval(row["metrics"].get(name)), _versus(row["vs_first"].get(name))]
        cells.append("–" if row["latency_ms_p50"] is None else f"{row['latency_ms_p50']:.0f}")
        cells.append("–" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:.0f}")
        table.add_row(*cells)
    console.print(table)


def show_disagreements(items_path: Path, result: dict[str, Any]) -> None:
    if len(result["rows"]) < 2:
        return
    if not result["disagreements"]:
        console.print("the candidates gave the same answer on every item", highlight=False)
        return
    table = Table(title=f"{result['disagreements']} items where the candidates disagree (the first "
                        f"{SHOWN_DISAGREEMENTS}; all in items.jsonl, \"disagree\": true)")
    table.add_column("#", justify="right")
    table.add_column("input", max_width=48, overflow="ellipsis", no_wrap=True)
    table.add_column("reference")
    names = [row["candidate"] for row in result["rows"]]
    for name in names:
        table.add_column(name, max_width=24, overflow="ellipsis")
    shown = 0
    with items_path.open(encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            if not item["disagree"]:
                continue
            table.add_row(str(item["index"] + 1), item["input"], item["reference"],
                          *[str(item["answers"].get(n) or "–") for n in names])
            shown += 1
            if shown == SHOWN_DISAGREEMENTS:
                break
    console.print(table)
