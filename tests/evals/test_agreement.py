"""Agreement numbers against published worked examples and the `krippendorff` reference package."""

from __future__ import annotations

import math
import random

import krippendorff
import numpy as np
import pytest

from tuneloop.evals.agreement import (alpha_per_label, cohen_kappa, entropy_uncertainty, krippendorff_alpha,
                                      margin_uncertainty)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the nominal example with missing data:
# 4 observers, 12 units; his worked answer is alpha = 0.743.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def units_of(rows):
    return [{coder: row[unit] for coder, row in enumerate(rows) if row[unit] is not None} for unit in range(len(rows[0]))]


def reference(rows):
    data = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    return krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")


def test_alpha_equals_krippendorffs_worked_example():
    result = krippendorff_alpha(units_of(KRIPPENDORFF_2011))
    assert round(result.value, 3) == 0.743
    assert result.units == 11  # unit 12 has one value only and cannot be paired
    assert result.value == pytest.approx(reference(KRIPPENDORFF_2011), abs=1e-12)


def test_alpha_equals_the_reference_package_on_random_data_with_gaps():
    rng = random.Random(0)
    for _ in range(25):
        coders, units, labels = rng.randint(2, 5), rng.randint(5, 40), rng.randint(2, 4)
        rows = [[rng.randrange(labels) if rng.random() > 0.25 else None for _ in range(units)] for _ in range(coders)]
        ours = krippendorff_alpha(units_of(rows)).value
        theirs = reference(rows)
        if math.isnan(theirs):
            assert ours is None
        else:
            assert ours == pytest.approx(theirs, abs=1e-10)


def test_alpha_per_label_is_alpha_of_that_label_or_not():
    units = units_of(KRIPPENDORFF_2011)
    per_label = alpha_per_label(units, [1, 2])
    binary = [[None if v is None else int(v == 2) for v in row] for row in KRIPPENDORFF_2011]
    assert per_label[2].value == pytest.approx(reference(binary), abs=1e-12)


def test_cohens_kappa_equals_the_textbook_example():
    # 50 proposals read by two editors: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = cohen_kappa(first, second)
    assert result.value == pytest.approx(0.4)
    assert result.units == 50


def test_kappa_edge_cases_say_so_instead_of_dividing_by_zero():
    assert cohen_kappa([], []).value is None
    assert cohen_kappa(["a", "a"], ["a", "a"]).value is None  # no variation: chance agreement is 1
    with pytest.raises(ValueError, match="pair them per record"):
        cohen_kappa(["a"], ["a", "b"])
    assert krippendorff_alpha([{"x": "a"}, {"y": "b"}]).value is None


def test_uncertainty_measures():
    assert margin_uncertainty([0.5, 0.5]) == pytest.approx(1.0)
    assert margin_uncertainty([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert margin_uncertainty([0.6, 0.3, 0.1]) == pytest.approx(0.7)
    assert entropy_uncertainty([1 / 3] * 3) == pytest.approx(1.0)
    assert entropy_uncertainty([1.0, 0.0]) == 0.0
