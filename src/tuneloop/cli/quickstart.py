"""`tuneloop quickstart`: the main job, end to end on the shipped support-ticket dataset.

Prepare the base model; check, import and split the data; evaluate the base model zero-shot and
5-shot; fine-tune it with LoRA; evaluate again; print a before/after table.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from rich.panel import Panel
from rich.table import Table

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


@handle_errors
def quickstart_cmd() -> None:
    """The main job: base model zero-shot → LoRA fine-tune → evaluate again, on support tickets."""
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

    console.rule("4. the base model, zero-shot, on the test split")
    from tuneloop.cli.train import TrainProgress, evaluate_with_progress, print_classification
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.engine.loop import train

    from tuneloop.config.prompts import PromptConfig
    from tuneloop.engine.tokenize import classification_messages
    from tuneloop.evals.classify import LabelItems
    from tuneloop.evals.prompting import choose_shots, shot_pool, with_shots

    labels = sorted(stats.labels)
    texts = [r.text for _, r in splits["test"]]
    gold = [r.labels[0] for _, r in splits["test"]]
    del model  # the evaluation and training below load their own copies
    before = evaluate_with_progress(DEFAULT_CHAT_MODEL, LabelItems(texts, gold), labels)
    print_classification(before)

    console.rule("4b. the base model, 5-shot: five training tickets with their teams before each test ticket")
    shots = choose_shots(PromptConfig(k=5), shot_pool([r for _, r in splits["train"]]), texts)
    prompts = [with_shots(classification_messages(t, labels), s) for t, s in zip(texts, shots)]
    few_shot = evaluate_with_progress(DEFAULT_CHAT_MODEL, LabelItems(texts, gold, prompts), labels)
    print_classification(few_shot)

    console.rule("5. fine-tune with LoRA on the train split")
    recipe = parse_recipe({"model": DEFAULT_CHAT_MODEL, "method": "classify",
                           "data": {"train": str(work / "train.jsonl")},
                           "hyperparameters": {"epochs": 1, "batch_size": 8, "learning_rate": 5e-4,
                                               "max_length": 256},
                           "checkpoints": {"each_epoch": True, "keep_last": 1}, "seed": 0})
    result = train(recipe, settings(), listener=TrainProgress())

    console.rule("6. the fine-tuned model on the same test split")
    after = evaluate_with_progress(str(result.run_dir), LabelItems(texts, gold), labels)
    print_classification(after)

    table = Table(title="before / after (test split, label likelihood)")
    for col in ("", "accuracy", "macro-F1", "training time", "tokens/s"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("base (zero-shot)", f"{before.accuracy:.3f}", f"{before.macro_f1:.3f}", "-", "-")
    table.add_row("base (5-shot)", f"{few_shot.accuracy:.3f}", f"{few_shot.macro_f1:.3f}", "-", "-")
    table.add_row("fine-tuned (LoRA)", f"{after.accuracy:.3f}", f"{after.macro_f1:.3f}",
                  f"{result.seconds:.0f}s", f"{result.tokens_per_second:.0f}")
    console.print(table)

    console.rule("next")
    console.print(f"run folder:                {result.run_dir}\n"
                  f"chat with it:              tuneloop chat {result.run_dir}\n"
                  f"evaluate it again:         tuneloop eval {result.run_dir} --data {work / 'test.jsonl'} "
                  "--plot confusion.png\n"
                  f"compare with intervals:    tuneloop compare {DEFAULT_CHAT_MODEL} 5-shot {result.run_dir} "
                  f"--data {work / 'test.jsonl'}\n"
                  f"look at the data:          tuneloop data stats {version.id} --plot stats.png\n"
                  f"serve it:                  tuneloop serve, then any OpenAI client with model=\"{result.run_dir}\"")
