"""Which task a test file poses, so that evaluation scores it the right way.

Labelled, span and preference records say so themselves. Conversations need a look at their answers: a chat file
whose final assistant answers all come from a small set of short labels (say "billing", "shipping", ...) is a
classification task in chat form. Scoring it as SFT (exact match on generated text) would read a handful of
greedy answers; scoring it as classification reads the likelihood of every label on every row."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tuneloop.data.records import LabelledRecord, PreferenceRecord, Record, SpanRecord

TASKS = ("classification", "sft", "spans", "preference")
MAX_LABELS = 20
"""More distinct answers than this are free text, not a label set."""
MAX_LABEL_WORDS = 4


@dataclass
class TaskChoice:
    task: str
    """One of TASKS."""
    reason: str
    """Why, in words, for the output: "detected: ...", or "--task"."""
    labels: list[str] = field(default_factory=list)
    """Classification: the label set (sorted)."""


def final_answer(record: Record) -> str | None:
    """The content of a conversation's last message when an assistant wrote it."""
    messages = record.to_messages()
    return messages[-1].content.strip() if messages and messages[-1].role == "assistant" else None


def answer_labels(records: Sequence[Record]) -> list[str] | None:
    """The sorted label set, when every record ends with an assistant answer from a small set of short labels
    that each occur at least twice (so the set is a vocabulary, not a list of one-off answers); else None."""
    answers = [final_answer(r) for r in records]
    if not answers or any(a is None or not a for a in answers):
        return None
    counts = Counter(answers)
    if len(counts) > MAX_LABELS or len(counts) < 2 or len(records) < 2 * len(counts):
        return None
    if any(len(label.split()) > MAX_LABEL_WORDS or "\n" in label for label in counts):
        return None
    if min(counts.values()) < 2:
        return None
    return sorted(counts)


def detect_task(records: Sequence[Record]) -> TaskChoice:
    """The task these records pose (see the module's docstring)."""
    if records and all(isinstance(r, LabelledRecord) for r in records):
        labels = sorted({label for r in records for label in r.labels})  # type: ignore[union-attr]
        return TaskChoice("classification", "detected: labelled records (text + label)", labels)
    if records and all(isinstance(r, SpanRecord) for r in records):
        return TaskChoice("spans", "detected: span records (text + spans)")
    if records and all(isinstance(r, PreferenceRecord) for r in records):
        return TaskChoice("preference", "detected: preference pairs (prompt, chosen, rejected)")
    labels = answer_labels(records)
    if labels is not None:
        return TaskChoice("classification", f"detected: every assistant answer is one of {len(labels)} labels "
                                            f"({', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''})", labels)
    return TaskChoice("sft", "detected: conversations with free-text answers")


def choose_task(records: Sequence[Record], task: str) -> TaskChoice:
    """`detect_task` for task 'auto'; otherwise the task asked for, checked against the records (ValueError
    saying what the records hold when they cannot pose it)."""
    if task == "auto":
        return detect_task(records)
    if task not in TASKS:
        raise ValueError(f"task '{task}' is not one of auto, {', '.join(TASKS)}")
    detected = detect_task(records)
    if task == detected.task:
        return TaskChoice(task, "--task", detected.labels)
    if task == "classification":
        answers = [final_answer(r) for r in records]
        if any(a is None or not a for a in answers):
            raise ValueError("task 'classification' needs labelled records or conversations that end with an "
                             "assistant answer (the label)")
        labels = sorted(set(answers))  # type: ignore[arg-type]
        if len(labels) > 100:
            raise ValueError(f"task 'classification': the assistant answers hold {len(labels)} distinct values; "
                             "that is free text, not a label set (at most 100)")
        return TaskChoice("classification", "--task", labels)
    if task == "sft" and detected.task == "classification" and not isinstance(records[0], LabelledRecord):
        return TaskChoice("sft", "--task")
    raise ValueError(f"task '{task}' does not fit these records: {detected.reason.removeprefix('detected: ')}")
