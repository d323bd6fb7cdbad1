"""Answer grading for MATH-style completions: boxed-answer extraction, equivalence and a hard time bound.

Usage::

    from mathsft.grading import grade_many, grade_one

    grade_one("... so the answer is $\\boxed{\\frac12}$.", "0.5")  # GradeResult(pred='\\frac12', correct=True, ...)
    results = grade_many([(completion, gold), ...], timeout_s=5.0)

The rules are documented in ``docs/grading.md``. In short:

1. The prediction comes from the complete ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x`` at the end of the
   completion: the last box, or the whole trailing run of boxes when they are separated only by connective text
   ("and", commas, ``\\quad`` ...), as in ``$\\boxed{-2}$ and $\\boxed{1}$``. No box means ``no_box`` (incorrect);
   there is no "last number in the text" fallback.
2. A cheap normalized string match (spaces, ``\\left``/``\\right``, ``\\dfrac``, ``^\\circ``, ``\\text{}`` ...)
   counts as correct.
3. Otherwise :func:`mathsft.equivalence.equivalent` (math-verify) decides.
4. ``grade_many`` runs all of this, extraction included, in killable worker processes under a per-answer time
   limit and CPU/memory limits: an item that exceeds ``timeout_s`` is recorded as ``timeout`` (incorrect).

Extraction and normalization are single linear passes without recursion, so no completion (deep nesting, 1 MB of
text, thousands of boxes) can make them slow. This module must stay cheap to import (no torch / transformers, and
math-verify only on first use): worker processes import it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing.connection import wait
from typing import IO, Any

# The equivalence backend: the one line to change to swap it (see mathsft/equivalence.py for the contract).
from mathsft import equivalence as _equivalence
from mathsft.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "RULES",
    "STATUSES",
    "GradeResult",
    "answers_match",
    "extract_answer",
    "extract_boxed_answer",
    "grade_many",
    "grade_one",
    "grader_identity",
    "normalize_answer",
    "validate_grader_timeout",
]

STATUSES = ("correct", "incorrect", "no_box", "timeout", "error")
# Which rule produced ``pred``: the last box alone, a trailing run of boxes joined, or no box at all.
RULES = ("single_box", "joined_run", "none")
# Bump when a change to extraction or normalization can change a grade: evaluation refuses to resume across it.
RULES_VERSION = "3"


@dataclass
class GradeResult:
    """The grade of one completion.

    ``pred`` is the extracted answer (``None`` when the completion has no complete box); ``status`` is one of
    ``"correct"``, ``"incorrect"``, ``"no_box"``, ``"timeout"``, ``"error"``. Only ``"correct"`` has ``correct=True``.
    ``rule`` (one of :data:`RULES`) says how ``pred`` was obtained. It describes the grade rather than being part of
    it, so it is left out of ``==``; when not given it is ``"none"`` without a prediction, else ``"single_box"``.
    """

    pred: str | None
    correct: bool
    status: str
    rule: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.rule:
            self.rule = "none" if self.pred is None else "single_box"


def grader_identity() -> dict[str, str]:
    """What decides the grades: the rules version, the equivalence module and the versions of its libraries.

    Evaluation records it in ``summary.json`` and refuses to resume an output graded by a different grader.
    """
    identity = {"rules_version": RULES_VERSION, "equivalence": _equivalence.__name__}
    for distribution in _equivalence.LIBRARIES:
        try:
            identity[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            identity[distribution] = "not installed"
    return identity


def validate_grader_timeout(value: Any, key: str = "grader_timeout", maximum: float = 600.0) -> float:
    """``value`` as seconds if it is a finite number in (0, ``maximum``]; otherwise a one-line :class:`UserError`
    naming ``key``.

    0 or a negative limit would mark every answer needing math-verify as ``timeout``; ``nan``, ``inf`` or hours
    would let one answer hang the evaluation (a correct answer grades in well under a second).
    """
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"{key} must be a finite number of seconds > 0, got {value!r}")
    if seconds > maximum:
        raise UserError(f"{key} must be at most {maximum:g} seconds per answer, got {value!r}")
    return seconds


# ----------------------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------------------

# One token per match, scanned left to right: a box command (`\boxed`, `\fbox`, not followed by a letter), a
# backslash directly before one (so a doubly escaped `\\boxed` still counts), any other escape pair (`\{`, `\}` and
# `\\` are not structure), or a brace.
_BOX_COMMAND = r"\\(?:boxed|fbox)(?![A-Za-z])"
_SCAN_RE = re.compile(rf"({_BOX_COMMAND})|\\(?={_BOX_COMMAND})|\\.|([{{}}])", re.DOTALL)
_BLANKS_RE = re.compile(r"[ \t]*")
# Whether a text can hold a box at all: a C-speed substring test (grade_many starts no worker for box-less batches).
_BOX_MARKERS = ("\\boxed", "\\fbox")
_BOX_TOKEN_RE = re.compile(r"[^\s$]+")
# Text allowed between the boxes of one answer: whitespace, `$`, commas, semicolons, `&`, connective words ("and",
# "or", "for part (a)"), spacing commands, line breaks, math delimiters, and `\text{...}` holding only those.
# Anything else is reasoning.
_CONNECTIVE_WORDS = r"\b(?:and|or|for|parts?)\b|\((?:[a-h]|i{1,3}|iv|v)\)"
_CONNECTIVE_RE = re.compile(
    rf"(?:\s|[$,;&~:]|{_CONNECTIVE_WORDS}|\\[,;:! ]|\\q?quad(?![A-Za-z])|\\\\|\\[()\[\]]"
    rf"|\\(?:text|textrm|textnormal|mbox|mathrm)\s*\{{(?:\s|[,;&:]|{_CONNECTIVE_WORDS})*\}})*"
)
# A label written just before a box of a multi-part answer: `x = \boxed{2}`, `y_2 = \boxed{..}`, `\theta=\boxed{..}`.
# It must start a formula or follow a word, so that `2x + y = \boxed{5}` has no label.
_LABEL_RE = re.compile(
    r"(?:(?<=[$(\[,;:{&\n])|(?<=[A-Za-z] )|^)\s*((?:[A-Za-z]|\\[A-Za-z]+)(?:_(?:\{[\w,]{1,8}\}|\w))?)\s*=\s*(?:\$\s*)?$"
)
_MAX_LABEL_CHARS = 40
# Longer gaps are never connective; this also bounds the regex work per gap.
_MAX_CONNECTIVE_CHARS = 200
# A reasoning block (Qwen3, DeepSeek-R1 style): boxes inside it are not the answer.
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# What makes a gold several values: a comma that is not a thousands separator, `;`, `\pm`, `\mp`, "and", "or".
_LIST_MARKER_RE = re.compile(r",(?!\d{3}(?!\d))|;|\\pm(?![A-Za-z])|\\mp(?![A-Za-z])|\b(?:and|or)\b")
# A trailing run of more boxes than this is not one answer (e.g. a degenerate repetition): the last box counts.
MAX_JOINED_BOXES = 12


@dataclass
class _Box:
    start: int  # index of the backslash of `\boxed`
    content_start: int
    braced: bool  # `\boxed{x}`, as opposed to the brace-less `\boxed x`
    end: int = -1  # index just past the closing `}` (or the brace-less token); -1 while the box is open
    parent: int = -1  # index of the nearest enclosing box, complete or not
    inside_complete: bool = False  # whether some enclosing box is complete (then this box is not an answer)


def _scan_boxes(text: str) -> list[_Box]:
    """Every box in ``text``, complete or not, in order of appearance, found in one left-to-right pass.

    Braces are matched with an explicit stack; a backslash escapes the next character. A box whose braces never
    close (generation cut off inside it) stays open (``end == -1``); boxes inside it can still be complete answers.
    """
    boxes: list[_Box] = []
    stack: list[tuple[int, int]] = []  # per open brace: (box index or -1, innermost open box outside this brace)
    innermost = -1
    pos, n = 0, len(text)
    while (m := _SCAN_RE.search(text, pos)) is not None:
        pos = m.end()
        if m.group(1) is not None:  # a box command
            blanks = _BLANKS_RE.match(text, pos)  # `\boxed {x}` is legal LaTeX
            k = blanks.end() if blanks else pos
            if k < n and text[k] == "{":
                boxes.append(_Box(start=m.start(), content_start=k + 1, braced=True, parent=innermost))
                stack.append((len(boxes) - 1, innermost))
                innermost = len(boxes) - 1
                pos = k + 1
            elif k > pos and (token := _BOX_TOKEN_RE.match(text, k)) is not None:
                # `\boxed 5` (as in a few MATH solutions): the token up to whitespace or `$`.
                boxes.append(_Box(m.start(), content_start=k, braced=False, end=token.end(), parent=innermost))
                pos = token.end()
        elif m.group(2) == "{":
            stack.append((-1, innermost))
        elif m.group(2) == "}" and stack:
            box_index, innermost = stack.pop()
            if box_index >= 0:
                boxes[box_index].end = m.end()
    for box in boxes:  # parents come before their children
        if box.parent >= 0:
            parent = boxes[box.parent]
            box.inside_complete = parent.end >= 0 or parent.inside_complete
    return boxes


def _box_content(text: str, boxes: list[_Box], index: int) -> str:
    """The content of complete box ``index`` with the wrappers of complete boxes inside it removed.

    `\\boxed{\\boxed{3}}` -> `3`, `\\boxed{x = \\boxed{3}}` -> `x = 3`: inner boxes are cut out by position, not by
    re-scanning, so any nesting depth costs one pass.
    """
    box = boxes[index]
    content_end = box.end - 1 if box.braced else box.end
    cuts: list[tuple[int, int]] = []
    for inner_index in range(index + 1, len(boxes)):
        inner = boxes[inner_index]
        if inner.start >= box.end:
            break
        if inner.end < 0:
            continue
        cuts.append((inner.start, inner.content_start))
        if inner.braced:
            cuts.append((inner.end - 1, inner.end))
    if not cuts:
        return text[box.content_start : content_end]
    cuts.sort()
    parts, pos = [], box.content_start
    for start, end in cuts:
        if start >= pos:
            parts.append(text[pos:start])
        pos = max(pos, end)
    parts.append(text[pos:content_end])
    return "".join(parts)


def _answer_boxes(text: str) -> tuple[list[_Box], list[int]]:
    """All boxes, and the indices of the complete boxes that are not inside another complete box, in order."""
    boxes = _scan_boxes(text)
    return boxes, [i for i, box in enumerate(boxes) if box.end >= 0 and not box.inside_complete]


def extract_boxed_answer(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` (or `\\fbox{...}`, `\\boxed x`) in ``text``.

    - Braces are balanced, so nested groups are kept: `\\boxed{\\frac{1}{2}}` -> `\\frac{1}{2}`.
    - Only the last top-level box counts: `\\boxed{3} ... wait ... \\boxed{4}` -> `4`.
    - Boxes nested in the chosen box are unwrapped: `\\boxed{\\boxed{3}}` -> `3`.
    - `\\boxed{}` -> `""` (a box, with an empty answer, graded incorrect).
    - A box cut off before its closing brace is ignored; the last *complete* box before it (if any) is the answer,
      otherwise the result is None (no box).

    This is the single-box rule only; :func:`extract_answer` also joins a trailing run of boxes.
    """
    text = _outside_reasoning(text)
    boxes, answers = _answer_boxes(text)
    return _box_content(text, boxes, answers[-1]).strip() if answers else None


def _label_before(text: str, start: int, floor: int = 0) -> tuple[str | None, int]:
    """The label written just before position ``start`` (`x = ` in `x = \\boxed{2}`), not before ``floor``, and
    where it begins."""
    m = _LABEL_RE.search(text, max(floor, start - _MAX_LABEL_CHARS), start)
    return (m.group(1), m.start()) if m else (None, start)


def _is_connective(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]``, the gap between two boxes, is only connective text (plus a label at its end)."""
    _, end = _label_before(text, end, floor=start)
    return end - start <= _MAX_CONNECTIVE_CHARS and _CONNECTIVE_RE.fullmatch(text, start, end) is not None


def _trailing_run(text: str, boxes: list[_Box], answers: list[int]) -> list[int]:
    """The answer boxes at the end of ``answers`` separated only by connective text (at least the last box)."""
    run = [answers[-1]]
    for index in reversed(answers[:-1]):
        if len(run) > MAX_JOINED_BOXES or not _is_connective(text, boxes[index].end, boxes[run[-1]].start):
            break
        run.append(index)
    return [answers[-1]] if len(run) > MAX_JOINED_BOXES else run[::-1]


def _tuple_shaped(gold: str) -> bool:
    """Whether ``gold`` is one parenthesized list, `(a, b)`: then separately boxed parts are compared in order.

    `(2, 2), (6, 2)` is a list of tuples, not one tuple; an unordered list such as `-2, 1` or `\\{1, 2\\}` is not
    tuple-shaped either.
    """
    s = normalize_answer(gold)
    if len(s) < 2 or s[0] != "(" or s[-1] != ")":
        return False
    depth, has_comma = 0, False
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False  # the first group closes before the end: `(a), (b)`
        elif ch == "," and depth == 1:
            has_comma = True
    return has_comma


def _outside_reasoning(text: str) -> str:
    """The part of ``text`` that can hold the answer: after the last `</think>`, and before a `<think>` that is
    never closed (a box inside the reasoning block is not the answer)."""
    close = text.rfind(_THINK_CLOSE)
    if close >= 0:
        text = text[close + len(_THINK_CLOSE) :]
    opening = text.find(_THINK_OPEN)
    return text if opening < 0 else text[:opening]


def _single_valued(gold: str) -> bool:
    """Whether ``gold`` is one value: no list comma (a thousands separator is none), `;`, `\\pm` or "and"/"or"."""
    return bool(gold.strip()) and _LIST_MARKER_RE.search(gold.replace("{,}", "").replace(",\\!", "")) is None


def extract_answer(completion: str, gold: str = "") -> tuple[str | None, str]:
    """The predicted answer of ``completion`` and the rule (one of :data:`RULES`) that produced it.

    - Only the text outside a `<think>` block counts (see :func:`_outside_reasoning`).
    - No complete box: ``(None, "none")``.
    - The completion ends in a run of boxes separated only by connective text (`$\\boxed{-2}$ and $\\boxed{1}$`,
      `\\boxed{(2,2)} \\quad \\text{and} \\quad \\boxed{(6,2)}`, `\\boxed{1},\\boxed{2}`): the distinct parts of the
      run, joined by ", " (an unordered list), or wrapped as `(a, b)` when ``gold`` is one parenthesized tuple.
      Rule ``"joined_run"``. A run that repeats one value (`\\boxed{17} or \\boxed{17}`) is that value, and so is
      the last box of a run whose ``gold`` is a single value with no comma (`\\boxed{1} and \\boxed{2}` against
      `2`), as in the last-box rule that made MATH's answers: rule ``"single_box"``.
    - Otherwise the last box (boxes separated by reasoning: the last one wins). Rule ``"single_box"``.
    """
    completion = _outside_reasoning(completion)
    boxes, answers = _answer_boxes(completion)
    if not answers:
        return None, "none"
    run = _trailing_run(completion, boxes, answers)
    if len(run) == 1 or _single_valued(gold):
        return _box_content(completion, boxes, run[-1]).strip(), "single_box"
    parts: list[str] = []
    seen: set[str] = set()
    floor = 0
    for index in run:
        part = _box_content(completion, boxes, index).strip()
        label, _ = _label_before(completion, boxes[index].start, floor)
        floor = boxes[index].end
        if label is not None:  # `x = \boxed{2}, y = \boxed{3}` -> `x = 2, y = 3`
            part = f"{label} = {part}"
        key = normalize_answer(part)
        if key not in seen:
            seen.add(key)
            parts.append(part)
    if len(parts) == 1:
        return parts[0], "single_box"
    joined = ", ".join(parts)
    # The parts are the components of a tuple gold only when they are not themselves lists or tuples.
    as_tuple = _tuple_shaped(gold) and not any(_tuple_shaped(part) or "," in part for part in parts)
    return (f"({joined})" if as_tuple else joined), "joined_run"


def _as_text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _gold_answer(gold: Any) -> str:
    """The reference answer as a string; a reference written as a boxed solution is reduced to its box."""
    gold = _as_text(gold)  # datasets sometimes hold integer answers
    if any(marker in gold for marker in _BOX_MARKERS):
        answer, _ = extract_answer(gold)
        if answer is not None:
            return answer
    return gold


# ----------------------------------------------------------------------------------------------------------------
# String normalization (the cheap path, also used as the majority-vote key)
# ----------------------------------------------------------------------------------------------------------------

# Wrapper commands whose content is kept (`\text{cm}` -> `cm`), brace escapes, and braces, in one scan.
_WRAPPER_SCAN_RE = re.compile(
    r"(\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|mathit)\s*\{)|\\.|([{}])", re.DOTALL
)
# A `\\` pair (row separator) is matched first so that `\\ ` is never read as the spacing command `\ `.
_SPACING_RE = re.compile(r"(\\\\)|\\[!,;:> ]|\\q?quad(?![A-Za-z])|~")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])\.?")
_DFRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|°")
_WHITESPACE_RE = re.compile(r"\s+")


def _unwrap_wrappers(text: str) -> str:
    """Replace every closed `\\text{content}` (and `\\mbox`, `\\mathrm`, ...) by `content`, at any depth.

    One pass with a brace stack: each wrapper whose brace closes loses its opening `\\text{` and its closing `}`.
    An unclosed wrapper is left as it is.
    """
    cuts: list[tuple[int, int]] = []
    stack: list[tuple[int, int] | None] = []  # per open brace: the span of its wrapper's `\text{`, or None
    pos = 0
    while (m := _WRAPPER_SCAN_RE.search(text, pos)) is not None:
        pos = m.end()
        if m.group(1) is not None:
            stack.append(m.span())
        elif m.group(2) == "{":
            stack.append(None)
        elif m.group(2) == "}" and stack:
            opening = stack.pop()
            if opening is not None:
                cuts.append(opening)
                cuts.append(m.span())
    if not cuts:
        return text
    cuts.sort()
    parts, pos = [], 0
    for start, end in cuts:
        parts.append(text[pos:start])
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def normalize_answer(answer: str) -> str:
    """A whitespace- and markup-insensitive form of an answer string, for exact matching and vote grouping.

    Two answers with the same normalized form are graded equal without calling math-verify, so this only removes
    markup that never changes the value: whitespace, `\\left`/`\\right`, spacing commands (`\\!`, `\\,`, ...),
    `\\dfrac`/`\\tfrac`, degree signs, `\\text{}`-like wrappers, dollar signs and trailing periods.
    """
    s = _unwrap_wrappers(answer.strip())
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _SPACING_RE.sub(lambda m: m.group(1) or "", s)
    s = _DFRAC_RE.sub(r"\\frac", s)
    s = _DEGREE_RE.sub("", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "%")
    s = _WHITESPACE_RE.sub("", s)
    return s.rstrip(".")


# ----------------------------------------------------------------------------------------------------------------
# Grading one answer (in this process, no time bound)
# ----------------------------------------------------------------------------------------------------------------


_BARE_CHOICE_RE = re.compile(r"\(?([A-E])\)?")
_LABELLED_CHOICE_RE = re.compile(r"\(([A-E])\)")


def _choice_verdict(norm_pred: str, norm_gold: str) -> bool | None:
    """Multiple choice: a bare letter (`C`, `(C)`) against a labelled option (`(C) 15`) compares the letters.

    Both letters are compared only when one side is nothing but a letter and the other starts with a letter in
    parentheses; a bare letter on both sides is left to the general rules (`A` can be a variable).
    """
    for bare, labelled in ((norm_gold, norm_pred), (norm_pred, norm_gold)):
        if (b := _BARE_CHOICE_RE.fullmatch(bare)) and (lab := _LABELLED_CHOICE_RE.match(labelled)):
            if lab.end() < len(labelled):
                return b.group(1) == lab.group(1)
    return None


def _string_match(pred: str, gold: str) -> bool | None:
    """The cheap verdict: True for equal normalized strings, False for an empty side, None when undecided."""
    norm_pred, norm_gold = normalize_answer(pred), normalize_answer(gold)
    if not norm_pred or not norm_gold:
        return False
    if norm_pred == norm_gold:
        return True
    return _choice_verdict(norm_pred, norm_gold)


def answers_match(pred: str, gold: str) -> bool:
    """Whether the extracted answer ``pred`` is equivalent to the reference answer ``gold``.

    In-process and without a time bound: use :func:`grade_many` for untrusted input.
    """
    verdict = _string_match(pred, gold)
    return verdict if verdict is not None else _equivalence.equivalent(pred, gold)


def _grade_pred(pred: str | None, rule: str, gold: str) -> GradeResult:
    """Grade an already extracted answer (None = no box)."""
    if pred is None:
        return GradeResult(pred=None, correct=False, status="no_box", rule="none")
    try:
        correct = answers_match(pred, gold)
    except Exception:  # math-verify / sympy can raise (or run out of memory) on odd input: a wrong answer, not a crash
        logger.debug("grading error", exc_info=True)
        return GradeResult(pred=pred, correct=False, status="error", rule=rule)
    return GradeResult(pred=pred, correct=correct, status="correct" if correct else "incorrect", rule=rule)


def grade_one(completion: str, gold: str) -> GradeResult:
    """Grade one completion against its reference answer, in this process and without a time bound."""
    gold = _gold_answer(gold)
    pred, rule = extract_answer(_as_text(completion), gold)
    return _grade_pred(pred, rule, gold)


# ----------------------------------------------------------------------------------------------------------------
# Time-bounded grading in killable worker processes
# ----------------------------------------------------------------------------------------------------------------

_READY = "ready"
# How long a fresh worker may take to import sympy/math-verify before we give up on it.
_STARTUP_TIMEOUT_S = 120.0
_MAX_START_FAILURES = 3
# Address-space cap of a worker (an idle one uses ~0.4 GiB of address space).
WORKER_MEMORY_LIMIT_BYTES = 4 * 1024**3
# CPU seconds an item may use beyond `timeout_s` before the kernel kills the worker. The parent kills it at
# `timeout_s` already; this only stops a worker orphaned by a parent that died, since CPU time limits (unlike
# signals handled by Python) also stop a computation stuck inside one C call.
_ORPHAN_CPU_MARGIN_S = 60


def _worker_main(cpu_limit_s: int | None = None) -> None:
    """Worker loop: grade ``[index, completion, gold]`` JSON lines from stdin.

    For each item it writes two JSON lines: ``{"i", "pred", "rule"}`` once the answer is extracted (so a later
    timeout still knows the prediction), then ``{"i", "correct", "status"}``. With ``cpu_limit_s``, the kernel kills
    the worker once one item has used that many CPU seconds.
    """
    # Keep a private copy of stdout for the protocol and point fd 1 (and sys.stdout) at stderr, so that stray
    # output from Python or C code cannot corrupt it.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _limit_memory()

    def send(message: Any) -> None:
        out.write(json.dumps(message) + "\n")  # ASCII: lone surrogates and null bytes travel escaped
        out.flush()

    # Warm up imports and the LaTeX parser so the first item's time limit is not spent importing sympy.
    grade_one("\\boxed{1}", "\\frac{2}{2}")
    send(_READY)
    for line in sys.stdin:
        index, completion, gold = json.loads(line)
        if cpu_limit_s is not None:
            _limit_cpu(cpu_limit_s)
        gold = _gold_answer(gold)
        pred, rule = extract_answer(completion, gold)
        send({"i": index, "pred": pred, "rule": rule})
        result = _grade_pred(pred, rule, gold)
        send({"i": index, "correct": result.correct, "status": result.status})


# The worker is this module's `_worker_main`, named from the objects themselves so a rename cannot leave it stale.
_WORKER_BOOTSTRAP = f"from {__name__} import {_worker_main.__name__}; {_worker_main.__name__}({{cpu_limit_s}})"


def _limit_cpu(seconds: int) -> None:
    """Let the kernel kill this process (SIGXCPU) after ``seconds`` more CPU seconds."""
    try:
        import resource
    except ImportError:
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime) + 1 + seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ValueError, OSError):
        pass


def _limit_memory() -> None:
    """Cap the worker's address space, so that a huge power (`2^{2^{34}}` grows ~40 MB/s) fails with MemoryError
    ("error") rather than pushing the machine into swap before the time limit kills it."""
    try:
        import resource
    except ImportError:  # not on Unix: rely on the time limit alone
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = WORKER_MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(hard, WORKER_MEMORY_LIMIT_BYTES)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass


class _Worker:
    """One grading process, the pipes to it, and the item it is grading."""

    def __init__(self, timeout_s: float) -> None:
        env = dict(os.environ)
        # The child must import the same `mathsft` (and math-verify) as this process, installed or not.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join([package_root] + [p or os.getcwd() for p in sys.path])
        env.setdefault("OMP_NUM_THREADS", "1")
        cpu_limit_s = math.ceil(timeout_s) + _ORPHAN_CPU_MARGIN_S
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOTSTRAP.format(cpu_limit_s=cpu_limit_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.started_at = time.monotonic()
        self.ready = False
        self.task: int | None = None  # index of the item being graded
        self.deadline = 0.0
        self._buffer = b""

    def fileno(self) -> int:
        """Lets ``multiprocessing.connection.wait`` watch the worker's stdout."""
        return self.stdout.fileno()

    def submit(self, index: int, completion: str, gold: str, timeout_s: float) -> None:
        try:
            self.stdin.write(json.dumps([index, completion, gold]).encode("ascii") + b"\n")
            self.stdin.flush()
        except OSError:
            pass  # the worker died; its stdout reaches EOF and the item is recorded as an error
        self.task = index
        self.deadline = time.monotonic() + timeout_s

    def read_messages(self) -> list[Any] | None:
        """The complete messages available now (possibly none), or None when the worker is dead or garbled.

        Reads the raw pipe, so a message split over several reads, or several messages in one read, are handled
        without a buffered reader hiding data from ``wait``.
        """
        chunk = os.read(self.fileno(), 1 << 16)
        if not chunk:
            return None
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        try:
            return [json.loads(line) for line in lines]
        except ValueError:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.stdin, self.stdout):
            try:
                f.close()
            except OSError:
                pass

    def stop(self) -> None:
        try:
            self.stdin.close()  # EOF ends the worker loop
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def grade_many(
    items: Sequence[tuple[str, str]],
    timeout_s: float = 5.0,
    num_workers: int | None = None,
    progress: bool = False,
) -> list[GradeResult]:
    """Grade ``(completion, gold)`` pairs with a hard per-item time limit; results are in input order.

    Each item (extraction, string match and math-verify) runs in one of ``num_workers`` (default ``os.cpu_count()``)
    worker processes under CPU and memory limits. An item still running ``timeout_s`` seconds after it was handed
    out gets status ``"timeout"`` (incorrect; ``pred`` is kept when extraction had finished), and its worker is
    killed and replaced. An item whose worker dies (crash, out of memory) gets status ``"error"``. Completions that
    contain no box command at all are ``no_box`` without starting a worker.
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
    completions = [_as_text(completion) for completion, _ in items]
    golds = [_as_text(gold) for _, gold in items]
    results: list[GradeResult | None] = [None] * len(items)
    pending = []
    for i, completion in enumerate(completions):
        if any(marker in completion for marker in _BOX_MARKERS):
            pending.append(i)
        else:
            results[i] = GradeResult(pred=None, correct=False, status="no_box", rule="none")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="grading", initial=len(items) - len(pending))
    try:
        if pending:
            pool = _Pool(completions, golds, results, timeout_s, bar)
            pool.run(pending, num_workers or os.cpu_count() or 1)
    finally:
        if bar is not None:
            bar.close()
    return [r if r is not None else GradeResult(pred=None, correct=False, status="error") for r in results]


class _Pool:
    """Drives worker processes until every pending item of one :func:`grade_many` call has a result."""

    def __init__(
        self,
        completions: list[str],
        golds: list[str],
        results: list[GradeResult | None],
        timeout_s: float,
        bar: Any,
    ) -> None:
        self.completions, self.golds, self.results = completions, golds, results
        self.timeout_s = timeout_s
        self.bar = bar
        self.extracted: dict[int, tuple[str | None, str]] = {}  # index -> (pred, rule) reported by a worker
        self.remaining = 0
        self.start_failures = 0

    def record(self, index: int, correct: bool, status: str) -> None:
        pred, rule = self.extracted.pop(index, (None, "none"))
        self.results[index] = GradeResult(pred=pred, correct=correct, status=status, rule=rule)
        self.remaining -= 1
        if self.bar is not None:
            self.bar.update(1)

    def run(self, pending: list[int], num_workers: int) -> None:
        queue = list(reversed(pending))  # pop() from the end = input order
        self.remaining = len(pending)
        workers = [_Worker(self.timeout_s) for _ in range(min(num_workers, len(pending)))]
        try:
            while self.remaining > 0:
                for w in workers:
                    if w.ready and w.task is None and queue:
                        i = queue.pop()
                        w.submit(i, self.completions[i], self.golds[i], self.timeout_s)
                readable = wait(workers, timeout=self._wait_seconds(workers))  # type: ignore[arg-type]  # has fileno
                for k, w in enumerate(workers):
                    if not self._serve(w, w in readable):
                        w.kill()
                        workers[k] = _Worker(self.timeout_s)
        finally:
            for w in workers:
                w.stop()

    def _wait_seconds(self, workers: list[_Worker]) -> float | None:
        deadlines = [
            w.deadline if w.ready else w.started_at + _STARTUP_TIMEOUT_S
            for w in workers
            if w.task is not None or not w.ready
        ]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _serve(self, w: _Worker, readable: bool) -> bool:
        """Handle one worker's messages and deadlines; False when it must be replaced."""
        if readable:
            messages = w.read_messages()
            if messages is None:  # EOF or garbage: the process died (crash, killed by the OS)
                if w.task is not None:
                    self.record(w.task, False, "error")
                elif not w.ready:
                    self.start_failures += 1
                    if self.start_failures > _MAX_START_FAILURES:
                        raise RuntimeError("grading worker processes keep dying at start-up")
                return False
            for message in messages:
                if message == _READY:
                    w.ready = True
                elif "pred" in message:
                    self.extracted[message["i"]] = (message["pred"], message["rule"])
                else:
                    w.task = None
                    self.record(message["i"], message["correct"], message["status"])
        now = time.monotonic()
        if w.task is not None and now >= w.deadline:
            self.record(w.task, False, "timeout")
            return False
        if not w.ready and now >= w.started_at + _STARTUP_TIMEOUT_S:
            raise RuntimeError(f"grading worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")
        return True
