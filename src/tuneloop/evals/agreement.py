"""Agreement between people (Cohen's kappa, Krippendorff's alpha) and how unsure a model is.

Units are records; each unit maps annotator -> value. Missing values are simply absent.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Agreement:
    value: float | None
    """None when it cannot be computed (too few paired values, or no variation at all)."""
    units: int
    """How many records the number rests on."""


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> Agreement:
    """kappa = (p_o - p_e) / (1 - p_e): observed agreement corrected for the agreement the two raters'
    own label frequencies would give by chance."""
    if len(first) != len(second):
        raise ValueError(f"the two raters have {len(first)} and {len(second)} values; pair them per record")
    n = len(first)
    if n == 0:
        return Agreement(None, 0)
    observed = sum(a == b for a, b in zip(first, second)) / n
    freq_a, freq_b = Counter(first), Counter(second)
    expected = sum(freq_a[c] * freq_b[c] for c in freq_a) / (n * n)
    if expected == 1.0:
        return Agreement(None, n)
    return Agreement((observed - expected) / (1 - expected), n)


def krippendorff_alpha(units: Sequence[Mapping[Hashable, Hashable]]) -> Agreement:
    """Nominal alpha = 1 - D_o / D_e over the coincidence matrix (Krippendorff 2011, 'Computing
    Krippendorff's alpha-reliability'). Any number of annotators, missing values allowed; units with
    fewer than two values cannot be paired and are left out."""
    coincidences: Counter[tuple[Hashable, Hashable]] = Counter()
    pairable = 0
    for unit in units:
        values = list(unit.values())
        m = len(values)
        if m < 2:
            continue
        pairable += 1
        counts = Counter(values)
        for c, n_c in counts.items():          # o_ck = sum over units of pairs (c, k) / (m_u - 1)
            for k, n_k in counts.items():
                pairs = n_c * (n_k - (c == k))
                if pairs:
                    coincidences[(c, k)] += pairs / (m - 1)
    totals: Counter[Hashable] = Counter()
    for (c, _), o in coincidences.items():
        totals[c] += o
    n = sum(totals.values())
    if pairable == 0 or n <= 1:
        return Agreement(None, pairable)
    disagree_observed = sum(o for (c, k), o in coincidences.items() if c != k)
    disagree_expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n - 1)
    if disagree_expected == 0:
        return Agreement(None, pairable)
    return Agreement(1 - disagree_observed / disagree_expected, pairable)


def alpha_per_label(units: Sequence[Mapping[Hashable, Hashable]], labels: Sequence[str]) -> dict[str, Agreement]:
    """Alpha of 'this label or not', one label at a time: where people agree and where they do not."""
    return {label: krippendorff_alpha([{who: value == label for who, value in unit.items()} for unit in units])
            for label in labels}


def margin_uncertainty(probabilities: Sequence[float]) -> float:
    """1 - (p_top - p_second): 1 when the two best labels tie, 0 when one label has it all."""
    top = sorted(probabilities, reverse=True)
    return 1.0 - (top[0] - (top[1] if len(top) > 1 else 0.0))


def entropy_uncertainty(probabilities: Sequence[float]) -> float:
    """Entropy normalised to [0, 1] by log(number of labels)."""
    if len(probabilities) < 2:
        return 0.0
    h = -sum(p * math.log(p) for p in probabilities if p > 0)
    return h / math.log(len(probabilities))
