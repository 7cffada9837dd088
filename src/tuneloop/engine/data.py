"""A recipe's data as token examples: load sources, mix by weight, hold out validation, tokenize."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.config.recipe import DataSource, Recipe
from tuneloop.data.dataset import Source, load_records
from tuneloop.data.records import LabelledRecord, Record
from tuneloop.data.versions import resolve_version
from tuneloop.engine.methods.classify import LabelExample, tokenize_labelled
from tuneloop.engine.tokenize import Example, tokenize_records


@dataclass
class PreparedData:
    train: list[Example] | list[LabelExample]
    validation: list[Example] | list[LabelExample]
    label_set: list[str] | None
    validation_records: list[Record]
    dropped: int
    """Records with no token to learn from after truncation (skipped)."""


def load_source(source: DataSource, datasets_dir: Path) -> list[Record]:
    path = Path(source.path)
    if path.exists():
        _, numbered = load_records(Source(path, source.format))
    else:
        numbered = resolve_version(datasets_dir, source.path).records()
    return [record for _, record in numbered]


def _mix(sources: list[list[Record]], weights: list[float], rng: random.Random,
         keep_order: bool = False) -> list[Record]:
    """Each source contributes len * weight examples: repeated whole, then a seeded sample of the rest
    (with keep_order, the sample in the source's order)."""
    mixed: list[Record] = []
    for records, weight in zip(sources, weights):
        whole, part = divmod(len(records) * weight, len(records)) if records else (0, 0)
        picked = rng.sample(range(len(records)), int(round(part)))
        mixed += records * int(whole) + [records[i] for i in (sorted(picked) if keep_order else picked)]
    return mixed


@dataclass
class RecipeRecords:
    train: list[Record]
    validation: list[Record]
    label_set: list[str] | None


def load_recipe_records(recipe: Recipe, datasets_dir: Path) -> RecipeRecords:
    """The records a recipe trains and validates on (mixed, split) and, for classify, its label set."""
    if not recipe.data.train:
        raise ValueError("data.train is empty: give at least one training file or dataset version")
    rng = random.Random(recipe.seed)
    keep_order = recipe.hyperparameters.order == "sequential"  # otherwise as before, so old runs resume exactly
    sources = [load_source(s, datasets_dir) for s in recipe.data.train]
    if recipe.data.validation is not None:
        validation = load_source(recipe.data.validation, datasets_dir)
    elif recipe.data.validation_split > 0:
        pool, validation = [], []
        for records in sources:  # a random share held out
            picked = list(range(len(records)))
            rng.shuffle(picked)
            n = max(1, int(len(records) * recipe.data.validation_split))
            validation += [records[i] for i in picked[:n]]
            pool.append([records[i] for i in (sorted(picked[n:]) if keep_order else picked[n:])])
        sources = pool
    else:
        validation = []
    train = _mix(sources, [s.weight for s in recipe.data.train], rng, keep_order)
    label_set = None
    if recipe.method == "classify":
        for name, records in (("training", train), ("validation", validation)):
            bad = next((i for i, r in enumerate(records) if not isinstance(r, LabelledRecord)), None)
            if bad is not None:
                raise ValueError(f"method 'classify' needs labelled data (text + label); {name} example "
                                 f"{bad + 1} is a {records[bad].kind} record")
        label_set = sorted({label for r in train for label in r.labels})
    return RecipeRecords(train, validation, label_set)


def prepare_data(recipe: Recipe, tokenizer: Any, records: RecipeRecords, head: bool = False) -> PreparedData:
    """Token examples: chat/answer spans for causal LMs, (text, label index) for a classification head."""
    max_length = recipe.hyperparameters.max_length
    if head:
        assert records.label_set is not None
        train = tokenize_labelled(tokenizer, records.train, records.label_set, max_length)
        validation = tokenize_labelled(tokenizer, records.validation, records.label_set, max_length)
        return PreparedData(train, validation, records.label_set, records.validation, 0)
    train, dropped = tokenize_records(tokenizer, records.train, max_length, recipe.train_on, records.label_set)
    validation, _ = tokenize_records(tokenizer, records.validation, max_length, recipe.train_on, records.label_set)
    if not train:
        raise ValueError("no training example has a token to learn from (answers empty or cut by max_length)")
    return PreparedData(train, validation, records.label_set, records.validation, dropped)


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                  order: str = "length") -> list[list[int]]:
    """One epoch's micro-batches (indices into the training examples); the same again for a resume.

    length: seeded batches of similar lengths (little padding), in shuffled order. random: the examples
    shuffled, batched in that order. sequential: the data's own order, every epoch.
    """
    if order not in ("length", "random", "sequential"):
        raise ValueError(f"unknown order {order!r}: use 'length', 'random' or 'sequential'")
    rng = random.Random(seed * 1_000_003 + epoch)
    indices = list(range(len(lengths)))
    if order != "sequential":
        rng.shuffle(indices)
    if order != "length":
        return [indices[j : j + batch_size] for j in range(0, len(indices), batch_size)]
    window = batch_size * 32
    batches = []
    for start in range(0, len(indices), window):
        part = sorted(indices[start : start + window], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches
