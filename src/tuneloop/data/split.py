"""Train/validation/test splits: seeded, stratified by label, near-duplicates kept on one side."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from tuneloop.data.dedup import Numbered, duplicate_groups
from tuneloop.data.records import LabelledRecord

SPLITS = ("train", "validation", "test")


def parse_ratios(spec: str) -> dict[str, float]:
    """'0.8,0.1,0.1' -> train/validation/test; two values mean train/test."""
    try:
        values = [float(v) for v in spec.split(",")]
    except ValueError:
        raise ValueError(f"--ratios '{spec}' must be numbers separated by commas, e.g. 0.8,0.1,0.1") from None
    if len(values) not in (2, 3) or any(v < 0 for v in values) or values[0] == 0:
        raise ValueError(f"--ratios '{spec}' needs 2 (train,test) or 3 (train,validation,test) non-negative values, "
                         "train above 0")
    total = sum(values)
    if abs(total - 1) > 1e-6 and abs(total - 100) > 1e-6:
        raise ValueError(f"--ratios '{spec}' must add up to 1 (or 100), not {total:g}")
    names = SPLITS if len(values) == 3 else ("train", "test")
    return {name: v / total for name, v in zip(names, values)}


def split_records(records: Sequence[Numbered], ratios: dict[str, float], seed: int = 0,
                  threshold: float = 0.8, stratify: bool = True) -> dict[str, list[Numbered]]:
    """Assign whole duplicate groups to splits so each split gets its share of every label."""
    groups: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(duplicate_groups(records, threshold)):
        groups[group].append(index)
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():
        record = records[members[0]][1]
        key = record.labels[0] if stratify and isinstance(record, LabelledRecord) else ""
        strata[key].append(members)
    rng = random.Random(seed)
    chosen: dict[str, list[int]] = {name: [] for name in ratios}
    for key in sorted(strata):
        members_list = strata[key]
        rng.shuffle(members_list)
        total = sum(len(m) for m in members_list)
        filled = {name: 0 for name in ratios}
        for members in members_list:
            # the split furthest below its share of this label takes the next group
            name = max(ratios, key=lambda n: (ratios[n] * total - filled[n]) if ratios[n] > 0 else float("-inf"))
            filled[name] += len(members)
            chosen[name].extend(members)
    return {name: [records[i] for i in sorted(indices)] for name, indices in chosen.items()}
