"""Multi-part answers boxed separately, relation/interval symmetry and the answer conventions MATH graders share.

The last test builds completions from every list and interval gold of MATH-500 (skipped when the data is absent).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mathsft.grading import GradeResult, extract_answer, extract_boxed_answer, grade_many, grade_one

MATH500 = Path(__file__).resolve().parents[1].parent / "shared/data/math500/test.jsonl"


def _boxed(answer: str) -> str:
    return f"So the final answer is $\\boxed{{{answer}}}$."


# ---------------------------------------------------------------------------------------------------------------
# 1. A final answer split over several boxes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "pred", "rule"),
    [
        ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "-2, 1", "joined_run"),
        ("\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}", "(2, 2), (6, 2)", "joined_run"),
        ("\\boxed{1},\\boxed{2},\\boxed{3}", "1, 2, 3", "joined_run"),
        ("$\\boxed{2}$, $\\boxed{3}$, and $\\boxed{5}$", "2, 3, 5", "joined_run"),
        ("\\boxed{1}; \\boxed{2}", "1, 2", "joined_run"),
        ("$\\boxed{2}$ or $\\boxed{-2}$", "2, -2", "joined_run"),
        ("\\[\\boxed{1}\\]\n\\[\\boxed{2}\\]", "1, 2", "joined_run"),
        ("(a) $\\boxed{3}$ (b) $\\boxed{5}$", "3, 5", "joined_run"),
        ("$x = \\boxed{1}$ and $y = \\boxed{2}$", "x = 1, y = 2", "joined_run"),  # labels travel with their parts
        ("$y_1 = \\boxed{x+1}$, $y_2 = \\boxed{2x}$", "y_1 = x+1, y_2 = 2x", "joined_run"),
        # Boxes separated by reasoning: the last box wins.
        ("\\boxed{3}. Wait, let me recheck... so the answer is \\boxed{4}", "4", "single_box"),
        ("We get \\boxed{3}, so the second part is \\boxed{4}", "4", "single_box"),
        # The same value boxed twice (once per alternative solution, or restated) is that value.
        ("So $\\boxed{17}$.\n\nAlternatively, counting the other way, we again get $\\boxed{17}$.", "17", "single_box"),
        ("\\boxed{17} \\text{ or } \\boxed{17}", "17", "single_box"),
        ("\\boxed{\\frac{1}{2}} and \\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", "single_box"),  # same after normalizing
        # A label is only a single letter or command before `=`: `2x + y =` labels nothing.
        ("$2x + y = \\boxed{5}$ and $\\boxed{6}$", "5, 6", "joined_run"),
        ("no box at all", None, "none"),
    ],
)
def test_extract_answer_rules(completion: str, pred: str | None, rule: str) -> None:
    assert extract_answer(completion) == (pred, rule)


def test_joined_parts_follow_the_gold_shape() -> None:
    completion = "$r = \\boxed{3}$ and $\\boxed{\\frac{\\pi}{2}}$"
    assert extract_answer(completion, "\\left( 3, \\frac{\\pi}{2} \\right)") == (
        "(r = 3, \\frac{\\pi}{2})",
        "joined_run",
    )
    assert extract_answer("\\boxed{3} and \\boxed{4}", "(3, 4)") == ("(3, 4)", "joined_run")  # a tuple: ordered
    assert extract_answer("\\boxed{3} and \\boxed{4}", "3, 4") == ("3, 4", "joined_run")  # a list: unordered
    assert extract_answer("\\boxed{3} and \\boxed{4}", "(1, 2), (3, 4)") == ("3, 4", "joined_run")  # list of tuples
    # Parts that are tuples themselves are not wrapped again: two points against one point stay two points.
    assert extract_answer("\\boxed{(-2,18)} and \\boxed{(8,38)}", "(8,38)") == ("(-2,18), (8,38)", "joined_run")
    assert not grade_one("\\boxed{(-2,18)} and \\boxed{(8,38)}", "(8,38)").correct


def test_extract_boxed_answer_keeps_the_last_box_rule() -> None:
    assert extract_boxed_answer("The roots are $\\boxed{-2}$ and $\\boxed{1}$.") == "1"


def test_too_long_a_run_is_not_one_answer() -> None:
    # A degenerate repetition of boxes is not a 13-part answer: the last box counts.
    completion = ", ".join(f"\\boxed{{{i}}}" for i in range(20))
    assert extract_answer(completion) == ("19", "single_box")


@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "-2, 1", True),
        ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "1, -2", True),  # a list: order-free
        # Against a single value the run is not a list answer: its last box is the answer (MATH's last-box rule).
        ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "1", True),
        ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "-2", False),
        ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "-2, 1, 3", False),
        ("\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}", "(2, 2), (6, 2)", True),
        ("\\boxed{(6, 2)} \\text{ and } \\boxed{(2, 2)}", "(2, 2), (6, 2)", True),
        ("\\boxed{(2, 6)} \\text{ and } \\boxed{(2, 2)}", "(2, 2), (6, 2)", False),
        ("\\boxed{1},\\boxed{2},\\boxed{3}", "\\{1,2,3\\}", True),
        ("\\boxed{3}, \\boxed{1}, \\boxed{2}", "1, 2, 3", True),
        ("$\\boxed{2}$ or $\\boxed{-2}$", "\\pm 2", True),
        ("$\\boxed{x=2}$ \\text{ or } $\\boxed{x=3}$", "2, 3", True),
        (
            "$\\boxed{3}$ and $\\boxed{\\frac{\\pi}{2}}$",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            True,
        ),  # a tuple, in order
        ("$\\boxed{\\frac{\\pi}{2}}$ and $\\boxed{3}$", "\\left( 3, \\frac{\\pi}{2} \\right)", False),  # out of order
        ("$a = \\boxed{1}$, $b = \\boxed{2}$", "(1, 2)", True),
        ("$a = \\boxed{2}$, $b = \\boxed{1}$", "(1, 2)", False),
        ("$x = \\boxed{1}$ and $y = \\boxed{2}$", "x=1, y=2", True),
        ("\\boxed{A} and \\boxed{C}", "A, C", True),
        ("\\boxed{3}. Wait, let me recheck... so the answer is \\boxed{4}", "4", True),
        ("\\boxed{3}. Wait, let me recheck... so the answer is \\boxed{4}", "3", False),
        ("\\boxed{3}. Wait, let me recheck... so the answer is \\boxed{4}", "3, 4", False),
        ("So $\\boxed{17}$.\n\nAlternatively, we again get $\\boxed{17}$.", "17", True),
        # A reference written as boxed parts is read with the same rules.
        ("$\\boxed{1, -2}$", "\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", True),
    ],
)
def test_multipart_grades(completion: str, gold: str, correct: bool) -> None:
    result = grade_one(completion, gold)
    assert result.correct is correct, result
    assert result.status == ("correct" if correct else "incorrect")


def test_rule_is_recorded_by_grade_many() -> None:
    items = [
        ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "-2, 1"),
        ("\\boxed{3} ... wait ... \\boxed{4}", "4"),
        ("no box", "4"),
    ]
    results = grade_many(items, timeout_s=10, num_workers=1)
    assert [(r.pred, r.correct, r.rule) for r in results] == [
        ("-2, 1", True, "joined_run"),
        ("4", True, "single_box"),
        (None, False, "none"),
    ]
    assert results == [grade_one(c, g) for c, g in items]
    assert [r.rule for r in results] == [grade_one(c, g).rule for c, g in items]


def test_grade_result_rule_defaults_and_equality() -> None:
    assert GradeResult(None, False, "no_box").rule == "none"
    assert GradeResult("4", True, "correct").rule == "single_box"
    # The rule describes how pred was found; it is not part of the verdict compared by ==.
    assert GradeResult("1, 2", True, "correct", "joined_run") == GradeResult("1, 2", True, "correct")


# ---------------------------------------------------------------------------------------------------------------
# 2. Relations and intervals, in both directions
# ---------------------------------------------------------------------------------------------------------------

EQUIVALENT_SETS = [
    ("(-\\infty, 3]", "x \\le 3"),
    ("(-\\infty, 3)", "x < 3"),
    ("[0, \\infty)", "x \\geq 0"),
    ("(2, \\infty)", "x > 2"),
    ("(-2, 5)", "-2 < x < 5"),
    ("[2, 5)", "2 \\le x < 5"),
    ("(1, 4]", "1 < x \\le 4"),
    ("(-\\infty, 3]", "t \\le 3"),  # the variable's name does not matter
    ("[-2, 7]", "x \\in [-2, 7]"),
    ("(-\\infty, -1) \\cup (1, \\infty)", "x < -1 \\text{ or } x > 1"),
    ("(-\\infty, -1] \\cup [1, \\infty)", "x \\le -1 \\text{ or } x \\ge 1"),
    ("(-\\infty, -1) \\cup (1, \\infty)", "x < -1 \\lor x > 1"),
    ("(-\\infty, -1) \\cup (1, \\infty)", "|x| > 1"),
    ("(-\\infty, 3) \\cup (3, \\infty)", "x \\neq 3"),
    ("(-\\infty, \\infty)", "\\mathbb{R}"),
]


@pytest.mark.parametrize(("interval", "relation"), EQUIVALENT_SETS)
def test_interval_and_relation_match_both_ways(interval: str, relation: str) -> None:
    assert grade_one(_boxed(relation), interval).correct  # gold interval, predicted inequality
    assert grade_one(_boxed(interval), relation).correct  # gold inequality, predicted interval


@pytest.mark.parametrize(
    ("interval", "relation"),
    [
        ("(-\\infty, 3]", "x < 3"),  # endpoint in / out
        ("(-\\infty, 3)", "x \\le 3"),
        ("(2, \\infty)", "x < 2"),
        ("[2, 5)", "2 < x \\le 5"),
        ("(-\\infty, -1) \\cup (1, \\infty)", "x < -1 \\text{ or } x > 2"),
        ("(-\\infty, -1) \\cup (1, \\infty)", "-1 < x < 1"),
    ],
)
def test_different_interval_and_relation_do_not_match(interval: str, relation: str) -> None:
    assert not grade_one(_boxed(relation), interval).correct
    assert not grade_one(_boxed(interval), relation).correct


# ---------------------------------------------------------------------------------------------------------------
# Answer conventions (docs/grading.md lists each)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "correct"),
    [
        # decimals and fractions
        ("0.5", "\\frac12", True),
        ("\\frac12", "0.5", True),
        (".5", "\\frac{1}{2}", True),
        ("2/4", "\\frac12", True),
        ("0.51", "\\frac12", False),
        # \dfrac and \tfrac are \frac
        ("\\dfrac{3}{4}", "\\frac34", True),
        ("\\tfrac{3}{4}", "\\frac{3}{4}", True),
        ("\\dfrac{3}{5}", "\\frac34", False),
        # an assignment is its value
        ("x = 5", "5", True),
        ("5", "x=5", True),
        ("x = 6", "5", False),
        ("k = 4", "x = 4", False),  # two assignments to different names differ
        # degrees
        ("5^\\circ", "5", True),
        ("5^{\\circ}", "5", True),
        ("5", "5^\\circ", True),
        ("45\\text{ degrees}", "45", True),
        ("6^\\circ", "5", False),
        # units in \text{} (or as bare words after a number) are ignored where the gold has none
        ("5\\text{ cm}", "5", True),
        ("12 \\mbox{ inches}", "12", True),
        ("10\\text{ cm}^2", "10", True),
        ("\\text{5 apples}", "5", True),
        ("5 dollars", "5", True),
        ("6\\text{ cm}", "5", False),
        # money and thousands separators
        ("\\$32,\\!348", "32348", True),
        ("32,348", "32348", True),
        ("\\$5.00", "5", True),
        ("\\$1,\\!000", "1000", True),
        ("1\\,000\\,000", "10^6", True),
        ("1{,}000", "1000", True),
        ("1,000", "1", False),
        ("\\$32,\\!349", "32348", False),
        # percentages: the number with or without the sign, or its fraction of one
        ("50\\%", "50", True),
        ("50", "50\\%", True),
        ("50\\%", "0.5", True),
        ("5\\%", "0.05", True),
        ("50\\%", "5", False),
        # multiple-choice letters
        ("(A)", "A", True),
        ("A", "\\text{(A)}", True),
        ("\\textbf{(C)}", "C", True),
        ("\\textbf{(C) } 15", "C", True),
        ("(B)", "A", False),
        ("\\textbf{(B) } 15", "C", False),
        # \pm is the list of both signs
        ("\\pm 2", "2, -2", True),
        ("-2, 2", "\\pm 2", True),
        ("2", "\\pm 2", False),
        # sets, tuples, the empty set, words
        ("\\{2, 1\\}", "\\{1, 2\\}", True),
        ("(1, 2)", "(2, 1)", False),
        ("\\varnothing", "\\emptyset", True),
        ("\\text{Monday}", "Monday", True),
        ("\\text{even}", "\\text{odd}", False),
    ],
)
def test_answer_conventions(pred: str, gold: str, correct: bool) -> None:
    assert grade_one(_boxed(pred), gold).correct is correct


# ---------------------------------------------------------------------------------------------------------------
# 3. MATH-500's own list and interval answers
# ---------------------------------------------------------------------------------------------------------------

_CONNECTIVES = [", ", " and ", " \\text{ and } ", " \\quad ", "; ", " or ", ",\\ "]
_THOUSANDS_RE = re.compile(r"^\\?\$?\d{1,3}(?:,(?:\\!)?\s*\d{3})+$")


def _load_math500() -> list[dict]:
    if not MATH500.is_file():
        pytest.skip(f"MATH-500 not found at {MATH500}")
    with MATH500.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _split_top_level(s: str) -> list[str]:
    """Split at commas outside (), [], {} and \\{ \\}."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if s[i] in "([{":
            depth += 1
        elif s[i] in ")]}":
            depth -= 1
        elif s[i] == "," and depth == 0:
            parts.append(s[start:i].strip())
            start = i + 1
        i += 1
    parts.append(s[start:].strip())
    return parts


def _expand_pm(part: str) -> list[str]:
    """`1 \\pm \\sqrt{19}` -> [`1 + \\sqrt{19}`, `1 - \\sqrt{19}`]."""
    if part.count("\\pm") != 1:
        return [part]
    before, after = part.split("\\pm")
    return [f"{before}+{after}".strip(), f"{before}-{after}".strip()]


def _is_interval(gold: str, problem: str) -> bool:
    s = gold.replace("\\left", "").replace("\\right", "")
    if not re.match(r"^(x \\in )?[\[(]", s) or "pmatrix" in s:
        return False
    return "\\infty" in s or "\\cup" in s or "[" in s or "]" in s or "interval" in problem.lower()


def _list_parts(gold: str, problem: str) -> tuple[list[str], bool] | None:
    """The values of a gold that lists several, and whether their order matters (a tuple); None otherwise."""
    if "pmatrix" in gold or _THOUSANDS_RE.match(gold.replace(" ", "")) or _is_interval(gold, problem):
        return None
    s = re.sub(r"\\(left|right)(?![A-Za-z])", "", gold).strip()
    ordered = s.startswith("(") and s.endswith(")")
    if ordered or (s.startswith("\\{") and s.endswith("\\}")):
        s = s[1:-1] if ordered else s[2:-2]
    parts = [p for part in _split_top_level(s) for p in _expand_pm(part)]
    return (parts, ordered) if len(parts) > 1 else None


def _interval_as_relation(gold: str) -> str:
    """`(3,4]` -> `3 < x \\le 4`; `(-\\infty, 2) \\cup (3, \\infty)` -> `x < 2 \\text{ or } x > 3`."""
    s = re.sub(r"\\(left|right)(?![A-Za-z])", "", gold).replace("x \\in", "").strip()
    pieces = []
    for piece in s.split("\\cup"):
        piece = piece.strip()
        low, high = _split_top_level(piece[1:-1])
        low_op = "\\le" if piece[0] == "[" else "<"
        high_op = "\\le" if piece[-1] == "]" else "<"
        if low == "-\\infty":
            pieces.append(f"x {high_op} {high}")
        elif high == "\\infty":
            pieces.append(f"x {'>' if low_op == '<' else '≥'} {low}".replace("≥", "\\ge"))
        else:
            pieces.append(f"{low} {low_op} x {high_op} {high}")
    return " \\text{ or } ".join(pieces)


def test_math500_list_golds_boxed_part_by_part() -> None:
    rows = _load_math500()
    cases = [(r, found) for r in rows if (found := _list_parts(r["answer"], r["problem"])) is not None]
    items, wrong = [], []
    for k, (row, (parts, ordered)) in enumerate(cases):
        joiner = _CONNECTIVES[k % len(_CONNECTIVES)]
        boxed = [f"$\\boxed{{{p}}}$" for p in parts]
        items.append((f"Therefore the answer is {joiner.join(boxed)}.", row["answer"]))
        if not ordered:  # an unordered list: any order
            items.append((f"The values are {joiner.join(reversed(boxed))}", row["answer"]))
        # Leaving a part out, or swapping the parts of a tuple, must not pass.
        wrong.append((f"The answer is {joiner.join(boxed[:-1])}.", row["answer"]))
        if ordered and parts[0] != parts[1]:
            wrong.append((f"The answer is {joiner.join([boxed[1], boxed[0], *boxed[2:]])}.", row["answer"]))
    assert len(cases) >= 15, [r["answer"] for r, _ in cases]
    results = grade_many(items + wrong, timeout_s=10)
    right_results, wrong_results = results[: len(items)], results[len(items) :]
    assert [(c, r.pred) for (c, _), r in zip(items, right_results, strict=True) if not r.correct] == []
    assert all(r.rule == "joined_run" for r in right_results)
    assert [(c, r.pred) for (c, _), r in zip(wrong, wrong_results, strict=True) if r.correct] == []


def test_math500_interval_golds_as_inequalities() -> None:
    rows = _load_math500()
    golds = sorted({r["answer"] for r in rows if _is_interval(r["answer"], r["problem"])})
    assert len(golds) >= 10, golds
    relations = [_interval_as_relation(g) for g in golds]
    items = [(_boxed(rel), gold) for rel, gold in zip(relations, golds, strict=True)]
    items += [(_boxed(gold), rel) for rel, gold in zip(relations, golds, strict=True)]  # and the other way round
    results = grade_many(items, timeout_s=10)
    assert [(g, r.pred) for (_, g), r in zip(items, results, strict=True) if not r.correct] == []
