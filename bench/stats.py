"""Is a difference between two rows of seeds a finding? Welch's t-test with Holm's correction.
And for the A/B speed gate (bench/ab.py), the Hodges–Lehmann shift of paired rounds with its signed-rank interval.

The tables compare a row's seeds with a control row's seeds (Table 3's rows with row 1, the attention rows with no
distillation, one class-token initialisation with the other). A difference is called a finding only when Welch's
two-sided t-test, after Holm's step-down correction over the comparisons of one table, gives p < 0.05.

Why Welch's t-test and not an exact permutation test: our rows have 3-5 seeds. A permutation test of 3 against 5
seeds has 56 arrangements, so its smallest two-sided p-value is 2/56 = 0.036; with Holm over a table's five
comparisons the smallest adjusted p is then 0.18 and no difference could ever be called a finding, however large.
Welch's test assumes seed-to-seed variation roughly normal (final top-1 of independent seeds is an average over
10,000 test images, so this is the usual assumption) and does not assume equal spreads in the two rows. It also
gives the 95 % interval of the difference, which says how large the effect may be and not only whether it is
zero. docs/statistics.md has the argument in full and a worked example.

The t statistic, Welch–Satterthwaite degrees of freedom and interval are the textbook formulas; scipy's Student-t
distribution function and its inverse (`scipy.special.stdtr`, `stdtrit`) turn them into p and the interval. Not
`scipy.stats.ttest_ind`: importing scipy.stats takes 0.8-3 s of CPU here, more than `bench tables` takes in all
(docs/tables.md), and a test checks that both give the same numbers. Holm's step-down (Holm 1979) is not in scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import special

ALPHA = 0.05
RULE = ("Δ: difference of seed means, with its 95 % interval (Welch). A difference is a finding ('yes') when "
        "Welch's two-sided t-test gives p < 0.05 after Holm's correction over this table's comparisons; 'no' "
        "otherwise. Rows of another precision or software are not compared (docs/statistics.md).")


@dataclass(frozen=True)
class Difference:
    """`values` − `base`: the difference of means, its 95 % interval and Welch's two-sided p-value."""

    diff: float
    low: float
    high: float
    p: float
    n: int
    n_base: int


def welch(values: Sequence[float], base: Sequence[float]) -> Difference | None:
    """Welch's two-sided t-test of `values` against `base`; None when it is undefined (fewer than two seeds in a
    row, or no spread in either: then there is nothing to test a difference against)."""
    if len(values) < 2 or len(base) < 2:
        return None
    if statistics.variance(values) == 0 and statistics.variance(base) == 0:
        return None
    a, b = statistics.variance(values) / len(values), statistics.variance(base) / len(base)  # squared standard errors of the two means
    diff, se = statistics.fmean(values) - statistics.fmean(base), math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (len(values) - 1) + b**2 / (len(base) - 1))  # Welch–Satterthwaite
    p = 2 * float(special.stdtr(df, -abs(diff) / se))
    half = float(special.stdtrit(df, 0.975)) * se
    return Difference(diff=diff, low=diff - half, high=diff + half, p=p, n=len(values), n_base=len(base))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest p is multiplied by (m − k + 1),
    kept monotone and capped at 1. It holds the family-wise error at α across all m comparisons."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def finding(p_adjusted: float) -> str:
    return "yes" if p_adjusted < ALPHA else "no"


@dataclass(frozen=True)
class Shift:
    """The Hodges–Lehmann estimate of a paired shift and its exact Wilcoxon signed-rank confidence interval."""

    estimate: float
    low: float
    high: float
    n: int


def signed_rank_counts(n: int) -> list[int]:
    """How many of the 2ⁿ sign patterns give each signed-rank sum 0 … n(n+1)/2: the exact null distribution of
    Wilcoxon's statistic without ties (built one rank at a time)."""
    counts = [1]
    for rank in range(1, n + 1):
        grown = counts + [0] * rank
        for total, ways in enumerate(counts):
            grown[total + rank] += ways
        counts = grown
    return counts


def hodges_lehmann(values: Sequence[float], confidence: float = 0.95) -> Shift | None:
    """The median of the Walsh averages (xᵢ + xⱼ)/2, i ≤ j, with the distribution-free interval that inverts the exact
    signed-rank test (Hollander & Wolfe, Nonparametric Statistical Methods, §3.3): the k-th smallest and k-th largest
    Walsh average, k − 1 the largest c with P(T ≤ c) ≤ (1 − confidence)/2. None when there are too few values for
    that confidence (fewer than 6 at 95 %)."""
    n = len(values)
    walsh = sorted((values[i] + values[j]) / 2 for i in range(n) for j in range(i, n))
    tail, k, below = (1 - confidence) / 2 * 2**n, 0, 0
    for c, ways in enumerate(signed_rank_counts(n)):
        below += ways
        if below > tail:
            break
        k = c + 1
    if k == 0:
        return None
    return Shift(statistics.median(walsh), walsh[k - 1], walsh[len(walsh) - k], n)
