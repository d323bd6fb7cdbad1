"""Tests for mathsft.grading and mathsft.equivalence: extraction, equivalence, the hard time bound, and the MATH-500
reference solutions. Multi-part answers and answer conventions: test_grading_multipart.py; hostile input and the
grader's identity: test_grading_robustness.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mathsft import equivalence, grading
from mathsft.grading import GradeResult, answers_match, extract_boxed_answer, grade_many, grade_one, normalize_answer

MATH500 = Path(__file__).resolve().parents[1].parent / "shared/data/math500/test.jsonl"


def _load_math500() -> list[dict]:
    if not MATH500.is_file():
        pytest.skip(f"MATH-500 not found at {MATH500}")
    with MATH500.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is $\\boxed{5}$.", "5"),
        ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),  # nested braces
        ("$\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}$", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
        ("$\\boxed{\\{1, 2\\}}$", "\\{1, 2\\}"),  # escaped braces are not structure
        ("$\\boxed{\\left\\{ x \\right.}$", "\\left\\{ x \\right."),  # an unbalanced \{ inside
        ("\\boxed{3} ... wait ... \\boxed{4}", "4"),  # the last box only
        ("\\boxed{\\boxed{3}}", "3"),  # nested boxes unwrap
        ("\\boxed{x = \\boxed{3}}", "x = 3"),
        ("\\fbox{7}", "7"),
        ("so the answer is $\\boxed 5$.", "5"),  # space form, up to `$`
        ("so the answer is \\boxed 5 and done", "5"),  # space form, up to whitespace
        ("\\boxed {12}", "12"),
        ("\\boxed{}", ""),  # empty box: still a box
        ("\\boxed{ 2 }", "2"),
    ],
)
def test_extract_boxed_answer(text: str, expected: str) -> None:
    assert extract_boxed_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 42.",  # no box, and no fallback to the last number
        "The answer is $\\boxed{12",  # truncated box
        "The answer is $\\boxed{\\frac{1}{2}$",  # truncated (inner group closed, box not)
        "\\boxedness{3}",  # not a box command
        "\\boxed",
    ],
)
def test_extract_no_box(text: str) -> None:
    assert extract_boxed_answer(text) is None


def test_truncated_last_box_falls_back_to_last_complete_box() -> None:
    # Documented choice: a box cut off by the length limit is ignored, the last complete box counts.
    assert extract_boxed_answer("First \\boxed{3}. Hmm, actually \\boxed{12") == "3"
    # A complete box inside a dangling one is still found.
    assert extract_boxed_answer("\\boxed{3 \\quad \\boxed{4}") == "4"


def test_extraction_is_linear_on_degenerate_output() -> None:
    text = "\\boxed{" * 50_000  # a repetition loop cut off by the length limit
    start = time.perf_counter()
    assert extract_boxed_answer(text) is None
    assert extract_boxed_answer(text + "\\boxed{9}") == "9"  # the one complete box is found
    assert time.perf_counter() - start < 5


def test_normalize_answer() -> None:
    assert normalize_answer("\\left( 3, \\dfrac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize_answer("30^\\circ") == normalize_answer("30^{\\circ}") == "30"
    assert normalize_answer("\\text{(C)}") == "(C)"
    assert normalize_answer("5,\\!000.") == "5,000"
    assert normalize_answer("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}") == "\\begin{pmatrix}1\\\\2\\end{pmatrix}"
    assert normalize_answer("f \\circ g") != normalize_answer("fg")  # only degree signs are dropped


# ---------------------------------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------------------------------

CORRECT = [
    ("\\frac12", "0.5"),
    ("0.5", "\\dfrac{1}{2}"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("(1,2]", "(1, 2]"),
    ("(-\\infty, -1) \\cup (1, \\infty)", "(-\\infty,-1)\\cup(1,\\infty)"),
    ("\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
    ("\\begin{pmatrix} 1/2 \\\\ -1 \\end{pmatrix}", "\\begin{pmatrix} \\frac{1}{2} \\\\ -1 \\end{pmatrix}"),
    ("C", "\\text{(C)}"),
    ("(C)", "\\text{(C)}"),
    ("\\textbf{(B)}", "B"),
    ("5\\text{ cm}", "5"),
    ("5", "5\\text{ cm}"),
    ("12", "12 \\mbox{ cm}^2"),
    ("30^\\circ", "30"),
    ("30", "30^\\circ"),
    ("x=3", "3"),
    ("3", "x=3"),
    ("\\text{Monday}", "\\text{Monday}"),
    ("Monday", "\\text{Monday}"),
    ("1,2,3", "1,2,3"),
    ("3, 2, 1", "1,2,3"),
    ("5\\sqrt{2}", "5\\sqrt{2}"),
    ("\\sqrt{50}", "5\\sqrt{2}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("(3,\\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\$18.90", "18.9"),
    ("5,\\!000", "5000"),
    ("x^2-4x+4", "(x-2)^2"),
    ("2i+1", "1+2i"),
    ("\\frac{\\sqrt{3}}{3}", "1/\\sqrt{3}"),
]

INCORRECT = [
    ("4", "4\\sqrt{2}"),
    ("4\\sqrt{2}", "4"),
    ("5", "5\\sqrt{2}"),
    ("1.2", "1,2,3"),
    ("1", "1,2,3"),
    ("[1,2)", "(1,2]"),
    ("\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
    ("(A)", "\\text{(C)}"),
    ("\\text{Tuesday}", "\\text{Monday}"),
    ("-2", "2"),
    ("2", "\\pm 2"),
    ("3.14", "\\pi"),
    ("(2,3)", "(3,2)"),
    ("x=4", "k=4"),
    ("", "3"),
    ("4 $ \\sqrt{2}", "4"),  # a stray dollar must not cut the answer short
]


@pytest.mark.parametrize(("pred", "gold"), CORRECT)
def test_answers_match_correct(pred: str, gold: str) -> None:
    assert answers_match(pred, gold)


@pytest.mark.parametrize(("pred", "gold"), INCORRECT)
def test_answers_match_incorrect(pred: str, gold: str) -> None:
    assert not answers_match(pred, gold)


def test_partial_parse_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without sanitizing, math-verify reads `$4 $ \sqrt{2}$` as just `4`; the whole-string check must catch that.
    monkeypatch.setattr(equivalence, "_to_math_mode", lambda answer: f"${answer}$")
    parsed, whole = equivalence._parse("4 $ \\sqrt{2}")
    assert parsed and not whole
    assert not equivalence.equivalent("4", "4 $ \\sqrt{2}")


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("\\boxed{3} ... wait ... \\boxed{4}", "4", GradeResult("4", True, "correct")),
        ("\\boxed{3} ... wait ... \\boxed{4}", "3", GradeResult("4", False, "incorrect")),
        ("The answer is 4.", "4", GradeResult(None, False, "no_box")),
        ("The answer is \\boxed{4", "4", GradeResult(None, False, "no_box")),
        ("\\boxed{}", "4", GradeResult("", False, "incorrect")),
        ("So $\\boxed{4}$.", "4\\sqrt{2}", GradeResult("4", False, "incorrect")),
        ("$x = \\boxed{\\dfrac{1}{2}}$", "0.5", GradeResult("\\dfrac{1}{2}", True, "correct")),
    ],
)
def test_grade_one(completion: str, gold: str, expected: GradeResult) -> None:
    assert grade_one(completion, gold) == expected


# ---------------------------------------------------------------------------------------------------------------
# Hard time bound
# ---------------------------------------------------------------------------------------------------------------


def test_grade_many_kills_pathological_items() -> None:
    items = [
        ("$\\boxed{\\frac{2}{4}}$", "0.5"),
        ("$\\boxed{5^{5^{5^{5^5}}}}$", "5"),  # sympy runs for minutes on this; signals cannot stop it
        ("\\boxed{x=3}", "3"),
        ("no box", "3"),
        ("\\boxed{[1,2)}", "(1,2]"),
        ("$\\boxed{9^{9^{9}}}$", "5"),
        ("\\boxed{\\text{(C)}}", "C"),
    ]
    timeout_s = 3.0
    start = time.perf_counter()
    results = grade_many(items, timeout_s=timeout_s, num_workers=2)
    elapsed = time.perf_counter() - start
    assert elapsed < timeout_s + 15
    statuses = [r.status for r in results]
    assert statuses[0::2] == ["correct", "correct", "incorrect", "correct"]
    assert statuses[3] == "no_box"
    # The towers are killed at the time limit (or, should math-verify ever get faster, graded wrong quickly).
    assert statuses[1] in ("timeout", "incorrect") and statuses[5] in ("timeout", "incorrect")
    assert results[1].pred == "5^{5^{5^{5^5}}}" and not results[1].correct


def test_grade_many_matches_grade_one() -> None:
    pairs = CORRECT[:8] + INCORRECT[:8]
    items = [(f"The answer is $\\boxed{{{pred}}}$.", gold) for pred, gold in pairs]
    items.append(("no box here", "1"))
    expected = [grade_one(c, g) for c, g in items]
    assert grade_many(items, timeout_s=10, num_workers=2) == expected


def test_grade_many_edge_cases() -> None:
    assert grade_many([]) == []
    assert grade_many([("\\boxed{7}", 7)], num_workers=1) == [GradeResult("7", True, "correct")]  # int gold
    assert grade_many([("x", "1"), ("\\boxed{1}", "1")], num_workers=1) == [
        GradeResult(None, False, "no_box"),
        GradeResult("1", True, "correct"),
    ]


_CRASHING_WORKER = """
import os
import mathsft.grading as g

_grade_pred = g._grade_pred


def _crash_on_request(pred, rule, gold):
    if pred == "CRASH":
        os._exit(3)
    return _grade_pred(pred, rule, gold)


g._grade_pred = _crash_on_request
g._worker_main({cpu_limit_s})
"""


def test_grade_many_survives_a_dying_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading, "_WORKER_BOOTSTRAP", _CRASHING_WORKER)
    items = [("\\boxed{CRASH}", "1"), ("\\boxed{1/2}", "0.5"), ("\\boxed{CRASH}", "2"), ("\\boxed{x=2}", "2")]
    results = grade_many(items, num_workers=1)
    assert [r.status for r in results] == ["error", "correct", "error", "correct"]
    assert results[0] == GradeResult("CRASH", False, "error")


def test_grade_many_reports_workers_that_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading, "_WORKER_BOOTSTRAP", "import sys; sys.exit(1)  # {cpu_limit_s}")
    with pytest.raises(RuntimeError, match="start-up"):
        grade_many([("\\boxed{1/2}", "0.5")], num_workers=1)


# ---------------------------------------------------------------------------------------------------------------
# MATH-500 reference solutions
# ---------------------------------------------------------------------------------------------------------------


def test_math500_reference_solutions_score_at_least_99_percent() -> None:
    rows = _load_math500()
    results = grade_many([(r["solution"], r["answer"]) for r in rows])
    failures = [(r["unique_id"], res) for r, res in zip(rows, results, strict=True) if not res.correct]
    assert len(failures) <= 0.01 * len(rows), failures


def test_math500_solutions_with_another_problems_answer_score_at_most_1_percent() -> None:
    rows = _load_math500()
    items = []
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]
        if normalize_answer(other["answer"]) == normalize_answer(row["answer"]):
            continue
        items.append((row["solution"], other["answer"]))
    results = grade_many(items)
    assert len(items) > 450
    assert sum(r.correct for r in results) <= 0.01 * len(items)
    assert not any(r.status in ("timeout", "error") for r in results)


def test_math500_gold_answers_parse_whole_and_equal_themselves() -> None:
    # Checks the math-verify path itself (the string match would accept every identical pair).
    rows = _load_math500()
    bad = []
    for answer in sorted({r["answer"] for r in rows}):
        parsed, whole = equivalence._parse(answer)
        if not (parsed and whole and equivalence.equivalent(answer, answer)):
            bad.append(answer)
    assert not bad
