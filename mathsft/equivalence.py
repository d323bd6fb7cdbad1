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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LIBRARIES", "equivalent"]

# Distributions whose versions decide the verdicts (recorded in every evaluation summary by the grader identity).
LIBRARIES = ("math-verify", "latex2sympy2_extended", "sympy")

# Unit abbreviations recognised as bare words after a number (`5 cm`); longer words are units anyway.
_BARE_ABBREVIATIONS = ("cm", "mm", "km", "m", "kg", "mg", "g", "ft", "in", "yd", "mi", "s", "h", "hr", "hrs", "L",
                       "mL", "ml", "lb", "lbs", "oz")  # fmt: skip

# Rewrites math-verify does not do itself, each of a notation it otherwise misreads, applied before parsing:
_REWRITES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # logical "or" as a command: `x<-1 \lor x>1` is left unparsed, `x<-1 \text{ or } x>1` is read as a list
    (re.compile(r"\\(?:lor|vee)(?![A-Za-z])"), r"\\text{ or }"),
    # the two empty-set symbols
    (re.compile(r"\\varnothing(?![A-Za-z])"), r"\\emptyset"),
    # thousands separated by a thin space or a plain space: `1\,000\,000`, `1 000` (read as products otherwise)
    (re.compile(r"(?<=\d)(?:\\[,!; ]|~| )\s*(?=\d{3}(?!\d))"), ""),
    # thousands separated by commas inside a group, where a list cannot be: `\frac{20,000}{\pi}`, `\sqrt{1{,}000}`
    (
        re.compile(r"(?<![\\\d])\{(\d{1,3}(?:(?:\{,\}|,\\!|,)\d{3})+)\}"),
        lambda m: "{" + re.sub(r"\D", "", m.group(1)) + "}",
    ),
    # ordinal suffixes: `12^{\mathrm{th}}`, `12^{th}`, `12\text{th}`, `21st` -> the number
    (re.compile(r"(?<=\d)\s*\^?\s*\{\s*\\(?:text|mathrm|textrm|mbox)\s*\{\s*(?:st|nd|rd|th)\s*\}\s*\}"), ""),
    (re.compile(r"(?<=\d)\s*\^?\s*(?:\\(?:text|mathrm|textrm|mbox)\s*)?\{\s*(?:st|nd|rd|th)\s*\}"), ""),
    (re.compile(r"(?<=\d)(?:st|nd|rd|th)(?![A-Za-z])"), ""),
    # scientific notation: `1e-3`, `2.5E+6` -> `1\times 10^{-3}` (read as `1·e − 3` otherwise)
    (re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])"), r"\1\\times 10^{\2}"),
    # plain-text powers and functions: `2**3`, `sqrt(3)`, `pi/2`, `sin(x)` (read as products of letters otherwise)
    (re.compile(r"\*\*"), "^"),
    (re.compile(r"(?<![\\A-Za-z])(sqrt|sin|cos|tan|cot|sec|csc|ln|log|exp)(?=\s*[({\[\d])"), r"\\\1"),
    (re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])"), r"\\pi"),
    # a number and its unit inside one text group: `\text{5 apples}` -> `5\text{ apples}`
    (re.compile(r"\\(?:text|mbox|textrm)\s*\{\s*(-?\d[\d.,]*)\s+([A-Za-z][A-Za-z ]*)\}"), r"\1\\text{ \2}"),
    # percent as a word, bare or in a text group: `33.5 percent`, `50\text{ pct}` -> `\%`
    (re.compile(r"\\(?:text|mbox|textrm|mathrm)\s*\{\s*(?:percent(?:age)?|pct|per ?cent|\\?%)\.?\s*\}"), r"\\%"),
    (re.compile(r"(?<=[\d}])\s*\b(?:percent(?:age)?|pct|per ?cent)\b\.?"), r"\\%"),
    # a number followed by bare words other than function names (`5 dollars`): a unit, as inside `\text{}`
    (
        re.compile(
            r"^(\s*-?\d[\d.,]*)\s+((?!(?:sin|cos|tan|cot|sec|csc|log|exp|pi)\b)[A-Za-z]{3,}(?: [A-Za-z]+)*)\s*$"
        ),
        r"\1\\text{ \2}",
    ),
    # a number followed by a bare unit abbreviation (`5 cm`, `3 kg`): a unit too
    (re.compile(rf"^(\s*-?\d[\d.,]*)\s+({'|'.join(_BARE_ABBREVIATIONS)})\s*$"), r"\1\\text{ \2}"),
    # "all real numbers"
    (re.compile(r"^\s*(?:\\text\s*\{\s*)?all real numbers\s*\}?\s*$", re.IGNORECASE), r"\\mathbb{R}"),
]
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_WHITESPACE_RE = re.compile(r"\s+")
_SQRT_PAREN_RE = re.compile(r"\\sqrt\s*\(")
# A trailing unit: text groups (`12\text{ cm}`, `5\,\mathrm{m/s}`, `10\text{ cm}^2`) at the end of an answer.
_TRAILING_UNIT_RE = re.compile(
    r"(?:\\[,;: !]|~|\s)*\\(?:text|mbox|textrm|mathrm|textnormal|textit|operatorname)\s*\{(?:\s|~|\\[,;: !])*"
    r"([A-Za-z][A-Za-z .\-/]*?)\s*\}\s*(?:\^\s*\{?\s*([23])\s*\}?)?\s*$"
)
_MAX_UNIT_CHARS = 200
_LEADING_DOLLAR_RE = re.compile(r"^\s*(-?)\s*\\\$\s*")
# One number written in a base: `2516_8`, `2516_{8}`, `(2516)_{8}`, `A3_{16}`.
_BASE_NUMBER_RE = re.compile(
    r"^\s*\(?\s*([0-9A-Z]+)\s*\)?\s*_\s*\{?\s*(?:\\(?:text|mathrm)\s*\{)?\s*\(?\s*(\d{1,2})\s*\)?\s*\}?\s*\}?\s*$"
)
# `2 = x`: an equation whose right side alone is a variable (a letter or command, maybe with a subscript).
_REVERSED_EQUATION_RE = re.compile(r"^([^=<>]+?)\s*=\s*((?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w{1,3}\}?)?)\s*$")
_VARIABLE_RE = re.compile(r"\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w{1,3}\}?)?\s*")
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![A-Za-z])")
_DEGREES_RE = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|°)"
)
# Where `i` is an index rather than the imaginary unit: a subscript, a sum or product, an assignment `i = 1`.
_INDEX_I_RE = re.compile(
    r"_\s*\{?[^{}=]{0,20}(?<![A-Za-z\\])i(?![A-Za-z])|\\(?:sum|prod)(?![A-Za-z])|(?<![A-Za-z\\])i\s*="
)

# Spellings of one unit, by canonical name; other words are compared singular, as written.
_UNIT_SPELLINGS = {
    "m": ("meter", "metre", "m"), "cm": ("centimeter", "centimetre", "cm"), "mm": ("millimeter", "millimetre", "mm"),
    "km": ("kilometer", "kilometre", "km"), "in": ("inch", "in"), "ft": ("foot", "feet", "ft"), "yd": ("yard", "yd"),
    "mi": ("mile", "mi"), "s": ("second", "sec", "s"), "min": ("minute", "min"), "h": ("hour", "hr", "h"),
    "day": ("day", "d"), "week": ("week", "wk"), "year": ("year", "yr"), "g": ("gram", "g"), "kg": ("kilogram", "kg"),
    "mg": ("milligram", "mg"), "lb": ("pound", "lb"), "oz": ("ounce", "oz"), "l": ("liter", "litre", "l"),
    "ml": ("milliliter", "millilitre", "ml"), "dollar": ("dollar", "usd", "buck"), "cent": ("cent", "¢"),
    "degree": ("degree", "deg"), "radian": ("radian", "rad"), "mi/h": ("mph",), "km/h": ("kph", "kmh"),
}  # fmt: skip
_CANONICAL_UNIT = {spelling: name for name, spellings in _UNIT_SPELLINGS.items() for spelling in spellings}
# Words that name no unit of their own: `12 \text{ units}` against `12\text{ cm}` is not a unit mismatch.
_PLACEHOLDER_UNITS = {"unit", "square unit", "sq unit", "cubic unit", "unit^2", "unit^3", "number", "value"}


@dataclass(frozen=True)
class _Reading:
    """An answer split into the value to parse and the annotations math-verify drops or misreads."""

    body: str
    percent: bool = False  # `50\%`, `50 percent`
    unit: str | None = None  # canonical unit (`cm`, `dollar`, `cm^2`), None when there is none
    base_number: tuple[str, int] | None = None  # (digits, base) of `2516_8`


def equivalent(pred: str, gold: str) -> bool:
    """Whether the answer ``pred`` equals the reference answer ``gold`` according to math-verify.

    Both strings are bare answers (the content of a box), not whole completions. Numbers, fractions, radicals,
    symbolic expressions, equations (`x=3` vs `3`), sets and lists (order-free), tuples (ordered), intervals,
    matrices and degree signs are handled by math-verify. On top of its defaults (``docs/grading.md``):

    - a unit, a percent sign and a number base are read off first: a unit or base on one side only is dropped,
      two different units never match, two bases compare the numbers' values, and `50\\%` equals `50` and `0.5`;
    - a set never equals a tuple or interval; `2 = x` is `x = 2`; degrees inside trigonometric functions are
      degrees; `i` is the imaginary unit unless it is used as an index;
    - an interval and the equivalent inequality (or `x \\in` interval) match in both directions, and a list of
      inequalities joined by "or" (`x<-1 \\text{ or } x>1`) is read as the union of their solution sets;
    - a parse that covers only part of a string can make two answers differ, never equal.
    """
    _silence_math_verify()
    pred_reading, gold_reading = _read(pred), _read(gold)
    verdict = _annotation_verdict(pred_reading, gold_reading)
    if verdict is not None:
        return verdict
    pred_body, gold_body = pred_reading.body, gold_reading.body
    if _set_against_sequence(pred_body, gold_body):
        return False
    if pred_reading.percent == gold_reading.percent:
        return _verify(pred_body, gold_body)
    # One side has a percent sign: the other side may give the same number or its fraction of one.
    if pred_reading.percent:
        return _verify(pred_body, gold_body) or _verify(f"\\frac{{{pred_body}}}{{100}}", gold_body)
    return _verify(pred_body, gold_body) or _verify(pred_body, f"\\frac{{{gold_body}}}{{100}}")


def _annotation_verdict(pred: _Reading, gold: _Reading) -> bool | None:
    """False for two different units, the values' comparison for two based numbers; None to compare the bodies."""
    if pred.unit is not None and gold.unit is not None and pred.unit != gold.unit:
        return False
    if pred.base_number is not None and gold.base_number is not None:
        if pred.base_number == gold.base_number:
            return True
        pred_value, gold_value = _base_value(*pred.base_number), _base_value(*gold.base_number)
        return pred_value is not None and pred_value == gold_value
    return None


def _verify(pred: str, gold: str) -> bool:
    """math-verify's verdict on two prepared answer bodies (see :func:`equivalent`)."""
    gold_parsed, gold_whole = _parse(gold)
    pred_parsed, pred_whole = _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    if not (gold_whole and pred_whole):
        # A partial parse can only be trusted to say "different": equality could rest on the ignored remainder.
        return False
    from math_verify import verify

    if _INDEX_I_RE.search(pred) is None and _INDEX_I_RE.search(gold) is None:
        gold_parsed = [_imaginary_unit(p) for p in gold_parsed]
        pred_parsed = [_imaginary_unit(p) for p in pred_parsed]
    gold_parsed = [_or_list_as_union(p) for p in gold_parsed]
    pred_parsed = [_or_list_as_union(p) for p in pred_parsed]
    # allow_set_relation_comp: without it math-verify turns a gold inequality into a set to compare with a
    # predicted interval, but not a predicted inequality to compare with a gold interval.
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None, allow_set_relation_comp=True))


def _read(answer: str) -> _Reading:
    """Split ``answer`` (prepared by :func:`_prepare`) into its body and its annotations."""
    s = _prepare(answer).strip()
    percent = s.endswith("%") and s.count("%") == 1
    if percent:
        s = s[:-2] if s.endswith("\\%") else s[:-1]
    unit = None
    if (m := _LEADING_DOLLAR_RE.match(s)) and "$" not in s[m.end() :]:
        s, unit = m.group(1) + s[m.end() :], "dollar"
    tail = max(0, len(s) - _MAX_UNIT_CHARS)  # a unit is short: searching only the tail keeps this linear
    if (m := _TRAILING_UNIT_RE.search(s, tail)) and s[: m.start()].strip() and m.group(1) not in ("i", "e"):
        s, unit = s[: m.start()], _canonical_unit(m.group(1), m.group(2))
    if len(s) <= _MAX_UNIT_CHARS and (m := _BASE_NUMBER_RE.match(s)) and any(ch.isdigit() for ch in m.group(1)):
        return _Reading(m.group(1), percent, unit, (m.group(1), int(m.group(2))))
    return _Reading(_degrees_in_trig(_unreversed_equation(s.strip())), percent, unit)


def _canonical_unit(text: str, exponent: str | None = None) -> str | None:
    """`centimeters` -> `cm`, `square feet` / `feet squared` -> `ft^2`, `cm` + `2` -> `cm^2`, `miles per hour` ->
    `mi/h`; None for placeholder words such as `units`."""
    words = _WHITESPACE_RE.sub(" ", text.lower().replace(".", " ")).strip()
    for prefix, power in (("square ", "2"), ("sq ", "2"), ("cubic ", "3")):
        if words.startswith(prefix):
            words, exponent = words[len(prefix) :], power
    for suffix, power in ((" squared", "2"), (" cubed", "3")):
        if words.endswith(suffix):
            words, exponent = words[: -len(suffix)], power
    name = "/".join(_canonical_word(part.strip()) for part in re.split(r"/| per ", words))
    if exponent:
        name = f"{name}^{exponent}"
    return None if name in _PLACEHOLDER_UNITS else name


def _canonical_word(word: str) -> str:
    """One unit word: its canonical name, or the word made singular (`inches` -> `inch`, `hrs` -> `hr`)."""
    if word not in _CANONICAL_UNIT and word.endswith("s") and (word[:-1] in _CANONICAL_UNIT or len(word) > 3):
        word = word[:-2] if word.endswith(("ches", "shes")) else word[:-1]
    return _CANONICAL_UNIT.get(word, word)


def _base_value(digits: str, base: int) -> int | None:
    try:
        return int(digits, base) if 2 <= base <= 36 else None
    except ValueError:
        return None


def _set_against_sequence(pred: str, gold: str) -> bool:
    """Whether one side is a set `\\{a, b\\}` and the other a tuple or interval `(a, b)` / `[a, b]`."""
    shapes = {_bracket_shape(pred), _bracket_shape(gold)}
    return shapes == {"set", "sequence"}


def _bracket_shape(answer: str) -> str | None:
    """`set` for `\\{a, b\\}`, `sequence` for `(a, b)`, `[a, b)` ..., None otherwise (one group with a comma)."""
    s = _WHITESPACE_RE.sub("", re.sub(r"\\(?:left|right)(?![A-Za-z])", "", answer))
    if s.startswith("\\{") and s.endswith("\\}"):
        inner, shape = s[2:-2], "set"
    elif len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner, shape = s[1:-1], "sequence"
    else:
        return None
    depth = 0
    has_comma = False
    for ch in inner:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return None  # `(a), (b)`: the first group closes before the end
        has_comma = has_comma or (ch == "," and depth == 0)
    return shape if has_comma and depth == 0 else None


def _unreversed_equation(answer: str) -> str:
    """`2 = x` -> `x = 2`: math-verify reads an equation as its right side only when the left side is a variable."""
    if answer.count("=") != 1 or len(answer) > _MAX_UNIT_CHARS:
        return answer
    m = _REVERSED_EQUATION_RE.match(answer)
    if m is None or _VARIABLE_RE.fullmatch(m.group(1)) or "," in answer:
        return answer
    return f"{m.group(2)} = {m.group(1)}"


def _degrees_in_trig(answer: str) -> str:
    """`\\sin(90^\\circ - x)` -> `\\sin((\\frac{90\\pi}{180}) - x)`: a degree sign next to a trigonometric function
    is a unit of angle (elsewhere math-verify drops it, so `30^\\circ` equals `30`)."""
    if _TRIG_RE.search(answer) is None:
        return answer
    return _DEGREES_RE.sub(r"(\\frac{\1\\pi}{180})", answer)


def _imaginary_unit(expr: Any) -> Any:
    """``expr`` with the symbol `i` replaced by the imaginary unit."""
    from sympy import Basic, I

    if not isinstance(expr, Basic):
        return expr
    symbols = [s for s in expr.free_symbols if getattr(s, "name", None) == "i"]
    if not symbols:
        return expr
    try:
        return expr.subs({s: I for s in symbols})
    except Exception:  # an object sympy cannot substitute into: leave it as it is
        return expr


def _sqrt_parentheses(answer: str) -> str:
    """`\\sqrt(3x+1)` -> `\\sqrt{3x+1}` (math-verify's own fix stops at the first `)` and mangles the backslash)."""
    parts, pos = [], 0
    while (m := _SQRT_PAREN_RE.search(answer, pos)) is not None:
        depth, end = 1, m.end()
        while end < len(answer) and depth:
            depth += {"(": 1, ")": -1}.get(answer[end], 0)
            end += 1
        if depth:
            break  # unbalanced: leave the rest as it is
        parts.append(f"{answer[pos : m.start()]}\\sqrt{{{answer[m.end() : end - 1]}}}")
        pos = end
    parts.append(answer[pos:])
    return "".join(parts)


def _prepare(answer: str) -> str:
    """``answer`` with its whitespace runs as single spaces, without unescaped dollars, and with the notation
    rewrites applied."""
    # One space per whitespace run: the patterns below then never scan a long run from many starting points.
    s = _WHITESPACE_RE.sub(" ", answer)
    s = _UNESCAPED_DOLLAR_RE.sub("", s)
    for pattern, replacement in _REWRITES:
        s = pattern.sub(replacement, s)
    return _sqrt_parentheses(s)


def _silence_math_verify() -> None:
    """Skip math-verify's one-time "timeout is disabled" warnings: the time bound comes from killable processes."""
    import math_verify.grader
    import math_verify.parser

    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True


def _to_math_mode(answer: str) -> str:
    """Wrap an answer in `$...$` so math-verify's LaTeX extractor takes the whole string.

    Bare strings go through its plain-expression extractor, which misreads `1,2,3` as 1.2 and `5\\sqrt{2}` as 5.
    Inline math may not contain newlines or unescaped dollars, so :func:`_prepare` removes both first.
    """
    return f"${_prepare(answer).strip()}$"


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
