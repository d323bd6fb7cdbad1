"""Grading round 3 (issue 18): classes of answers the grader misread, each a class rather than a list of strings.

Units and percent words, number bases, sets against tuples, scientific notation, the imaginary unit, degrees inside
trigonometric functions, plain-text functions and ordinals, thousands separators inside groups, reversed equations,
and the extraction rules for box runs against a single value and for `<think>` blocks. The conventions are in
docs/grading.md ("Answer conventions"); each case below states one of them.
"""

from __future__ import annotations

import time

import pytest

from mathsft import equivalence
from mathsft.grading import answers_match, extract_answer, extract_boxed_answer, grade_one


def _cases(*groups: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    return [case for group in groups for case in group]


# Our own rewrites must keep the meaning: a percent word is a percent sign, not a dropped unit.
PERCENT = [
    ("33.5 percent", "0.335", True),
    ("33.5 percentage", "0.335", True),
    ("33.5 pct", "0.335", True),
    ("\\text{25 percent}", "0.25", True),
    ("50\\text{ percent}", "50\\%", True),
    ("25 per cent", "25\\%", True),
    ("$\\frac{1}{2}\\%$", "0.005", True),  # a fraction before `\%`, also inside `$...$`
    ("\\frac{1}{2}\\%", "0.5\\%", True),
    ("12.5\\%", "\\frac{1}{8}", True),
    ("12.5\\%", "12.5", True),  # with or without the sign, as 50\% vs 50
    ("10\\text{\\%}", "0.1", True),
    ("20 percent", "0.3", False),
    ("25\\%", "0.5", False),
]

# A unit on one side only is dropped; two different units never match.
UNITS = [
    ("12\\text{ m}", "12\\text{ cm}", False),
    ("5.4 dollars", "5.4 cents", False),
    ("12\\text{ inches}", "12\\text{ feet}", False),
    ("3 \\text{ hours}", "3\\text{ minutes}", False),
    ("10\\text{ cm}^2", "10\\text{ cm}", False),
    ("3\\text{ m/s}", "3\\text{ m}", False),
    ("\\text{5 cm}", "5\\text{ m}", False),
    ("5\\text{ cm}", "5 m", False),
    ("5\\text{ kg}", "5\\text{ g}", False),
    ("12\\mathrm{~cm}", "12\\text{ m}", False),
    ("60 mph", "60\\text{ km/h}", False),
    ("50 \\text{ km/h}", "50 \\text{ km/hr}", True),
    ("60 mph", "60\\text{ miles per hour}", True),
    ("5.4\\text{ dollars}", "\\$5.40", True),
    ("12\\text{ cm}", "12", True),
    ("12", "12\\text{ cm}", True),
    ("5 \\text{ meters}", "5\\text{ m}", True),
    ("3\\text{ hrs}", "3 \\text{ hours}", True),
    ("4 \\text{ inches}", "4\\text{ in.}", True),
    ("10\\text{ cm}^3", "10 \\text{ cubic centimeters}", True),
    ("10\\text{ meters squared}", "10\\text{ m}^2", True),
    ("12\\,\\mathrm{cm}", "12\\text{ cm}", True),
    ("4\\text{ units}", "4\\text{ cm}", True),  # "units" names no unit of its own
    ("3+4\\mathrm{i}", "3+4i", True),  # an upright i is not a unit
]

# A number base subscript: two bases compare the values; one side only, the digits.
BASES = [
    ("2516_9", "2516_8", False),
    ("1011_2", "1101_2", False),
    ("2516_{\\text{8}}", "2516_9", False),
    ("2516_{\\text{8}}", "2516_8", True),
    ("2516_{8}", "2516_8", True),
    ("(2516)_8", "2516_8", True),
    ("10_2", "2_{10}", True),
    ("1011_2", "1011", True),
]

# A set is not a tuple or an interval.
SETS = [
    ("\\{1,2\\}", "(1,2)", False),
    ("(1,2)", "\\{1,2\\}", False),
    ("\\{1,2\\}", "(1,2]", False),
    ("\\left\\{1,2\\right\\}", "\\left(1,2\\right)", False),
    ("\\{2,1\\}", "1, 2", True),
    ("(1,2)", "1,2", True),
]

NOTATION = [
    # scientific notation
    ("1e-3", "0.001", True),
    ("1E-3", "\\frac{1}{1000}", True),
    ("2.5e6", "2500000", True),
    ("6.02e23", "6.02\\times10^{23}", True),
    ("1e-3", "0.01", False),
    # the imaginary unit
    ("i(2-i)", "1+2i", True),
    ("i^2", "-1", True),
    ("\\frac{1+i}{1-i}", "i", True),
    ("e^{i\\pi}", "-1", True),
    ("i(2-i)", "2+i", False),
    ("2i", "2", False),
    ("a_i + 1", "a_i + 1", True),  # an index stays a symbol
    # degrees inside trigonometric functions
    ("\\sin(90^\\circ - x)", "\\cos x", True),
    ("\\cos 60^\\circ", "\\frac12", True),
    ("\\tan 45^{\\circ}", "1", True),
    ("\\sin(90^\\circ - x)", "\\sin x", False),
    ("30^\\circ", "30", True),  # outside trigonometry the degree sign is still dropped
    # plain-text functions and constants
    ("-1 + sqrt(3)", "\\sqrt{3}-1", True),
    ("(1+sqrt(5))/2", "\\frac{1+\\sqrt5}{2}", True),
    ("2*sqrt(3)", "2\\sqrt3", True),
    ("pi/4", "\\frac{\\pi}{4}", True),
    ("sqrt[3]{2}", "2^{1/3}", True),
    ("-1 + sqrt(3)", "\\sqrt{3}+1", False),
    ("sqrt(12)", "3\\sqrt{3}", False),
    # ordinals
    ("12^{\\mathrm{th}}\\text{ grade}", "12", True),
    ("12th grade", "12", True),
    ("3^{\\text{rd}}", "3", True),
    ("12th grade", "12^{\\text{th}} \\text{ grade}", True),
    ("12th grade", "11th grade", False),
    # a comma between thousands inside a group
    ("\\frac{20,000}{\\pi}", "\\frac{20000}{\\pi}", True),
    ("\\frac{20{,}000}{\\pi}", "\\frac{20000}{\\pi}", True),
    ("\\sqrt{10,000}", "100", True),
    ("\\frac{20,000}{\\pi}", "\\frac{20}{\\pi}", False),
]

# An equation whose right side is the variable is read as `variable = value`.
EQUATIONS = [
    ("2", "2=x", True),
    ("2=x", "2", True),
    ("3=x", "x=3", True),
    ("\\frac12 = y", "0.5", True),
    ("4", "2=x", False),
    ("x=3", "y=3", False),
]


@pytest.mark.parametrize(("pred", "gold", "correct"), _cases(PERCENT, UNITS, BASES, SETS, NOTATION, EQUATIONS))
def test_round3_answer_classes(pred: str, gold: str, correct: bool) -> None:
    assert answers_match(pred, gold) is correct


@pytest.mark.parametrize(
    ("pred", "gold", "correct"),
    [
        ("1.414214", "\\sqrt2", True),  # agrees to 6 decimal places
        ("0.333333", "\\frac13", True),
        ("1.414", "\\sqrt2", False),  # an approximation is not the exact answer
        ("3.14", "\\pi", False),
        ("0.333", "\\frac13", False),
        ("1000.0001", "1000", False),
    ],
)
def test_numeric_tolerance_convention(pred: str, gold: str, correct: bool) -> None:
    # docs/grading.md: a decimal equals an exact value only when it agrees to 6 decimal places.
    assert answers_match(pred, gold) is correct


# ---------------------------------------------------------------------------------------------------------------
# Extraction: box runs against a single value, reasoning blocks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "gold", "pred", "rule"),
    [
        # Against a single value, a run of boxes is not a list answer: the last box is the answer.
        ("\\boxed{1} and \\boxed{2}", "2", "2", "single_box"),
        ("Multiple \\boxed{1} and \\boxed{2}", "2", "2", "single_box"),
        ("$\\boxed{1}$, $\\boxed{2}$", "1,000", "2", "single_box"),  # a thousands separator lists nothing
        ("\\boxed{2}, \\boxed{3}, \\boxed{2}", "3", "2", "single_box"),  # the last box, not the last new value
        # Against several values, the run is joined as before.
        ("\\boxed{1} and \\boxed{2}", "1, 2", "1, 2", "joined_run"),
        ("\\boxed{1} and \\boxed{2}", "\\pm 2", "1, 2", "joined_run"),
        ("\\boxed{1} and \\boxed{2}", "(1, 2)", "(1, 2)", "joined_run"),
        ("\\boxed{1} and \\boxed{2}", "", "1, 2", "joined_run"),  # no gold: the run
        # A box inside a reasoning block is not the answer.
        ("<think>so \\boxed{5}", "5", None, "none"),
        ("<think>maybe \\boxed{3}</think> The answer is 42.", "3", None, "none"),
        ("<think>maybe \\boxed{3}</think> So \\boxed{42}.", "42", "42", "single_box"),
        ("<think>\\boxed{42} guess</think> <answer> \\boxed{41} </answer>", "42", "41", "single_box"),
        ("\\boxed{7} <think>but maybe \\boxed{8}", "7", "7", "single_box"),
        ("reasoning without an opening tag \\boxed{1}</think> so \\boxed{7}", "7", "7", "single_box"),
    ],
)
def test_extraction_round3(completion: str, gold: str, pred: str | None, rule: str) -> None:
    assert extract_answer(completion, gold) == (pred, rule)


@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("\\boxed{1} and \\boxed{2}", "2", True),
        ("\\boxed{1} and \\boxed{2}", "1", False),
        ("<think>so \\boxed{5}", "5", False),
        ("<think>\\boxed{X}</think><answer>\\boxed{A}\\boxed{B}</answer>", "B", True),
    ],
)
def test_grade_one_round3(completion: str, gold: str, correct: bool) -> None:
    assert grade_one(completion, gold).correct is correct


def test_extract_boxed_answer_ignores_an_unclosed_reasoning_block() -> None:
    assert extract_boxed_answer("\\boxed{3} <think> \\boxed{4}") == "3"


def test_reading_long_answers_stays_linear() -> None:
    # The unit, equation and index patterns look only at bounded parts of an answer.
    # (Before, a run of 20,000 spaces after a digit took 40 s.)
    n = 40_000
    hostile = ["1" + " " * n + "x", "_" * n + "i", "a = " + " " * n + "b", "\\sin " + "9" * n, "1^{ " * (n // 4)]
    start = time.perf_counter()
    for answer in hostile:
        equivalence._read(answer)
        equivalence._INDEX_I_RE.search(answer)
    assert time.perf_counter() - start < 3.0
