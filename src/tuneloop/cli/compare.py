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
    base: Annotated[Optional[str], typer.Option(help="The model prompt baselines prompt (default: the first chat "
                                                     "model among the fine-tunes' bases and the model candidates, "
                                                     "else the embedded chat model).")] = None,
    max_generate: Annotated[int, typer.Option(help="Conversations: answer this many by greedy generation for exact "
                                                   "match and ROUGE-L.")] = 50,
    max_new_tokens: Annotated[int, typer.Option(help="Conversations: tokens per generated answer, at most.")] = 128,
    max_length: Annotated[int, typer.Option(help="Conversations: tokens of a conversation scored for its loss "
                                                 "(longer ones are cut from the end).")] = 1024,
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
                                max_generate=max_generate, max_new_tokens=max_new_tokens, max_length=max_length,
                                resamples=resamples,
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


def _p(value: float, resamples: int) -> str:
    """A p-value; a bootstrap's 0 means below 2 / resamples (the p-value doubles the smaller tail's share)."""
    return f"<{2 / resamples:.0e}" if value == 0 else f"{value:.3g}"


def print_comparison(result: dict[str, Any]) -> None:
    """One table per metric (value, interval, difference from the first candidate and its p-value), then speed:
    narrow enough for an 80-column terminal."""
    rows = result["rows"]
    metrics = list(dict.fromkeys(m for row in rows for m in row["metrics"]))
    first = rows[0]["candidate"]
    console.print(f"task: {result['task']} ({result['task_source']}); scored by {result['scored_by']}; "
                  f"{result['n']} items of {result['data']}; 95% bootstrap intervals ({result['resamples']} "
                  f"resamples); each candidate against {first}", highlight=False)
    for name in metrics:
        test = "McNemar" if name == "accuracy" and result["task"] == "classification" else "paired bootstrap"
        table = Table(title=name.replace("_", " ") + (" (lower is better)" if name == "loss" else "")
                      + f"; Δ and p against {first} ({test})", title_justify="left")
        for col in ("candidate", "value", "95% interval", "Δ", "Δ 95% interval", "p"):
            table.add_column(col, justify="left" if col == "candidate" else "right")
        for row in rows:
            m, v = row["metrics"].get(name), row["vs_first"].get(name)
            table.add_row(row["candidate"], "–" if m is None else f"{m['value']:.3f}",
                          "" if m is None else f"{m['low']:.3f}–{m['high']:.3f}",
                          "" if v is None else f"{v['delta']:+.3f}",
                          "" if v is None else f"{v['low']:+.3f}–{v['high']:+.3f}",
                          "" if v is None else _p(v["p_value"], result["resamples"]))
        console.print(table)
    speed = Table(title="speed", title_justify="left")
    for col in ("candidate", "latency p50 ms", "p90 ms", "tokens/s", "scoring s"):
        speed.add_column(col, justify="left" if col == "candidate" else "right")
    for row in rows:
        speed.add_row(row["candidate"], "–" if row["latency_ms_p50"] is None else f"{row['latency_ms_p50']:.0f}",
                      "–" if row["latency_ms_p90"] is None else f"{row['latency_ms_p90']:.0f}",
                      "–" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:.0f}", f"{row['seconds']:.1f}")
    console.print(speed)


def show_disagreements(items_path: Path, result: dict[str, Any]) -> None:
    """The first few items where the candidates answered differently, each candidate's answer on its own line."""
    if len(result["rows"]) < 2:
        return
    if not result["disagreements"]:
        console.print("the candidates gave the same answer on every item", highlight=False)
        return
    console.print(f"\n{result['disagreements']} items where the candidates disagree; the first {SHOWN_DISAGREEMENTS} "
                  "(all in items.jsonl, \"disagree\": true):", highlight=False)
    names = [row["candidate"] for row in result["rows"]]
    width = max(len(n) for n in [*names, "reference"])
    shown = 0
    with items_path.open(encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            if not item["disagree"]:
                continue
            text = " ".join(item["input"].split())
            console.print(f"#{item['index'] + 1}: {text[:200]}{'…' if len(text) > 200 else ''}", highlight=False,
                          markup=False)
            console.print(f"  {'reference':<{width}}  {item['reference']}", highlight=False, markup=False)
            for name in names:
                answer = " ".join(str(item["answers"].get(name) or "–").split())
                console.print(f"  {name:<{width}}  {answer[:160]}", highlight=False, markup=False)
            shown += 1
            if shown == SHOWN_DISAGREEMENTS:
                break
