"""A recipe's data as records: load sources, mix by weight, hold out validation; and each epoch's batches.
Turning records into examples is the method's part (engine/methods/)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tuneloop.config.recipe import DataSource, Recipe
from tuneloop.data.dataset import Source, load_records
from tuneloop.data.records import Record
from tuneloop.data.versions import resolve_version


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


def load_recipe_records(recipe: Recipe, datasets_dir: Path) -> RecipeRecords:
    """The records a recipe trains and validates on (mixed, split)."""
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
    return RecipeRecords(train, validation)


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
