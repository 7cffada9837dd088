"""Deduplication (exact after normalisation, near by MinHash) and leak-free stratified splits."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from tuneloop.data.dedup import find_duplicates, normalise
from tuneloop.data.records import LabelledRecord
from tuneloop.data.split import parse_ratios, split_records

BASE = ("my order {n} arrived with a cracked screen and the box was soaked, I want to know "
        "what you will do about it and how long a replacement takes to reach me")


def numbered(texts, labels=None):
    labels = labels or ["a"] * len(texts)
    return [(i + 1, LabelledRecord(text=t, labels=[label])) for i, (t, label) in enumerate(zip(texts, labels))]


def test_normalise_ignores_case_punctuation_and_spacing():
    assert normalise("  Hello,   WORLD!! ") == normalise("hello world") == "hello world"


def test_exact_duplicates_after_normalisation():
    records = numbered(["Where is my parcel?", "where is my parcel", "Totally different text here"])
    drops = find_duplicates(records)
    assert drops[0] is None and drops[2] is None
    assert drops[1].reason == "exact" and drops[1].duplicate_of == 1 and drops[1].similarity == 1.0


def test_near_duplicates_follow_the_threshold():
    near = BASE.format(n=1).replace("cracked", "broken")
    records = numbered([BASE.format(n=1), near, "Please reset my password, the email never arrives."])
    drops = find_duplicates(records, threshold=0.7)
    assert drops[1].reason == "near" and drops[1].duplicate_of == 1 and 0.7 <= drops[1].similarity < 1
    assert drops[2] is None
    assert find_duplicates(records, threshold=0.99)[1] is None  # stricter threshold keeps it
    assert find_duplicates(records, near=False)[1] is None


def test_duplicate_with_other_label_is_noted():
    drops = find_duplicates(numbered(["Refund please", "refund please!"], ["billing", "returns"]))
    assert "labels differ" in drops[1].note


def test_dedup_cli_writes_kept_records_and_report(tmp_path):
    import json

    from typer.testing import CliRunner

    from tests.conftest import write_jsonl
    from tuneloop.cli.main import app

    rows = [{"text": BASE.format(n=i), "label": "shipping"} for i in range(3)]
    rows += [{"text": "WHERE is my parcel??", "label": "shipping"}, {"text": "where is my parcel", "label": "shipping"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    result = CliRunner().invoke(app, ["data", "dedup", str(src), "-o", str(tmp_path / "kept.jsonl"),
                                      "--threshold", "0.8"])
    assert result.exit_code == 0, result.output
    kept = [json.loads(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    report = json.loads((tmp_path / "kept.dedup-report.json").read_text())
    assert [k["text"] for k in kept] == [rows[0]["text"], rows[3]["text"]]
    assert {(d["line"], d["reason"], d["duplicate_of"]) for d in report["drops"]} == {
        (2, "near", 1), (3, "near", 1), (5, "exact", 4)}


def make_dataset(n_groups=60, seed=1):
    rng = random.Random(seed)
    labels = ["billing", "shipping", "technical", "account"]
    texts, tags = [], []
    for g in range(n_groups):
        label = labels[g % 4]
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"]) for _ in range(12))
        base = f"case {g} {label} {words} reference {g * 991}"
        texts.append(base)
        tags.append(label)
        if g % 5 == 0:  # a near-duplicate of this example
            texts.append(base + " thanks")
            tags.append(label)
    return numbered(texts, tags)


def test_split_ratios_stratification_and_no_leaks():
    records = make_dataset()
    splits = split_records(records, parse_ratios("0.6,0.2,0.2"), seed=7, threshold=0.8)
    lines = [line for rows in splits.values() for line, _ in rows]
    assert sorted(lines) == [line for line, _ in records]  # every example exactly once
    sizes = {name: len(rows) for name, rows in splits.items()}
    assert abs(sizes["train"] - 0.6 * len(records)) <= 4 and sizes["test"] > 0 and sizes["validation"] > 0
    for name, rows in splits.items():
        counts = Counter(r.labels[0] for _, r in rows)
        assert len(counts) == 4, f"{name} misses a label: {counts}"
    side = {line: name for name, rows in splits.items() for line, _ in rows}
    for drop_line, keep_line in [(line + 1, line) for line, r in records if f"{r.text} thanks" in
                                 {x.text for _, x in records}]:
        assert side[drop_line] == side[keep_line]  # near-duplicates stay together


def test_split_is_seeded():
    records = make_dataset()
    ratios = parse_ratios("0.8,0.1,0.1")
    a = split_records(records, ratios, seed=3)
    assert a == split_records(records, ratios, seed=3)
    assert a != split_records(records, ratios, seed=4)


@pytest.mark.parametrize("spec,message", [("0.8,0.3", "add up to 1"), ("a,b", "numbers"), ("1", "2 (train,test)"),
                                          ("0,0.5,0.5", "train above 0")])
def test_bad_ratios_are_explained(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_ratios(spec)
