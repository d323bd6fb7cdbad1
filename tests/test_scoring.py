"""Tests for mathsft.scoring: pass@k, majority vote and the summary."""

from __future__ import annotations

from math import comb

import pytest

from mathsft.scoring import format_summary_table, majority_vote, pass_at_k, pass_at_k_values, summarize


def test_pass_at_k_hand_computed() -> None:
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - comb(2, 2) / comb(4, 2))  # 5/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 3, 2) == 1.0  # fewer wrong samples than k


@pytest.mark.parametrize("n", [1, 2, 5, 16, 64])
def test_pass_at_k_matches_binomial_formula(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n() -> None:
    value = pass_at_k(10_000, 10, 100)
    assert 0.0 < value < 1.0
    assert pass_at_k(1000, 1, 1) == pytest.approx(1e-3)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_k_values() -> None:
    assert pass_at_k_values(1) == [1]
    assert pass_at_k_values(4) == [1, 2, 4]
    assert pass_at_k_values(6) == [1, 2, 4, 6]


def test_majority_vote() -> None:
    assert majority_vote(["3", "4", "4"], [False, True, True])
    assert not majority_vote(["3", "3", "4"], [False, False, True])
    # Tie: the answer that appears first wins.
    assert not majority_vote(["3", "4", "4", "3"], [False, True, True, False])
    assert majority_vote(["4", "3", "3", "4"], [True, False, False, True])
    # None (no box) and empty answers do not vote.
    assert majority_vote([None, None, "4"], [False, False, True])
    assert not majority_vote([None, "", None], [False, False, False])
    assert not majority_vote([], [])
    # Equal after normalization: \dfrac{1}{2} and \frac{1}{2} are one answer (2 votes against 1).
    assert majority_vote(["0.3", "\\dfrac{1}{2}", "\\frac{1}{2}"], [False, True, True])
    with pytest.raises(ValueError):
        majority_vote(["1"], [True, False])


def _row(pid: str, sample: int, pred: str | None, correct: bool, status: str | None = None, **extra) -> dict:
    status = status or ("no_box" if pred is None else ("correct" if correct else "incorrect"))
    return {"id": pid, "sample": sample, "pred": pred, "correct": correct, "status": status, **extra}


def test_summarize_greedy() -> None:
    rows = [
        _row("a", 0, "1", True, subject="Algebra", level=1, finish_reason="stop", num_tokens=10),
        _row("b", 0, None, False, subject="Algebra", level=5, finish_reason="length", num_tokens=30),
        _row("c", 0, "2", False, subject="Geometry", level=None, finish_reason="stop", num_tokens=20),
        _row("d", 0, "7", False, "timeout", subject="Geometry", level=5, finish_reason="stop", num_tokens=20),
    ]
    s = summarize(rows)
    assert s["num_problems"] == 4
    assert s["num_samples"] == 1
    assert s["accuracy"] == pytest.approx(0.25)
    assert not any(key.startswith(("pass@", "maj@")) for key in s)
    assert s["by_subject"] == {"Algebra": {"accuracy": 0.5, "count": 2}, "Geometry": {"accuracy": 0.0, "count": 2}}
    assert list(s["by_level"]) == ["1", "5", "unknown"]
    assert s["by_level"]["5"] == {"accuracy": 0.0, "count": 2}
    assert (s["no_box"], s["truncated"], s["grader_timeout"], s["grader_error"]) == (1, 1, 1, 0)
    assert s["mean_num_tokens"] == pytest.approx(20.0)


def test_summarize_sampled() -> None:
    # Problem a: 2/4 correct, majority answer "5" (wrong, tie with "6" broken by first occurrence).
    # Problem b: 1/4 correct, majority answer "2" (right).
    rows = [
        _row("a", 0, "5", False),
        _row("a", 1, "6", True),
        _row("a", 2, "6", True),
        _row("a", 3, "5", False),
        _row("b", 3, None, False),  # rows may come in any order
        _row("b", 0, "2", True),
        _row("b", 1, "3", False),
        _row("b", 2, None, False),
    ]
    s = summarize(rows)
    assert s["num_problems"] == 2
    assert s["num_samples"] == 4
    assert s["accuracy"] == pytest.approx(3 / 8)
    assert s["pass@1"] == pytest.approx(3 / 8)
    assert s["pass@2"] == pytest.approx((5 / 6 + (1 - comb(3, 2) / comb(4, 2))) / 2)
    assert s["pass@4"] == pytest.approx(1.0)
    assert s["maj@4"] == pytest.approx(0.5)
    assert s["no_box"] == 2
    assert s["by_subject"] == {} and s["by_level"] == {}


def test_summarize_rejects_ragged_samples() -> None:
    with pytest.raises(ValueError):
        summarize([_row("a", 0, "1", True), _row("a", 1, "1", True), _row("b", 0, "1", True)])


def test_format_summary_table() -> None:
    rows = [
        _row("a", 0, "1", True, subject="Algebra", level=1),
        _row("a", 1, "2", False, subject="Algebra", level=1),
        _row("b", 0, None, False, subject="Number Theory", level=3),
        _row("b", 1, "4", True, subject="Number Theory", level=3),
    ]
    table = format_summary_table(summarize(rows))
    assert "accuracy" in table and "50.00%" in table
    assert "pass@2" in table and "maj@2" in table
    assert "Number Theory" in table
    assert "no_box" in table
