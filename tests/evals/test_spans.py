"""Spans: BIO tags, entity scores against seqeval, and agreement between people, on worked examples."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest

from tuneloop.data.spans import bio, spans_from_tags, tag, words
from tuneloop.evals.spans import entity_report, pair_f1, span_agreement, span_report

TEXT = "Order VC-48213 arrived on 3 May, not the 4K monitor."
SPANS = [{"start": 6, "end": 14, "label": "ORDER"}, {"start": 26, "end": 31, "label": "DATE"},
         {"start": 41, "end": 51, "label": "PRODUCT"}]


def test_bio_tags_over_words():
    tokens, tags = bio(TEXT, SPANS)
    assert list(zip(tokens, tags)) == [
        ("Order", "O"), ("VC", "B-ORDER"), ("-", "I-ORDER"), ("48213", "I-ORDER"), ("arrived", "O"), ("on", "O"),
        ("3", "B-DATE"), ("May", "I-DATE"), (",", "O"), ("not", "O"), ("the", "O"), ("4K", "B-PRODUCT"),
        ("monitor", "I-PRODUCT"), (".", "O")]


def test_adjacent_spans_of_one_label_stay_two_entities():
    text = "earbuds headphones"
    spans = [(0, 7, "PRODUCT"), (8, 18, "PRODUCT")]
    assert bio(text, spans)[1] == ["B-PRODUCT", "B-PRODUCT"]
    assert spans_from_tags(text, words(text), ["B-PRODUCT", "B-PRODUCT"]) == spans


def test_combining_marks_stay_in_their_word():
    for text, expected in (("हिन्दी café", ["हिन्दी", "café"]), ("cafe\u0301 ok", ["cafe\u0301", "ok"])):
        assert [text[a:b] for a, b in words(text)] == expected


def test_tokens_sharing_a_character_never_give_overlapping_spans():
    # byte-level tokens of one emoji share its offsets: B-X on one, B-Y on the next would give two spans on it
    assert spans_from_tags("😀 ab", [(0, 1), (0, 1), (2, 4)], ["B-X", "B-Y", "B-Z"]) == [(0, 1, "X"), (2, 4, "Z")]


def test_tags_back_to_character_spans():
    offsets = words(TEXT)
    assert spans_from_tags(TEXT, offsets, tag(offsets, SPANS)) == [(6, 14, "ORDER"), (26, 31, "DATE"),
                                                                 (41, 51, "PRODUCT")]
    # an I- after O opens an entity, as conlleval (and seqeval's default) read it
    assert spans_from_tags("a b c", words("a b c"), ["O", "I-X", "I-X"]) == [(2, 5, "X")]
    # byte-level pieces carry the space before a word: it is trimmed off the span
    assert spans_from_tags("the router", [(0, 3), (3, 10)], ["O", "B-THING"]) == [(4, 10, "THING")]


def test_entity_scores_match_a_hand_count_and_seqeval():
    gold = [["B-ORDER", "I-ORDER", "O", "B-DATE", "I-DATE"], ["B-PRODUCT", "O", "B-PRODUCT"]]
    predicted = [["B-ORDER", "I-ORDER", "O", "B-DATE", "O"], ["B-PRODUCT", "O", "B-DATE"]]
    report = entity_report(gold, predicted)
    # gold entities: ORDER, DATE(3-4), PRODUCT, PRODUCT = 4; predicted: ORDER, DATE(3), PRODUCT, DATE(2) = 4;
    # exact matches: ORDER and the first PRODUCT = 2
    assert report.precision == pytest.approx(2 / 4) and report.recall == pytest.approx(2 / 4)
    assert report.f1 == pytest.approx(0.5) and report.entities == 4
    assert report.per_label["PRODUCT"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert report.per_label["DATE"]["precision"] == 0.0 and report.per_label["ORDER"]["f1"] == 1.0


def test_span_report_scores_character_spans_on_words():
    predicted = [SPANS[0], {"start": 26, "end": 27, "label": "DATE"}]  # DATE cut short, PRODUCT missed
    report = span_report([TEXT], [SPANS], [predicted])
    assert (report.precision, report.recall) == (pytest.approx(1 / 2), pytest.approx(1 / 3))


def test_pair_f1_exact_and_partial():
    first = [(0, 5, "A"), (10, 15, "B"), (20, 25, "A")]
    second = [(0, 5, "A"), (11, 15, "B"), (30, 35, "A")]
    assert pair_f1(first, second) == (1, 3, 1, 3)
    assert pair_f1(first, second, partial=True) == (2, 3, 2, 3)
    assert pair_f1(first, [(0, 5, "B")], partial=True) == (0, 3, 0, 1)  # overlap with another label is no match


def test_span_agreement_between_people():
    texts = {1: "ab cd ef gh", 2: "ij kl mn"}
    units = {
        1: {"ann": [(0, 2, "A"), (6, 8, "B")], "bob": [(0, 5, "A"), (6, 8, "B")], "cy": [(6, 8, "B")]},
        2: {"ann": [(3, 5, "A")], "bob": [(3, 5, "A")]},
        3: {"ann": [(0, 1, "A")]},  # one person only: not comparable
    }
    report = span_agreement(texts, units)
    # ann-bob: exact 2 of 3 each way -> F1 2/3; partial 3 of 3 -> 1. ann-cy: exact 1 of 2 vs 1 of 1 -> 2/3;
    # bob-cy: the same 2/3. Means: exact 2/3, partial (1 + 2/3 + 2/3) / 3.
    assert report["records"] == 2
    assert report["exact_f1"] == pytest.approx(2 / 3)
    assert report["partial_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # alpha on words, against the krippendorff package: units are words, values the label or O
    rows = {"ann": ["A", "O", "B", "O", "O", "A", "O"], "bob": ["A", "A", "B", "O", "O", "A", "O"],
            "cy": ["O", "O", "B", "O", np.nan, np.nan, np.nan]}
    codes = {"O": 0, "A": 1, "B": 2}
    data = np.array([[codes[v] if isinstance(v, str) else np.nan for v in row] for row in rows.values()], dtype=float)
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert report["tokens"] == 7 and report["token_alpha"] == pytest.approx(expected, abs=1e-9)
