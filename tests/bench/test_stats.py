"""Welch's test and Holm's correction behind every Δ column (bench/stats.py, issue #30), on numbers known in advance."""

import math
import statistics

import pytest

from bench import stats

# Wikipedia's worked example of Welch's t-test (article "Welch's t-test", example 3: unequal sizes... here equal
# n = 15, unequal variances): t = -2.46, df = 24.99, p = 0.021.
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_welch_gives_the_textbook_p_value_and_the_interval_of_its_own_t_and_df():
    d = stats.welch(A1, A2)
    assert d.p == pytest.approx(0.0214, abs=5e-4)
    assert d.diff == pytest.approx(statistics.mean(A1) - statistics.mean(A2))
    se = math.sqrt(statistics.variance(A1) / 15 + statistics.variance(A2) / 15)
    assert d.diff / se == pytest.approx(-2.455, abs=1e-3)
    # the interval is diff ± t_{0.975, df} · se, with the Welch–Satterthwaite df of 24.99 (t quantile 2.0595)
    assert (d.low, d.high) == pytest.approx((d.diff - 2.0595 * se, d.diff + 2.0595 * se), abs=2e-3)


def test_table3s_soft_and_hard_rows_get_the_p_values_the_audit_recomputed():
    """Issue #30: soft distillation's +0.66 (5 seeds each, committed records) has p ≈ 0.10, hard's +0.97 p ≈ 0.04."""
    none = [55.31, 56.20, 56.32, 55.28, 55.97]
    assert stats.welch([55.78, 56.03, 57.30, 56.42, 56.85], none).p == pytest.approx(0.099, abs=1e-3)
    assert stats.welch([56.44, 57.24, 57.57, 55.73, 56.95], none).p == pytest.approx(0.042, abs=1e-3)


def test_holm_multiplies_the_kth_smallest_p_by_m_minus_k_plus_one_and_keeps_the_order_monotone():
    assert stats.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_a_difference_is_a_finding_only_below_five_percent_after_holm():
    ps = stats.holm([0.042, 0.099, 0.2, 0.38, 0.27])  # Table 3 mini's five comparisons
    assert [stats.finding(p) for p in ps] == ["no"] * 5
    assert stats.finding(0.049) == "yes" and stats.finding(0.05) == "no"


@pytest.mark.parametrize("values, base", [(A1, A2), ([58.18, 57.99, 58.01], [55.31, 56.20, 56.32, 55.28, 55.97]),
                                          ([1.0, 1.2, 1.5], [1.0, 1.1])])
def test_welch_agrees_with_scipys_ttest_ind(values, base):
    from scipy.stats import ttest_ind

    d, reference = stats.welch(values, base), ttest_ind(values, base, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert (d.p, d.low, d.high) == pytest.approx((reference.pvalue, interval.low, interval.high), rel=1e-9)


@pytest.mark.parametrize("values, base", [([1.0], [1.0, 2.0]), ([1.0, 2.0], [3.0]), ([2.0, 2.0], [3.0, 3.0])])
def test_no_test_with_one_seed_or_no_spread_at_all(values, base):
    assert stats.welch(values, base) is None
