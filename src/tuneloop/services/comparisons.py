"""Compare models, fine-tunes and prompt baselines on one test set (`tuneloop compare`): load each candidate in turn,
score it on every item (evals/compare.py), time single requests, and write the comparison folder:

    <home>/comparisons/cmp-<time>/comparison.json   the table: metrics with intervals, paired tests, speed
                                  items.jsonl       every item with each candidate's answer, and whether they disagree
                                  comparison.png    the table as a plot
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.config.prompts import PromptConfig, is_prompt_candidate, parse_prompt_candidate
from tuneloop.config.recipe import DataSource, RecipeError, load_recipe
from tuneloop.config.settings import Settings
from tuneloop.data.records import LabelledRecord, Record
from tuneloop.data.tasks import TaskChoice, choose_task
from tuneloop.engine.data import load_recipe_records, load_source
from tuneloop.engine.tokenize import classification_messages
from tuneloop.evals import compare as scoring
from tuneloop.evals.classify import chat_prompt_ids, has_head, label_items, predict_labels
from tuneloop.evals.prompting import Shot, choose_shots, shot_pool, with_shots
from tuneloop.evals.sft import last_user_text, prompt_and_reference, teacher_forced_items
from tuneloop.models.generation import GenerationOptions, complete, complete_batch
from tuneloop.models.loading import find_run_output, load_model, model_kind, run_meta
from tuneloop.models.registry import DEFAULT_CHAT_MODEL

Stage = Callable[[str, int], Callable[[int], None]]
"""on_stage(description, total) -> advance(n): how a caller shows progress."""


@dataclass
class Candidate:
    name: str
    kind: str
    """'model', 'run' or 'prompt'."""
    ref: str
    prompt: PromptConfig | None = None


class CompareError(ValueError):
    """A candidate, the data or an option is wrong; the message names which."""


def resolve_candidates(texts: Sequence[str], settings: Settings, base: str | None = None) -> list[Candidate]:
    """Each CANDIDATE argument as what it names. A prompt baseline's model: its own `model`, else `base`, else the
    first chat model among the fine-tunes' bases and then the model candidates, else the embedded chat model."""
    if not texts:
        raise CompareError("name at least one candidate")
    found: list[Candidate] = []
    for text in texts:
        if is_prompt_candidate(text):
            try:
                config = parse_prompt_candidate(text)
            except RecipeError as e:
                raise CompareError(str(e)) from None
            found.append(Candidate(config.label, "prompt", config.model or "", config))
            continue
        final = find_run_output(text)
        if final is not None:
            found.append(Candidate(_run_name(Path(text), final), "run", text))
            continue
        try:
            model_kind(text, settings)
        except (ValueError, KeyError) as e:
            raise CompareError(f"candidate '{text}': {e}") from None
        found.append(Candidate(Path(text).name if Path(text).exists() else text, "model", text))
    bases = [run_meta(find_run_output(c.ref)).base_model for c in found if c.kind == "run"] + \
        [c.ref for c in found if c.kind == "model"]
    default_base = base or next((b for b in bases if _chats(b, settings)), DEFAULT_CHAT_MODEL)
    for c in found:
        if c.kind == "prompt" and not c.ref:
            c.ref = default_base
    seen: dict[str, int] = {}
    for c in found:
        seen[c.name] = seen.get(c.name, 0) + 1
        if seen[c.name] > 1:
            c.name = f"{c.name} ({seen[c.name]})"
    return found


def _chats(ref: str, settings: Settings) -> bool:
    """Whether a model can be prompted (a prompt baseline's base): not an encoder or a head."""
    try:
        return model_kind(ref, settings) in ("chat", "causal")
    except (ValueError, KeyError):
        return False


def _run_name(given: Path, final: Path) -> str:
    """A run folder's name, or run/checkpoint-N for a checkpoint."""
    if given.name == "final" or final == given:
        return final.parent.name
    if final.parent.name == "checkpoints" or "checkpoint" in given.name:
        return f"{given.parents[0].name}/{given.name}" if given.parent.name != "checkpoints" else \
            f"{given.parents[1].name}/{given.name}"
    return given.name


def shot_examples(candidates: Sequence[Candidate], train: str | None, settings: Settings) -> list[Shot]:
    """The pool k-shot baselines draw from: --train, else the first fine-tune's training data."""
    if not any(c.prompt and c.prompt.k for c in candidates):
        return []
    if train is not None:
        return shot_pool(load_source(DataSource(path=train), settings.datasets_dir))
    for c in candidates:
        if c.kind == "run":
            recipe_path = find_run_output(c.ref).parent / "recipe.yaml"  # type: ignore[union-attr]
            if recipe_path.exists():   # the run's own training split (its validation records left out)
                return shot_pool(load_recipe_records(load_recipe(recipe_path), settings.datasets_dir).train)
    raise CompareError("a k-shot baseline needs training examples: pass --train FILE (or compare it with a "
                       "fine-tune, whose training data it then uses)")


def run_comparison(settings: Settings, candidate_texts: Sequence[str], data: str, task: str = "auto",
                   train: str | None = None, base: str | None = None, max_generate: int = 50,
                   max_new_tokens: int = 128, max_length: int = 1024, resamples: int = 2000, seed: int = 0,
                   latency_samples: int = 10, output: Path | None = None,
                   on_stage: Stage | None = None) -> dict[str, Any]:
    """Score every candidate, write the comparison folder, and return comparison.json's content."""
    candidates = resolve_candidates(candidate_texts, settings, base)
    records = load_source(DataSource(path=data), settings.datasets_dir)
    if not records:
        raise CompareError(f"--data {data}: no records")
    try:
        choice = choose_task(records, task)
    except ValueError as e:
        raise CompareError(f"--task: {e}") from None
    if choice.task not in scoring.METRICS:
        raise CompareError(f"--data {data}: {choice.task} data; compare scores classification and conversations "
                           f"(use tuneloop eval for {choice.task})")
    pool = shot_examples(candidates, train, settings)
    progress = on_stage or (lambda _name, _total: (lambda _n: None))
    outcomes, gold = [], []
    for candidate in candidates:
        if choice.task == "classification":
            outcome, gold = _score_classification(settings, candidate, records, choice, pool, latency_samples, progress)
        else:
            outcome, gold = _score_conversations(settings, candidate, records, pool, max_generate, max_new_tokens,
                                                 max_length, latency_samples, progress)
        outcomes.append(outcome)
        gc.collect()
    rows = scoring.comparison_rows(choice.task, outcomes, gold, choice.labels, resamples, seed)
    folder = output or settings.home / "comparisons" / f"cmp-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    differ = scoring.disagreements(choice.task, outcomes, gold)
    result = {"id": folder.name, "task": choice.task, "task_source": choice.reason, "data": data, "n": len(gold),
              "labels": choice.labels, "resamples": resamples, "seed": seed,
              "scored_by": _scored_by(choice.task, len(gold), max_generate), "disagreements": len(differ),
              "candidates": [{"name": c.name, "kind": c.kind, "ref": c.ref,
                              "prompt": c.prompt.model_dump() if c.prompt else None} for c in candidates],
              "rows": rows, "folder": str(folder)}
    _write_items(folder / "items.jsonl", choice.task, records, outcomes, gold, set(differ))
    scoring.plot_comparison(rows, folder / "comparison.png", f"{Path(data).name}: {len(gold)} items, 95% intervals")
    (folder / "comparison.json").write_text(json.dumps(result, indent=1))  # last: readers take it as "done"
    return result


def _scored_by(task: str, n: int, max_generate: int) -> str:
    if task == "classification":
        return f"label likelihood (or a head's probabilities) over all {n} rows"
    return f"teacher-forced loss over all {n} rows; exact match and ROUGE-L on the first {min(n, max_generate)} " \
           "greedy answers"


def _load(settings: Settings, candidate: Candidate, progress: Stage) -> tuple[Any, Any]:
    done = progress(f"{candidate.name}: loading", 1)
    model, tokenizer = load_model(candidate.ref, settings)
    model.eval()
    done(1)
    return model, tokenizer


def _shots_for(candidate: Candidate, pool: list[Shot], texts: list[str], settings: Settings) -> list[list[Shot]]:
    if candidate.prompt is None:
        return [[] for _ in texts]
    embed = None
    if candidate.prompt.selection == "nearest" and candidate.prompt.k:
        from tuneloop.models.embedding import TextEmbedder

        embed = TextEmbedder(settings)
    try:
        return choose_shots(candidate.prompt, pool, texts, embed)
    except ValueError as e:
        raise CompareError(str(e)) from None


def _score_classification(settings: Settings, candidate: Candidate, records: list[Record], choice: TaskChoice,
                          pool: list[Shot], latency_samples: int,
                          progress: Stage) -> tuple[scoring.Outcome, list[str]]:
    items = label_items(records)
    model, tokenizer = _load(settings, candidate, progress)
    outcome = scoring.Outcome(candidate.name, candidate.kind, candidate.ref)
    final = find_run_output(candidate.ref) if candidate.kind == "run" else None
    meta_labels = run_meta(final).label_set if final is not None else None
    if has_head(model):
        if candidate.prompt is not None:
            raise CompareError(f"{candidate.name}: a prompt baseline needs a chat model; {candidate.ref} is a classifier")
        labels = meta_labels or [model.config.id2label[i] for i in range(len(model.config.id2label))]
        prompts = None
        tokens = sum(len(tokenizer(t)["input_ids"]) for t in items.texts)
    else:
        labels = meta_labels or choice.labels
        base = items.prompts or [classification_messages(t, labels) for t in items.texts]
        shots = _shots_for(candidate, pool, items.texts, settings)
        system = candidate.prompt.system if candidate.prompt else None
        prompts = [with_shots(m, s, system) for m, s in zip(base, shots)]
        tokens = sum(len(chat_prompt_ids(tokenizer, m)) for m in prompts)
    missing = sorted(set(items.gold) - set(labels))
    if missing:
        raise CompareError(f"{candidate.name} answers with the labels {', '.join(labels)}; the test data also has "
                           f"{', '.join(missing)}, which it can never give (compare models trained on the same "
                           "label set)")
    advance = progress(f"{candidate.name}: scoring", len(items.texts))
    started = time.perf_counter()
    outcome.predictions = [label for label, _ in predict_labels(model, tokenizer, items.texts, labels, advance,
                                                                prompts)]
    outcome.seconds = time.perf_counter() - started
    outcome.tokens_per_s = tokens / outcome.seconds if outcome.seconds else None
    scoring.timed(outcome, lambda i: predict_labels(model, tokenizer, items.texts[i:i + 1], labels, None,
                                                    prompts[i:i + 1] if prompts else None),
                  len(items.texts), latency_samples)
    outcome.detail = {"labels_scored": list(labels)}
    return outcome, items.gold


def _score_conversations(settings: Settings, candidate: Candidate, records: list[Record], pool: list[Shot],
                         max_generate: int, max_new_tokens: int, max_length: int, latency_samples: int,
                         progress: Stage) -> tuple[scoring.Outcome, list[str]]:
    conversations = []
    for number, record in enumerate(records, 1):
        found = prompt_and_reference(record)
        if found is None:
            raise CompareError(f"--data: record {number} has no assistant answer (the reference)")
        conversations.append([*found[0], {"role": "assistant", "content": found[1]}])
    gold = [c[-1]["content"].strip() for c in conversations]
    texts = [last_user_text(c[:-1]) for c in conversations]
    model, tokenizer = _load(settings, candidate, progress)
    if has_head(model):
        raise CompareError(f"{candidate.name} is a classifier; these conversations have free-text answers")
    shots = _shots_for(candidate, pool, texts, settings)
    system = candidate.prompt.system if candidate.prompt else None
    prompts = [with_shots(c[:-1], s, system) for c, s in zip(conversations, shots)]
    outcome = scoring.Outcome(candidate.name, candidate.kind, candidate.ref)
    started = time.perf_counter()
    advance = progress(f"{candidate.name}: loss", len(prompts))
    outcome.loss_sums, outcome.tokens = teacher_forced_items(
        model, tokenizer, [p + [c[-1]] for p, c in zip(prompts, conversations)], max_length, on_progress=advance)
    cut = sum(1 for n in outcome.tokens if n == 0)
    if cut:
        raise CompareError(f"{candidate.name}: {cut} of {len(prompts)} conversations have no answer token left "
                           f"within --max-length {max_length} (the answer comes last and is cut first); raise "
                           "--max-length so that every candidate is scored on every answer")
    options = GenerationOptions(max_tokens=max_new_tokens)
    chosen = prompts[:max_generate]
    advance = progress(f"{candidate.name}: answering", len(chosen))
    generated_at = time.perf_counter()
    answers = []
    for start in range(0, len(chosen), 8):
        answers += complete_batch(model, tokenizer, chosen[start:start + 8], options, batch_size=8)
        advance(len(chosen[start:start + 8]))
    generating = time.perf_counter() - generated_at
    outcome.seconds = time.perf_counter() - started
    outcome.answers = [a.text.strip() for a in answers]
    produced = sum(a.completion_tokens for a in answers)
    outcome.tokens_per_s = produced / generating if generating and produced else None
    scoring.timed(outcome, lambda i: complete(model, tokenizer, prompts[i], options), len(prompts), latency_samples)
    return outcome, gold


def _write_items(path: Path, task: str, records: list[Record], outcomes: list[scoring.Outcome], gold: list[str],
                 differ: set[int]) -> None:
    scores = scoring.item_scores(task, outcomes, gold)
    with path.open("w", encoding="utf-8") as f:
        for i, reference in enumerate(gold):
            record = records[i]
            found = prompt_and_reference(record)
            text = record.text if isinstance(record, LabelledRecord) else last_user_text(found[0] if found else [])
            answers = {o.name: (o.predictions[i] if task == "classification" else
                                (o.answers[i] if o.answers and i < len(o.answers) else None)) for o in outcomes}
            f.write(json.dumps({"index": i, "input": text, "reference": reference, "answers": answers,
                                "scores": scores[i], "disagree": i in differ}) + "\n")
