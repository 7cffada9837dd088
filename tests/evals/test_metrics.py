"""Worked examples for the evaluation metrics; the arithmetic is written beside each check."""

from __future__ import annotations

import json

import pytest

from tuneloop.evals.metrics import (
    classification_report,
    exact_match,
    format_confusion,
    plot_confusion,
    rouge_l,
)

# The scikit-learn documentation example y_true=[0,1,2,0,1,2], y_pred=[0,2,1,0,0,1] with 0,1,2 -> a,b,c.
SKLEARN_TRUE = ["a", "b", "c", "a", "b", "c"]
SKLEARN_PRED = ["a", "c", "b", "a", "a", "b"]


def test_three_class_example_matches_hand_computation():
    report = classification_report(SKLEARN_TRUE, SKLEARN_PRED)
    # Pairs (true, pred): (a,a) (b,c) (c,b) (a,a) (b,a) (c,b) -> 2 correct of 6, accuracy 1/3.
    assert report.labels == ["a", "b", "c"]
    assert report.n == 6
    assert report.accuracy == pytest.approx(1 / 3)
    # a: TP=2, predicted a 3 times -> P=2/3; 2 true a -> R=2/2=1; F=2*(2/3)*1/(2/3+1)=0.8
    assert report.per_label["a"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    # b: TP=0, predicted twice -> P=0; R=0/2=0; F=0.   c: TP=0, predicted once -> P=0; R=0; F=0.
    assert report.per_label["b"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2})
    assert report.per_label["c"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2})
    # macro F1 = (0.8 + 0 + 0) / 3 = 0.2666...
    assert report.macro_f1 == pytest.approx(0.26666666666666666)


def test_confusion_rows_are_true_labels_and_columns_are_predictions():
    report = classification_report(SKLEARN_TRUE, SKLEARN_PRED)
    # true a -> predicted a, a          : [2, 0, 0]
    # true b -> predicted c, a          : [1, 0, 1]
    # true c -> predicted b, b          : [0, 2, 0]
    assert report.confusion == [[2, 0, 0], [1, 0, 1], [0, 2, 0]]
    assert report.other_column is False
    # Row sums are the supports; column sums are how often each label was predicted (3, 2, 1).
    assert [sum(row) for row in report.confusion] == [2, 2, 2]
    assert [sum(col) for col in zip(*report.confusion)] == [3, 2, 1]


def test_label_never_predicted_has_precision_zero():
    report = classification_report(["a", "a", "b", "b"], ["a", "a", "a", "a"])
    # b is never predicted: P = 0/0 -> 0.0 (zero_division=0), R = 0/2 = 0, F = 0, support 2.
    assert report.per_label["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # a: P = 2/4 = 0.5, R = 2/2 = 1, F = 2*0.5*1/1.5 = 2/3.
    assert report.per_label["a"]["precision"] == pytest.approx(0.5)
    assert report.per_label["a"]["f1"] == pytest.approx(2 / 3)
    # macro F1 = (2/3 + 0) / 2 = 1/3; accuracy = 2/4.
    assert report.macro_f1 == pytest.approx(1 / 3)
    assert report.accuracy == pytest.approx(0.5)
    assert report.confusion == [[2, 0], [2, 0]]


def test_prediction_outside_label_set_goes_to_other_column():
    report = classification_report(["a", "b", "b"], ["a", "b", "zzz"])
    # "zzz" is not a label: it is wrong and counted in a final (other) column of row b.
    assert report.labels == ["a", "b"]
    assert report.other_column is True
    assert report.column_labels == ["a", "b", "(other)"]
    assert report.confusion == [[1, 0, 0], [0, 1, 1]]
    # b: TP=1, predicted b once -> P=1; 2 true b -> R=1/2; F=2*1*0.5/1.5=2/3. accuracy = 2/3.
    assert report.per_label["b"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert report.accuracy == pytest.approx(2 / 3)
    # macro over labels only: (1 + 2/3) / 2 = 5/6.
    assert report.macro_f1 == pytest.approx(5 / 6)
    assert "(other)" in format_confusion(report)


def test_explicit_labels_are_sorted_and_absent_labels_score_zero():
    report = classification_report(["a", "b"], ["a", "b"], labels=["c", "b", "a"])
    # c has no true examples and no predictions: P=R=F=0, support 0. macro = (1 + 1 + 0) / 3 = 2/3.
    assert report.labels == ["a", "b", "c"]
    assert report.per_label["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report.macro_f1 == pytest.approx(2 / 3)
    assert report.accuracy == 1.0
    assert report.confusion == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_true_label_missing_from_explicit_labels_is_an_error():
    with pytest.raises(ValueError, match=r"not in labels.*'b'"):
        classification_report(["a", "b"], ["a", "a"], labels=["a"])


def test_length_mismatch_is_an_error_naming_both_lengths():
    with pytest.raises(ValueError, match=r"same length.*3 true labels and 2 predictions"):
        classification_report(["a", "b", "a"], ["a", "b"])


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        classification_report([], [])


def test_to_dict_is_json_ready_and_complete():
    report = classification_report(SKLEARN_TRUE, SKLEARN_PRED)
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {"labels", "accuracy", "macro_f1", "per_label", "confusion", "other_column", "n"}
    assert data["confusion"] == [[2, 0, 0], [1, 0, 1], [0, 2, 0]]
    assert data["per_label"]["a"]["support"] == 2
    assert data["macro_f1"] == pytest.approx(0.8 / 3)


def test_format_confusion_puts_true_labels_in_rows():
    report = classification_report(["cat", "dog", "dog"], ["cat", "cat", "dog"])
    lines = format_confusion(report).splitlines()
    # header, rule, then one row per true label: cat -> [1, 0], dog -> [1, 1]
    assert len(lines) == 4
    assert lines[0].split()[-2:] == ["cat", "dog"]
    assert lines[2].split() == ["cat", "1", "0"]
    assert lines[3].split() == ["dog", "1", "1"]


def test_plot_confusion_writes_a_png(tmp_path):
    report = classification_report(["a", "b", "b"], ["a", "b", "zzz"])
    written = plot_confusion(report, tmp_path / "plots" / "confusion.png")
    assert written == tmp_path / "plots" / "confusion.png"
    content = written.read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(content) > 2000


def test_rouge_l_worked_example():
    # reference 6 tokens, prediction 5 tokens, LCS = "the cat on the mat" = 5.
    # P = 5/5 = 1, R = 5/6, F = 2*1*(5/6) / (1 + 5/6) = (10/6) / (11/6) = 10/11.
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)


def test_rouge_l_uses_a_subsequence_not_a_substring_and_ignores_case():
    # LCS of "a x b y c" and "A B C" is a,b,c = 3: P = 3/5, R = 3/3, F = 2*0.6*1/1.6 = 0.75.
    assert rouge_l("a x b y c", "A B C") == pytest.approx(0.75)


def test_rouge_l_edges():
    assert rouge_l("Same words here", "same  words here") == pytest.approx(1.0)
    assert rouge_l("nothing shared", "entirely different") == 0.0
    assert rouge_l("", "reference") == 0.0
    assert rouge_l("prediction", "   ") == 0.0


def test_exact_match_strips_and_lowercases():
    assert exact_match("  Billing\n", "billing") is True
    assert exact_match("billing", "shipping") is False
    assert exact_match("bill ing", "billing") is False
