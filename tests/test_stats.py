"""Intervals and paired tests of mathsft.stats against hand-computed values and independent formulas."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from mathsft.stats import (
    Z_95,
    PairedComparison,
    accuracy_with_interval,
    aligned_scores,
    bootstrap_accuracy_interval,
    mcnemar_exact_p,
    paired_comparison,
    per_problem_correctness,
    per_problem_correctness_by,
    problem_diff,
    wilson_interval,
    with_intervals,
)

# --- Wilson ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        # 8/10: z² = 3.8415; centre (0.8 + 0.19207) / 1.38415 = 0.71674; half 1.95996 / 1.38415 * sqrt(0.016 + 0.0096)
        (8, 10, (0.4902, 0.9433)),
        (0, 10, (0.0, 0.2775)),  # upper = z² / (n + z²) = 3.8415 / 13.8415
        (10, 10, (0.7225, 1.0)),  # lower = n / (n + z²) = 10 / 13.8415
        (250, 500, (0.4563, 0.5437)),  # centre 0.5; half 1.95996 / 1.00768 * sqrt(0.0005 + 0.00000384)
    ],
)
def test_wilson_matches_hand_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=5e-5)
    assert high == pytest.approx(expected[1], abs=5e-5)


def test_wilson_closed_forms_at_the_edges():
    z2 = Z_95**2
    for n in (1, 7, 24, 500):
        assert wilson_interval(0, n) == (0.0, pytest.approx(z2 / (n + z2)))
        assert wilson_interval(n, n) == (pytest.approx(n / (n + z2)), 1.0)


@pytest.mark.parametrize(("successes", "n"), [(1, 3), (8, 10), (17, 24), (123, 500), (499, 500)])
def test_wilson_bounds_invert_the_score_test(successes, n):
    # Independent definition: the bounds are the p where the score statistic |p̂ - p| / sqrt(p(1-p)/n) equals z.
    p_hat = successes / n
    for bound in wilson_interval(successes, n):
        assert abs(p_hat - bound) / math.sqrt(bound * (1 - bound) / n) == pytest.approx(Z_95, rel=1e-9)


def test_wilson_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for successes, n in [(0, 5), (3, 5), (8, 10), (77, 200), (250, 500)]:
        reference = stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(successes, n) == (pytest.approx(reference.low), pytest.approx(reference.high))


def test_wilson_rejects_bad_counts():
    for successes, n in [(0, 0), (-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            wilson_interval(successes, n)


# --- McNemar --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("only_a", "only_b", "expected"),
    [
        (5, 0, 2 / 2**5),  # 0.0625
        (0, 5, 2 / 2**5),
        (4, 4, 1.0),
        (3, 4, 1.0),  # 2 * P(X <= 3), X ~ Bin(7, 1/2) = 2 * 64/128, capped at 1
        (1, 9, 2 * (1 + 10) / 2**10),  # 0.021484375
        (2, 10, 2 * (1 + 12 + 66) / 2**12),  # 0.0385742...
        (0, 0, 1.0),
    ],
)
def test_mcnemar_exact_matches_hand_values(only_a, only_b, expected):
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    for only_a, only_b in [(1, 2), (5, 0), (7, 19), (30, 45), (210, 250)]:
        reference = stats.binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
        assert mcnemar_exact_p(only_a, only_b) == pytest.approx(reference, rel=1e-9)


def test_mcnemar_is_exact_beyond_float_range():
    # 2**2000 overflows a float; the exact integer ratio must still give a probability.
    p = mcnemar_exact_p(1000, 1000)
    assert p == 1.0
    assert 0.0 < mcnemar_exact_p(900, 1100) < 1e-5


# --- paired comparison ----------------------------------------------------------------------------------------------


def test_paired_comparison_counts_a_hand_table():
    a = [True, True, True, True, True, False, False, True]
    b = [False, False, False, False, False, False, True, True]
    result = paired_comparison(a, b)
    assert (result.only_a, result.only_b, result.n) == (5, 1, 8)
    assert result.difference_points == pytest.approx(50.0)  # (6 - 2) / 8
    assert result.p_value == pytest.approx(2 * (1 + 6) / 2**6)  # 0.21875
    assert result.binary
    assert not result.significant
    low, high = result.ci95_points
    assert low <= 50.0 <= high


def test_paired_interval_is_zero_width_when_models_agree():
    answers = [True, False, True, True, False] * 20
    result = paired_comparison(answers, answers)
    assert result.difference_points == 0.0
    assert result.ci95_points == (0.0, 0.0)
    assert (result.only_a, result.only_b, result.p_value, result.significant) == (0, 0, 1.0, False)


def test_paired_interval_is_symmetric_on_a_symmetric_table():
    # 40 problems only a solves, 40 only b solves, 420 concordant: the differences are symmetric about 0.
    a = [True] * 40 + [False] * 40 + [True] * 200 + [False] * 220
    b = [False] * 40 + [True] * 40 + [True] * 200 + [False] * 220
    result = paired_comparison(a, b)
    low, high = result.ci95_points
    assert result.difference_points == 0.0
    assert low < 0 < high
    assert abs(low + high) <= 0.1 * (high - low)
    assert result.p_value == 1.0 and not result.significant


def test_paired_interval_matches_the_normal_approximation():
    # Independent formula: the 95% half-width of a mean difference is about 1.96 * sd(d) / sqrt(n).
    rng = np.random.default_rng(7)
    a = rng.random(500) < 0.45
    b = np.where(rng.random(500) < 0.8, a, rng.random(500) < 0.3)
    result = paired_comparison(a.tolist(), b.tolist())
    d = a.astype(float) - b.astype(float)
    half_width = Z_95 * d.std() / math.sqrt(len(d)) * 100
    low, high = result.ci95_points
    assert low <= result.difference_points <= high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert result.difference_points == pytest.approx(d.mean() * 100)


def test_a_clear_improvement_is_significant_and_both_criteria_agree():
    a = [True] * 60 + [False] * 5 + [True] * 100 + [False] * 335
    b = [False] * 60 + [True] * 5 + [True] * 100 + [False] * 335
    result = paired_comparison(a, b)
    assert result.difference_points == pytest.approx(11.0)  # (60 - 5) / 500
    assert result.p_value < 1e-10
    assert result.ci95_points[0] > 0
    assert result.significant


def test_significance_needs_both_the_test_and_the_interval():
    def compared(p_value, interval):
        return PairedComparison(3.0, interval, p_value, 25, 10, 500, True)

    assert compared(0.01, (0.5, 5.5)).significant
    assert not compared(0.049, (-0.2, 6.2)).significant  # the interval contains 0
    assert not compared(0.051, (0.2, 5.8)).significant  # p >= 0.05
    assert compared(0.01, (0.5, 5.5)).to_dict() == {
        "difference_points": 3.0, "ci95_points": [0.5, 5.5], "p_value": 0.01, "only_a": 25, "only_b": 10,
        "n": 500, "binary": True, "significant": True,
    }


def test_paired_comparison_takes_per_problem_mean_scores():
    # Several samples per problem: scores in [0, 1]; discordance is "scored higher" (exact sign test).
    a = [1.0, 0.75, 0.5, 0.0, 0.25]
    b = [0.5, 0.75, 0.25, 0.25, 0.25]
    result = paired_comparison(a, b)
    assert (result.only_a, result.only_b) == (2, 1)
    assert result.difference_points == pytest.approx((0.5 + 0.25 - 0.25) / 5 * 100)
    assert not result.binary


def test_bootstrap_is_deterministic_per_seed():
    rng = np.random.default_rng(3)
    a, b = (rng.random(300) < 0.5).tolist(), (rng.random(300) < 0.4).tolist()
    assert paired_comparison(a, b, seed=1) == paired_comparison(a, b, seed=1)
    assert paired_comparison(a, b, seed=1).ci95_points != paired_comparison(a, b, seed=2).ci95_points


def test_paired_comparison_rejects_unpaired_input():
    with pytest.raises(ValueError):
        paired_comparison([True, False], [True])
    with pytest.raises(ValueError):
        paired_comparison([], [])
    with pytest.raises(ValueError):
        paired_comparison([1.5], [0.0])


def test_ten_thousand_resamples_of_500_problems_are_fast():
    rng = np.random.default_rng(0)
    a, b = (rng.random(500) < 0.5).tolist(), (rng.random(500) < 0.4).tolist()
    paired_comparison(a[:10], b[:10])  # warm-up
    start = time.perf_counter()
    paired_comparison(a, b, resamples=10_000)
    bootstrap_accuracy_interval([float(x) for x in a], resamples=10_000)
    assert time.perf_counter() - start < 2.0  # about 0.05 s on 2 shared CPU cores


# --- bootstrap and accuracy -----------------------------------------------------------------------------------------


def test_bootstrap_hand_cases():
    assert bootstrap_accuracy_interval([0.5] * 10) == (0.5, 0.5)
    # Two problems scoring 0 and 1: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_accuracy_interval([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_with_one_sample_per_problem_is_close_to_wilson():
    scores = [1.0] * 700 + [0.0] * 1300
    wilson = wilson_interval(700, 2000)
    bootstrap = bootstrap_accuracy_interval(scores)
    assert bootstrap[0] == pytest.approx(wilson[0], abs=0.004)
    assert bootstrap[1] == pytest.approx(wilson[1], abs=0.004)


def test_accuracy_with_interval_uses_wilson_for_one_sample():
    result = accuracy_with_interval([[True]] * 8 + [[False]] * 2)
    assert result["ci_method"] == "wilson"
    assert result["accuracy"] == 0.8
    assert result["accuracy_ci95"] == list(wilson_interval(8, 10))


def test_accuracy_with_interval_bootstraps_problems_for_several_samples():
    problems = [[True, True, False, True]] * 30 + [[False, False, True, False]] * 30 + [[False] * 4] * 40
    result = accuracy_with_interval(problems)
    assert result["ci_method"] == "bootstrap"
    assert result["accuracy"] == pytest.approx((30 * 0.75 + 30 * 0.25) / 100)
    low, high = result["accuracy_ci95"]
    assert low < result["accuracy"] < high
    # Problems, not samples, are the unit: the interval is wider than a Wilson interval over all 400 samples.
    samples_low, samples_high = wilson_interval(120, 400)
    assert high - low > samples_high - samples_low


def rows_for(table: dict[str, list[bool]], subjects: dict[str, str]) -> list[dict]:
    return [
        {"id": pid, "sample": i, "correct": c, "subject": subjects[pid], "level": 1 + len(pid) % 2}
        for pid, samples in table.items()
        for i, c in enumerate(samples)
    ]


def test_per_problem_correctness_groups_and_orders_samples():
    rows = [
        {"id": "p2", "sample": 1, "correct": True},
        {"id": "p1", "sample": 0, "correct": False},
        {"id": "p2", "sample": 0, "correct": False},
        {"id": "p1", "sample": 1, "correct": True},
    ]
    assert per_problem_correctness(rows) == {"p2": [False, True], "p1": [False, True]}
    rows = rows_for({"a": [True], "b": [False], "c": [True]}, {"a": "Algebra", "b": "Algebra", "c": "Geometry"})
    assert per_problem_correctness_by(rows, "subject") == {"Algebra": {"a": [True], "b": [False]},
                                                           "Geometry": {"c": [True]}}


def test_with_intervals_adds_intervals_everywhere():
    table = {f"p{i}": [i % 3 == 0] for i in range(30)}
    subjects = {pid: ("Algebra" if i < 20 else "Geometry") for i, pid in enumerate(table)}
    rows = rows_for(table, subjects)
    summary = {
        "accuracy": 10 / 30,
        "by_subject": {"Algebra": {"accuracy": 7 / 20, "count": 20}, "Geometry": {"accuracy": 3 / 10, "count": 10}},
        "by_level": {},
    }
    result = with_intervals(summary, rows)
    assert result["accuracy_ci95"] == list(wilson_interval(10, 30)) and result["ci_method"] == "wilson"
    assert result["by_subject"]["Algebra"]["accuracy_ci95"] == list(wilson_interval(7, 20))
    assert result["by_subject"]["Geometry"]["count"] == 10
    assert "accuracy_ci95" not in summary  # the input is not modified


def test_aligned_scores_and_problem_diff():
    subjects = {"a": "Algebra", "b": "Algebra", "c": "Geometry", "d": "Geometry"}
    base = rows_for({"a": [False], "b": [True], "c": [False], "d": [True]}, subjects)
    tuned = rows_for({"d": [True], "c": [True], "b": [False], "a": [True]}, subjects)
    scores, base_scores, ids = aligned_scores(tuned, base)
    assert ids == ["d", "c", "b", "a"]
    assert (scores, base_scores) == ([1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0])
    diff = problem_diff(base, tuned)
    assert diff == [
        {"id": "c", "subject": "Geometry", "level": 2, "base_score": 0.0, "score": 1.0,
         "change": "newly_solved"},
        {"id": "b", "subject": "Algebra", "level": 2, "base_score": 1.0, "score": 0.0, "change": "newly_failed"},
        {"id": "a", "subject": "Algebra", "level": 2, "base_score": 0.0, "score": 1.0, "change": "newly_solved"},
    ]
    comparison = paired_comparison(scores, base_scores)
    assert (comparison.only_a, comparison.only_b) == (2, 1)
    with pytest.raises(ValueError, match="different problems"):
        aligned_scores(tuned[:3], base)
