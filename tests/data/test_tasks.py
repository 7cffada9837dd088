"""Which task a test file poses."""

import pytest

from tuneloop.data.records import ChatRecord, CompletionRecord, LabelledRecord, Message
from tuneloop.data.tasks import choose_task, detect_task


def chat(answer, question="Which team?"):
    return ChatRecord(messages=[Message(role="user", content=question), Message(role="assistant", content=answer)])


def test_chat_answers_from_a_small_label_set_are_classification():
    records = [chat(label) for label in ["billing", "shipping", "account"] * 3]
    choice = detect_task(records)
    assert choice.task == "classification" and choice.labels == ["account", "billing", "shipping"]
    assert choice.reason == "detected: every assistant answer is one of 3 labels (account, billing, shipping)"


def test_free_text_answers_are_sft():
    assert detect_task([chat(f"The answer is {i}") for i in range(10)]).task == "sft"
    # a label seen once makes the set a list of answers, not a vocabulary
    assert detect_task([chat(x) for x in ["yes", "yes", "no", "no", "maybe"]]).task == "sft"
    # long answers are not labels, however often they repeat
    assert detect_task([chat("please restart the router and try again")] * 4 + [chat("no")] * 4).task == "sft"
    assert detect_task([chat("yes")] * 6).task == "sft", "one answer for everything is no label set"


def test_completions_and_labelled_records():
    records = [CompletionRecord(prompt=f"q{i}", completion=c) for i, c in enumerate(["pos", "neg"] * 3)]
    assert detect_task(records).task == "classification"
    labelled = [LabelledRecord(text="t", labels=[x]) for x in ["a", "b"]]
    assert detect_task(labelled).reason == "detected: labelled records (text + label)"


def test_task_given_overrides_or_says_why_it_does_not_fit():
    labels = [chat(x) for x in ["yes", "no"] * 3]
    assert choose_task(labels, "sft").task == "sft"
    assert choose_task(labels, "classification").reason == "--task"
    free = [chat(f"answer {i}") for i in range(5)]
    assert choose_task(free, "classification").labels == [f"answer {i}" for i in range(5)]
    with pytest.raises(ValueError, match="task 'spans' does not fit these records: conversations with free-text"):
        choose_task(free, "spans")
    with pytest.raises(ValueError, match="task 'ranking' is not one of auto, classification, sft, spans, preference"):
        choose_task(free, "ranking")
