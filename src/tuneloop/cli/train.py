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
from tuneloop.models.run_folder import (Done, EarlyStop, Error, Evaluation, Event, Resumed, RunFolder, RunMeta, Start,
                                        Step)

ADAPTERS = "lora, dora, ia3, qlora, full, freeze"


class TrainProgress:
    """A rich progress bar fed by training events: loss (and reward, for RL), learning rate, tokens/s and ETA."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}{task.fields[reward]}  lr {task.fields[lr]}  "
                                            "{task.fields[tps]} tok/s"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=err_console)
        self.task = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Start):
            if event.hyperparameters:
                err_console.print(describe_hyperparameters(event), highlight=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=event.total_steps, completed=event.from_step,
                                               loss="-", reward="", lr="-", tps="-")
        elif isinstance(event, Resumed) and self.task is not None:
            self.progress.update(self.task, completed=event.step)
        elif isinstance(event, Step) and self.task is not None:
            reward = event.extra.get("reward")  # an RL method's mean reward of the step's rollouts
            self.progress.update(self.task, completed=event.step, loss=f"{event.loss:.4f}",
                                 reward=f"  reward {reward:.3f}" if isinstance(reward, (int, float)) else "",
                                 lr=f"{event.lr:.2e}", tps=f"{event.tokens_per_second:.0f}")
        elif isinstance(event, Evaluation):
            metrics = "  ".join(f"{k} {v:.4f}" if k.endswith("loss") else f"{k} {v:.3f}"
                                for k, v in event.metrics.items())
            self.progress.console.print(f"step {event.step}: {metrics}")
        elif isinstance(event, EarlyStop):
            self.progress.console.print(f"early stop at step {event.step}: best {event.metric} "
                                        f"{event.best:.4f} ({event.best_checkpoint})")
        elif isinstance(event, (Done, Error)):
            self.progress.stop()  # an error is printed once, as the command exits with it


SHOWN = ("epochs", "max_steps", "learning_rate", "head_learning_rate", "warmup_ratio", "batch_size",
         "gradient_accumulation", "max_length", "scheduler")


def describe_hyperparameters(start: Start) -> str:
    """The effective hyperparameters of a run's start event; those the method chose are marked, with why."""
    hp, chosen = start.hyperparameters or {}, start.method_defaults or {}
    parts = [f"{name} {hp[name]:g}" if isinstance(hp[name], float) else f"{name} {hp[name]}"
             for name in SHOWN if hp.get(name) is not None and not (name == "epochs" and hp.get("max_steps"))]
    parts = [part + ("*" if part.split()[0] in chosen else "") for part in parts]
    lines = [f"[bold]{start.method or 'train'}[/] on {start.train_examples} examples: " + ", ".join(parts)]
    if chosen:
        lines.append("  * the method's default: " + "; ".join(f"{k}: {why}" for k, why in chosen.items()))
    return "\n".join(lines)


@handle_errors
def train_cmd(
    recipe_file: Annotated[Optional[Path], typer.Argument(help="A recipe YAML (see configs/).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Base model (overrides the recipe).")] = None,
    data: Annotated[Optional[list[str]], typer.Option(help="Training file or dataset version (repeatable).")] = None,
    validation: Annotated[Optional[str], typer.Option(help="Validation file or dataset version.")] = None,
    method: Annotated[Optional[str], typer.Option(help="sft, classify, token_classify (span data), or on "
                                                       "preference pairs dpo, orpo or reward (a reward model).")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="With classify: head, generative or auto.")] = None,
    adapter: Annotated[Optional[str], typer.Option(help=f"Adapter type: {ADAPTERS}.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the data.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per micro-batch.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Run folder (default $TUNELOOP_HOME/runs/...).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Resume this run folder from its last checkpoint.")] = None,
) -> None:
    """Fine-tune a model. `tuneloop train --data train.jsonl` works with no recipe file."""
    import tuneloop.evals.rl  # noqa: F401 - registers grpo's reward sources (graders, reward models, functions)
    from tuneloop.engine.loop import TrainingError, resume as resume_run, train

    try:
        if resume is not None:
            result = resume_run(resume, settings(), TrainProgress())
        else:
            raw: dict[str, Any] = load_recipe(recipe_file).model_dump(exclude_unset=True) if recipe_file else {}
            overrides = {"model": model, "method": method, "classifier": classifier, "output_dir": str(output) if output else None}
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
    meta = RunMeta.read(result.final_dir)
    try_it = (f"tuneloop eval {result.run_dir} --data TEST.jsonl" if meta.has_head or meta.has_token_head
              else f"tuneloop chat {result.run_dir}")
    console.print(f"[green]✓[/] {result.steps} steps in {result.seconds:.0f}s "
                  f"({result.tokens_per_second:.0f} tokens/s); final loss {result.losses[-1]:.4f}\n"
                  f"run: {result.run_dir}\nmodel: {result.final_dir}\n"
                  f"try it: {try_it}", highlight=False)


@handle_errors
def eval_cmd(
    model: Annotated[str, typer.Argument(help="A model name/folder or a run folder.")],
    data: Annotated[str, typer.Option(help="Test data: a file or a dataset version.")],
    plot: Annotated[Optional[Path], typer.Option(help="Classification: write the confusion matrix as a PNG.")] = None,
    max_generate: Annotated[int, typer.Option(help="SFT: answer this many conversations by greedy generation "
                                                   "for exact match and ROUGE-L (0: none, -1: all).")] = 100,
    max_length: Annotated[int, typer.Option(help="Tokens per example (longer ones are truncated).")] = 1024,
    output: Annotated[Optional[Path], typer.Option(help="Write the results JSON here (default: beside the run, "
                                                        "as eval-<data>.json).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    task: Annotated[str, typer.Option(help="auto, classification, sft, spans or preference. auto reads the data: "
                                           "a chat file whose answers all come from a small label set is "
                                           "classification.")] = "auto",
) -> None:
    """Evaluate a model. Labelled data, or conversations whose answers are all labels from a small set:
    accuracy, macro-F1, per-label precision/recall, confusion matrix, from each label's likelihood on every row.
    Span data (a token classifier): entity-level precision, recall and F1, per label.
    Conversations: loss, perplexity, token accuracy, exact match and ROUGE-L of greedy answers.
    Preference pairs: how often the chosen answer scores above the rejected one (a reward model's score, or a DPO
    model's implicit reward against its adapter switched off), and the mean margin."""
    from tuneloop.config.recipe import DataSource
    from tuneloop.data.tasks import choose_task
    from tuneloop.engine.data import load_source
    from tuneloop.evals.classify import label_items
    from tuneloop.evals.metrics import format_confusion, plot_confusion
    from tuneloop.models.loading import find_run_output, model_kind, run_meta

    records = load_source(DataSource(path=data), settings().datasets_dir)
    if not records:
        fail(f"--data {data}: no records")
    try:
        choice = choose_task(records, task)
    except ValueError as e:
        fail(f"--task: {e}")
    run_output = find_run_output(model)
    kind = model_kind(model, settings())
    labelled = choice.task == "classification"
    spans = choice.task == "spans"
    pairs = choice.task == "preference"
    if kind == "reward" and not pairs:
        fail(f"{model} is a reward model: evaluate it on preference pairs (prompt, chosen, rejected)")
    if pairs and kind in {"classifier", "token-classifier", "encoder"}:
        fail(f"--data {data} holds preference pairs: evaluate a reward model or a model trained on pairs on it")
    if kind == "classifier" and not labelled:
        fail(f"{model} is a classifier: evaluate it on labelled data (text + label)")
    if (kind == "token-classifier") != spans:
        fail(f"{model} is a token classifier: evaluate it on span data (text + spans)" if not spans else
             f"--data {data} is span data: evaluate a token classifier on it (tuneloop train --method token_classify)")
    if pairs:
        preference = evaluate_pairs_with_progress(model, kind, records, max_length)
        result = {"task": "preference", **preference.to_dict()}
    elif spans:
        entity = evaluate_spans_with_progress(model, records, max_length)
        result = {"task": "spans", **entity.to_dict()}
    elif labelled:
        labels = run_meta(run_output).label_set if run_output is not None else None
        items = label_items(records)
        labels = labels or choice.labels
        report = evaluate_with_progress(model, items, labels)
        scored_by = (f"the classification head over all {report.n} rows" if kind in {"classifier", "encoder"} else
                     f"label likelihood over all {report.n} rows")
        result = {"task": "classification", "task_source": choice.reason, "scored_by": scored_by, **report.to_dict()}
        if plot:
            plot_confusion(report, plot)
    else:
        sft = evaluate_sft_with_progress(model, records, max_length, None if max_generate < 0 else max_generate)
        generated = f"; exact match and ROUGE-L on the first {sft.generated} greedy answers" if sft.generated else ""
        result = {"task": "sft", "task_source": choice.reason,
                  "scored_by": f"teacher-forced loss over all {sft.n} rows{generated}", **sft.to_dict()}
    result = {"model": model, "data": data, **result}
    target = output or (RunFolder(run_output.parent).evaluation(Path(data).stem) if run_output is not None else None)
    if target is not None:
        target.write_text(json.dumps(result, indent=1))
    if as_json:
        console.print_json(data=result)
        return
    if pairs:
        console.print(f"{preference.pairs} pairs: chosen above rejected {preference.accuracy:.3f}, mean margin "
                      f"{preference.margin:.4f} ({preference.scored_by})", highlight=False)
    elif spans:
        print_entities(entity)
    elif labelled:
        console.print(f"task: classification ({choice.reason}); scored by {scored_by}", highlight=False)
        print_classification(report)
        console.print(format_confusion(report), highlight=False, markup=False)
    else:
        console.print(f"task: sft ({choice.reason}); scored by {result['scored_by']}", highlight=False)
        print_sft(sft)
    if target is not None:
        console.print(f"results: {target}", highlight=False)


@handle_errors
def export_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder.")],
    out: Annotated[Path, typer.Argument(help="The folder to write (must be new or empty).")],
    merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter into the base: a standalone "
                                                        "transformers model folder.")] = False,
) -> None:
    """Export a fine-tuned model: the adapter alone, or with --merge a standalone model folder."""
    from tuneloop.engine.export import export_run

    with err_console.status("merging the adapter into the base model" if merge else "copying the adapter"):
        folder = export_run(run, out, settings(), merge=merge)
    meta = json.loads((folder / "tuneloop-export.json").read_text())
    if merge:
        loader = {"head": "AutoModelForSequenceClassification", "reward": "AutoModelForSequenceClassification",
                  "token": "AutoModelForTokenClassification"}.get(
            meta["classifier"], "AutoModelForCausalLM")
        console.print(f"[green]✓[/] standalone model in {folder}\nload it: {loader}.from_pretrained('{folder}')",
                      highlight=False)
    else:
        console.print(f"[green]✓[/] adapter in {folder} (base: {meta['base_model']})\n"
                      f"use it: tuneloop chat {folder}, or PeftModel.from_pretrained(base, '{folder}')", highlight=False)


def evaluate_with_progress(model_ref: str, items, labels: list[str]):
    from tuneloop.evals.classify import evaluate_classification
    from tuneloop.models.loading import load_model

    model, tokenizer = load_model(model_ref, settings())
    with Progress(TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task("eval", total=len(items.texts))
        return evaluate_classification(model, tokenizer, items.texts, items.gold, labels,
                                       on_progress=lambda n: progress.advance(task, n), prompts=items.prompts)


def evaluate_spans_with_progress(model_ref: str, records: list, max_length: int):
    from tuneloop.evals.spans import evaluate_spans
    from tuneloop.models.loading import load_model

    model, tokenizer = load_model(model_ref, settings())
    with err_console.status(f"finding spans in {len(records)} texts"):
        return evaluate_spans(model, tokenizer, [r.text for r in records], [r.spans for r in records], max_length)


def evaluate_pairs_with_progress(model_ref: str, kind: str, records: list, max_length: int):
    from tuneloop.evals.preference import implicit_reward_pairs, reward_model_pairs
    from tuneloop.evals.rewards import RewardScorer
    from tuneloop.models.loading import find_run_output, load_causal_lm, run_meta

    with Progress(TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task("eval", total=len(records))
        if kind == "reward":
            return reward_model_pairs(RewardScorer.load(model_ref, settings()), records,
                                      on_progress=lambda n: progress.advance(task, n))
        final = find_run_output(model_ref)
        preference = (run_meta(final).extra.get("preference") or {}) if final is not None else {}
        model, tokenizer = load_causal_lm(model_ref, settings())
        return implicit_reward_pairs(model, tokenizer, records, preference.get("beta", 0.1), max_length,
                                     average=preference.get("method") == "orpo",
                                     on_progress=lambda n: progress.advance(task, n))


def print_entities(report) -> None:
    table = Table(title=f"entity F1 {report.f1:.3f}   precision {report.precision:.3f}   recall {report.recall:.3f}"
                        f"   ({report.entities} entities)")
    for col in ("label", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, m in report.per_label.items():
        table.add_row(label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(table)


def evaluate_sft_with_progress(model_ref: str, records: list, max_length: int, max_generate: int | None):
    from tuneloop.evals.sft import evaluate_sft
    from tuneloop.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(model_ref, settings())
    generated = len(records) if max_generate is None else min(max_generate, len(records))
    with Progress(TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task("eval", total=len(records) + generated)
        return evaluate_sft(model, tokenizer, records, max_length, max_generate,
                            on_progress=lambda n: progress.advance(task, n))


def print_sft(report) -> None:
    table = Table(title=f"n={report.n} conversations, {report.tokens} answer tokens")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("loss", f"{report.loss:.4f}")
    table.add_row("perplexity", f"{report.perplexity:.3f}")
    table.add_row("token accuracy", f"{report.token_accuracy:.3f}")
    if report.generated:
        table.add_row(f"exact match ({report.generated} generated)", f"{report.exact_match:.3f}")
        table.add_row(f"ROUGE-L ({report.generated} generated)", f"{report.rouge_l:.3f}")
    console.print(table)


def print_classification(report) -> None:
    table = Table(title=f"accuracy {report.accuracy:.3f}   macro-F1 {report.macro_f1:.3f}   (n={report.n})")
    for col in ("label", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, m in report.per_label.items():
        table.add_row(label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(int(m["support"])))
    console.print(table)
