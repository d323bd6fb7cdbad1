"""The grader cannot be made to hang or crash, and says which grader it is.

Hostile completions (deep nesting, 1 MB, 10,000 boxes, null bytes, lone surrogates) give a graded row; extraction
is linear and free of recursion; everything per answer runs in the time-limited worker; ``grader_timeout`` is
validated; ``grader_identity`` names the equivalence module and the library versions pinned in requirements.txt.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from mathsft import grading
from mathsft.errors import UserError
from mathsft.grading import (
    STATUSES,
    extract_answer,
    extract_boxed_answer,
    grade_many,
    grader_identity,
    normalize_answer,
    validate_grader_timeout,
)

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"

HOSTILE = {
    "nested boxes": "\\boxed{" * 2000 + "7" + "}" * 2000,
    "nested text in 1 MB": "\\text{" * 990 + "$\\boxed{2}$" + "}" * 990 + "a" * (1 << 20),
    "10,000 boxes": " ".join(f"\\boxed{{{i}}}" for i in range(10_000)),
    "10,000 unclosed boxes": "\\boxed{" * 10_000,
    "deep fraction": "\\boxed{" + "\\frac{" * 1200 + "1" + "}{2}" * 1200 + "}",
    "deep parentheses": "\\boxed{" + "(" * 1200 + "1" + ")" * 1200 + "}",
    "1 MB box": "\\boxed{" + "1+" * 500_000 + "1}",
    "null bytes": "\x00\\boxed{\x003}\x00",
    "lone surrogates": "\ud800 \\boxed{\udfff 3} \ud83d",
    "unbalanced closers": "}" * 10_000 + "\\boxed{5}" + "}" * 10_000,
    "escaped braces": "\\boxed{" + "\\{" * 50_000 + "}",
}


def _assert_fast(function, text: str, limit_s: float = 2.0) -> None:
    start = time.perf_counter()
    function(text)
    assert time.perf_counter() - start < limit_s, function.__name__


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_extraction_and_normalization_are_fast_on_hostile_text(name: str) -> None:
    text = HOSTILE[name]
    for function in (extract_boxed_answer, extract_answer, normalize_answer):
        _assert_fast(function, text)


def test_extraction_results_on_hostile_text() -> None:
    assert extract_answer(HOSTILE["nested boxes"]) == ("7", "single_box")
    assert extract_answer(HOSTILE["nested text in 1 MB"]) == ("2", "single_box")
    assert extract_answer(HOSTILE["10,000 boxes"]) == ("9999", "single_box")  # too many boxes to be one answer
    assert extract_answer(HOSTILE["10,000 unclosed boxes"]) == (None, "none")
    assert extract_answer(HOSTILE["unbalanced closers"]) == ("5", "single_box")
    assert extract_answer(HOSTILE["null bytes"]) == ("\x003", "single_box")
    assert normalize_answer("\\text{" * 5000 + "x" + "}" * 5000) == "x"


def test_extraction_time_grows_linearly() -> None:
    # Quadratic work (e.g. re-scanning braces at every nesting level) would grow 64x for 8x the input.
    def seconds(depth: int) -> float:
        text = "\\boxed{" + "\\text{" * depth + "x" + "}" * depth + "}" + " filler" * depth
        start = time.perf_counter()
        extract_answer(text)
        normalize_answer(text)
        return time.perf_counter() - start

    small, large = min(seconds(5_000) for _ in range(3)), min(seconds(40_000) for _ in range(3))
    assert large < 25 * small + 0.05, (small, large)


def test_extraction_uses_no_recursion() -> None:
    depth = 20_000
    text = "\\boxed{" * depth + "\\text{" * depth + "1" + "}" * (2 * depth)
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)  # a recursive scan would need thousands of frames
    try:
        pred, rule = extract_answer(text)
        normalized = normalize_answer(pred)
    finally:
        sys.setrecursionlimit(old_limit)
    assert (normalized, rule) == ("1", "single_box")


def test_hostile_rows_are_graded_not_crashed() -> None:
    names = sorted(HOSTILE)
    items = [(HOSTILE[name], "3") for name in names] + [(None, None), (12, 12), ("\\boxed{12}", 12.0)]
    timeout_s = 1.5
    start = time.perf_counter()
    results = grade_many(items, timeout_s=timeout_s, num_workers=2)
    elapsed = time.perf_counter() - start
    assert len(results) == len(items)
    assert all(r.status in STATUSES and r.rule in grading.RULES for r in results)
    # Every item either finished or was stopped at its time limit: two workers, at most one limit per item each.
    assert elapsed < len(items) * timeout_s / 2 + 30
    by_name = dict(zip(names, results, strict=False))
    assert by_name["nested boxes"].status == "incorrect" and by_name["nested boxes"].pred == "7"
    assert by_name["10,000 unclosed boxes"].status == "no_box"
    assert results[-3].status == "no_box" and results[-2].status == "no_box"
    assert results[-1].correct  # a float gold: "12.0" equals 12
    # Rows carrying these results can be written as JSON (the surrogates escaped).
    json.dumps([r.__dict__ for r in results])


_SLOW_EXTRACTION_WORKER = """
import time
import mathsft.grading as g

_extract = g.extract_answer


def _slow_extract(completion, gold=""):
    if "SLOW" in completion:
        time.sleep(60)
    return _extract(completion, gold)


g.extract_answer = _slow_extract
g._worker_main({cpu_limit_s})
"""


def test_extraction_runs_under_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading, "_WORKER_BOOTSTRAP", _SLOW_EXTRACTION_WORKER)
    start = time.perf_counter()
    results = grade_many([("\\boxed{SLOW}", "1"), ("\\boxed{1/2}", "0.5")], timeout_s=2.0, num_workers=1)
    assert time.perf_counter() - start < 30
    assert [(r.pred, r.status, r.rule) for r in results] == [
        (None, "timeout", "none"),
        ("1/2", "correct", "single_box"),
    ]


def test_box_less_items_start_no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading, "_WORKER_BOOTSTRAP", "import sys; sys.exit(1)  # {cpu_limit_s}")
    results = grade_many([("The answer is 4.", "4"), ("", "1"), (None, "2")], num_workers=1)
    assert [r.status for r in results] == ["no_box"] * 3


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), float("inf"), "nan", "abc", None, True, "", [5]])
def test_validate_grader_timeout_rejects(value: object) -> None:
    with pytest.raises(UserError, match="grader_timeout") as info:
        validate_grader_timeout(value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "seconds"), [(5, 5.0), (0.25, 0.25), ("2.5", 2.5)])
def test_validate_grader_timeout_accepts(value: object, seconds: float) -> None:
    assert validate_grader_timeout(value) == seconds


def test_validate_grader_timeout_names_the_given_key() -> None:
    with pytest.raises(UserError, match="^eval.grader_timeout must be"):
        validate_grader_timeout(0, key="eval.grader_timeout")


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf")])
def test_grade_many_rejects_a_timeout_that_cannot_bound(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        grade_many([("\\boxed{1}", "1")], timeout_s=timeout_s)


def test_grader_identity() -> None:
    identity = grader_identity()
    assert set(identity) == {"rules_version", "equivalence", "math-verify", "latex2sympy2_extended", "sympy"}
    assert all(isinstance(v, str) and v for v in identity.values())
    # The module named is the one that decides equivalence, and it provides the one entry point.
    module = importlib.import_module(identity["equivalence"])
    assert module is grading._equivalence and callable(module.equivalent)
    for distribution in ("math-verify", "latex2sympy2_extended", "sympy"):
        assert identity[distribution] == metadata.version(distribution)
    json.dumps(identity)


def test_grader_libraries_are_pinned_to_the_installed_versions() -> None:
    # The same completions must grade the same after a fresh install: every library of the identity is pinned.
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", REQUIREMENTS.read_text(), flags=re.MULTILINE))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    for distribution in grading._equivalence.LIBRARIES:
        assert pins.get(distribution.lower().replace("_", "-")) == metadata.version(distribution), distribution


def test_worker_bootstrap_names_this_module() -> None:
    # The worker command is derived from the module and function objects, not spelled out separately.
    assert grading._WORKER_BOOTSTRAP.startswith(f"from {grading.__name__} import {grading._worker_main.__name__};")
