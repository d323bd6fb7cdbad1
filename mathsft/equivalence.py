"""Whether two answer strings are mathematically equivalent, decided by math-verify (sympy underneath).

This is the grader's only dependency on math-verify: ``mathsft.grading`` extracts the answer from a completion,
tries a cheap normalized string match and then calls :func:`equivalent`. Swapping the equivalence backend means
providing another module with the same ``equivalent(pred, gold) -> bool`` and ``LIBRARIES`` and importing it in
``mathsft/grading.py``.

:func:`equivalent` has no time bound: math-verify's own signal-based timeouts are off on purpose (they cannot stop
long C-level computations and fail outside the main thread), so callers that grade untrusted text must run it in a
killable process, as ``mathsft.grading.grade_many`` does.

This module must stay cheap to import: math-verify and sympy are imported on the first call.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["LIBRARIES", "equivalent"]

# Distributions whose versions decide the verdicts (recorded in every evaluation summary by the grader identity).
LIBRARIES = ("math-verify", "latex2sympy2_extended", "sympy")

# Rewrites math-verify does not do itself, each of a notation it otherwise misreads, applied before parsing:
_REWRITES = [
    # logical "or" as a command: `x<-1 \lor x>1` is left unparsed, `x<-1 \text{ or } x>1` is read as a list
    (re.compile(r"\\(?:lor|vee)(?![A-Za-z])"), r"\\text{ or }"),
    # the two empty-set symbols
    (re.compile(r"\\varnothing(?![A-Za-z])"), r"\\emptyset"),
    # thousands separated by a thin space or a plain space: `1\,000\,000`, `1 000` (read as products otherwise)
    (re.compile(r"(?<=\d)(?:\\[,!; ]|~| )\s*(?=\d{3}(?!\d))"), ""),
    # a number and its unit inside one text group: `\text{5 apples}` -> `5\text{ apples}` (units are dropped)
    (re.compile(r"\\(?:text|mbox|textrm)\s*\{\s*(-?\d[\d.,]*)\s+([A-Za-z][A-Za-z ]*)\}"), r"\1\\text{ \2}"),
    # a number followed by bare words other than function names (`5 dollars`): a unit, as inside `\text{}`
    (
        re.compile(
            r"^(\s*-?\d[\d.,]*)\s+((?!(?:sin|cos|tan|cot|sec|csc|log|exp|pi)\b)[A-Za-z]{3,}(?: [A-Za-z]+)*)\s*$"
        ),
        r"\1\\text{ \2}",
    ),
    # "all real numbers"
    (re.compile(r"^\s*(?:\\text\s*\{\s*)?all real numbers\s*\}?\s*$", re.IGNORECASE), r"\\mathbb{R}"),
]
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_WHITESPACE_RE = re.compile(r"\s+")


def equivalent(pred: str, gold: str) -> bool:
    """Whether the answer ``pred`` equals the reference answer ``gold`` according to math-verify.

    Both strings are bare answers (the content of a box), not whole completions. Numbers, fractions, radicals,
    symbolic expressions, equations (`x=3` vs `3`), sets and lists (order-free), tuples (ordered), intervals,
    matrices, percentages, units in `\\text{}` and degree signs are handled by math-verify. On top of its defaults:

    - an interval and the equivalent inequality (or `x \\in` interval) match in both directions, and a list of
      inequalities joined by "or" (`x<-1 \\text{ or } x>1`) is read as the union of their solution sets;
    - a parse that covers only part of a string can make two answers differ, never equal.
    """
    _silence_math_verify()
    gold_parsed, gold_whole = _parse(gold)
    pred_parsed, pred_whole = _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    if not (gold_whole and pred_whole):
        # A partial parse can only be trusted to say "different": equality could rest on the ignored remainder.
        return False
    from math_verify import verify

    gold_parsed = [_or_list_as_union(p) for p in gold_parsed]
    pred_parsed = [_or_list_as_union(p) for p in pred_parsed]
    # allow_set_relation_comp: without it math-verify turns a gold inequality into a set to compare with a
    # predicted interval, but not a predicted inequality to compare with a gold interval.
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None, allow_set_relation_comp=True))


def _silence_math_verify() -> None:
    """Skip math-verify's one-time "timeout is disabled" warnings: the time bound comes from killable processes."""
    import math_verify.grader
    import math_verify.parser

    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True


def _to_math_mode(answer: str) -> str:
    """Wrap an answer in `$...$` so math-verify's LaTeX extractor takes the whole string.

    Bare strings go through its plain-expression extractor, which misreads `1,2,3` as 1.2 and `5\\sqrt{2}` as 5.
    Inline math may not contain newlines or unescaped dollars, so both are removed first.
    """
    s = answer.replace("\n", " ").replace("\r", " ")
    s = _UNESCAPED_DOLLAR_RE.sub("", s)
    for pattern, replacement in _REWRITES:
        s = pattern.sub(replacement, s)
    return f"${s.strip()}$"


def _parse(answer: str) -> tuple[list[Any], bool]:
    """math-verify ``parse`` of one answer, plus whether the parse covered the whole string.

    math-verify returns ``[sympy_expr, extracted_latex]``; the extracted latex is its own normalization of the part
    of the input it matched. When that differs from the normalization of the whole input, the extractor matched only
    a piece (e.g. a prefix) and a "correct" verdict could come from the dropped part being ignored.
    """
    from latex2sympy2_extended.math_normalization import normalize_latex
    from math_verify import LatexExtractionConfig, parse

    config = LatexExtractionConfig()
    wrapped = _to_math_mode(answer)
    # Only the LaTeX extractor: the plain-expression extractor would turn an unparsable answer into its first number.
    parsed = parse(wrapped, extraction_config=[config], parsing_timeout=None)
    expected = normalize_latex(wrapped[1:-1], config=config.normalization_config)
    extracted = next((p for p in reversed(parsed) if isinstance(p, str)), None)
    whole = extracted is not None and _WHITESPACE_RE.sub("", extracted) == _WHITESPACE_RE.sub("", expected)
    return parsed, whole


def _or_list_as_union(expr: Any) -> Any:
    """`{x < -1, x > 1}` (math-verify's reading of `x<-1 \\text{ or } x>1`) -> `(-oo, -1) U (1, oo)`.

    Only a list whose members are all inequalities (or chains of them) in one and the same variable is converted;
    anything else, including lists of equations such as `x=2 \\text{ or } x=3`, is returned unchanged.
    """
    from sympy import And, Eq, FiniteSet, Union
    from sympy.core.relational import Relational

    if not isinstance(expr, FiniteSet) or len(expr.args) < 2:
        return expr

    def is_inequality(arg: Any) -> bool:
        if isinstance(arg, And):
            return all(is_inequality(a) for a in arg.args)
        return isinstance(arg, Relational) and not isinstance(arg, Eq)

    if not all(is_inequality(arg) for arg in expr.args):
        return expr
    symbols = set().union(*(arg.free_symbols for arg in expr.args))
    if len(symbols) != 1:
        return expr
    try:
        return Union(*(arg.as_set() for arg in expr.args))
    except Exception:  # sympy cannot solve one of them (e.g. a transcendental inequality): leave the list as it is
        return expr
