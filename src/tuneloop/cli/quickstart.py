"""`tuneloop quickstart`: the main job, end to end on the shipped support-ticket dataset.

Today it prepares the base model, checks and imports the data, shows its statistics, splits it,
and asks the base model to route a held-out ticket zero-shot. Fine-tuning and the before/after
evaluation join this command with the training engine.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from rich.panel import Panel

from tuneloop.cli.common import console, handle_errors, settings, stage_progress
from tuneloop.cli.data import _validate_with_progress, print_report
from tuneloop.data.dataset import Source
from tuneloop.data.problems import DataError
from tuneloop.data.split import split_records
from tuneloop.data.stats import compute_stats, plot_stats
from tuneloop.data.versions import store_version
from tuneloop.data.writers import write_records
from tuneloop.models.registry import DEFAULT_CHAT_MODEL


def shipped_dataset() -> Path:
    return Path(str(importlib.resources.files("tuneloop") / "examples" / "support_tickets.jsonl"))


def routing_prompt(labels: list[str], text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You route customer-support requests. Answer with one word: "
             + ", ".join(labels) + "."},
            {"role": "user", "content": text}]


@handle_errors
def quickstart_cmd() -> None:
    """Prepare the model, check/import/split the shipped dataset, and try the base model on it."""
    home = settings().home
    work = home / "quickstart"
    console.print(Panel.fit("tuneloop quickstart: route customer-support tickets with SmolLM2-135M",
                            border_style="cyan"))

    console.rule("1. the base model")
    from tuneloop.models.loading import load_causal_lm

    with stage_progress(f"converting {DEFAULT_CHAT_MODEL}") as on_stage:
        model, tokenizer = load_causal_lm(DEFAULT_CHAT_MODEL, settings(), on_stage=on_stage)
    console.print(f"{DEFAULT_CHAT_MODEL}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
                  f"converted under {home / 'models'}")

    console.rule("2. check and import the data")
    source = Source(shipped_dataset())
    records: list = []
    report = _validate_with_progress(source, tokenizer, 512, collect=records)
    print_report(report, show=3)
    if not report.ok:
        raise DataError(f"the shipped dataset {source.path} failed its checks; please report this")
    fmt = report.format
    stats = compute_stats((r for _, r in records), tokenizer)
    version = store_version(settings().datasets_dir, "support-tickets", fmt, source.path, records, stats.to_dict())
    console.print(f"imported as [bold]{version.id}[/] ({len(records)} examples, {len(stats.labels)} labels)")
    plot = plot_stats(stats, work / "stats.png", title="support tickets")
    console.print(f"token lengths p50 {stats.to_dict()['tokens']['p50']:g}, p95 "
                  f"{stats.to_dict()['tokens']['p95']:g}; plot: {plot}")

    console.rule("3. split")
    splits = split_records(records, {"train": 0.8, "test": 0.2}, seed=0)
    for name, rows in splits.items():
        write_records(rows, work / f"{name}.jsonl", fmt)
        console.print(f"{name}: {len(rows)} examples → {work / f'{name}.jsonl'}")

    console.rule("4. the base model, zero-shot, on a held-out ticket")
    from tuneloop.serve.generation import GenerationConfig, encode_chat, generate

    labels = sorted(stats.labels)
    line, example = splits["test"][0]
    answer = generate(model, tokenizer, encode_chat(tokenizer, routing_prompt(labels, example.text)),
                      GenerationConfig(max_new_tokens=24))
    console.print(f"ticket (line {line}): {example.text}", highlight=False, markup=False)
    console.print(f"expected: [bold]{example.labels[0]}[/]   base model says: [bold]{answer.strip()}[/]",
                  highlight=False)

    console.rule("next")
    console.print(f"chat with the base model:  tuneloop chat {DEFAULT_CHAT_MODEL}\n"
                  f"look at the data:          tuneloop data stats {version.id} --plot stats.png\n"
                  "fine-tuning on the train split and the before/after table arrive with the training engine.")
