"""Answer grading for MATH-style completions: last-box extraction, math-verify equivalence and a hard time bound.

Usage::

    from mathsft.grading import grade_many, grade_one

    grade_one("... so the answer is $\\boxed{\\frac12}$.", "0.5")  # GradeResult(pred='\\frac12', correct=True, ...)
    results = grade_many([(completion, gold), ...], timeout_s=5.0)

The rules are documented in ``docs/grading.md``. In short:

1. The prediction is the content of the **last complete** ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x`` in the
   completion. No box means ``no_box`` (incorrect); there is no "last number in the text" fallback.
2. A cheap normalized string match (spaces, ``\\left``/``\\right``, ``\\dfrac``, ``^\\circ``, ``\\text{}`` ...)
   counts as correct.
3. Otherwise both strings are wrapped in ``$...$`` and compared with math-verify (``parse`` + ``verify``), with a
   guard against math-verify silently parsing only part of a string.
4. ``grade_many`` runs step 3 in killable worker processes: an item that exceeds ``timeout_s`` is recorded as
   ``timeout`` (incorrect) and its worker is replaced, because math-verify's own signal-based timeout cannot
   interrupt some sympy computations (e.g. ``5^{5^{5^{5^5}}}``).

This module must stay cheap to import (no torch / transformers): worker processes import it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "STATUSES",
    "GradeResult",
    "answers_match",
    "extract_boxed_answer",
    "grade_many",
    "grade_one",
    "normalize_answer",
]

STATUSES = ("correct", "incorrect", "no_box", "timeout", "error")


@dataclass
class GradeResult:
    """The grade of one completion.

    ``pred`` is the extracted answer (``None`` when the completion has no complete box); ``status`` is one of
    ``"correct"``, ``"incorrect"``, ``"no_box"``, ``"timeout"``, ``"error"``. Only ``"correct"`` has ``correct=True``.
    """

    pred: str | None
    correct: bool
    status: str


# ----------------------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------------------

# `\boxed` or `\fbox` not followed by a letter (so `\boxedness` is not a box).
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BOX_TOKEN_RE = re.compile(r"[^\s$]+")


def _brace_pairs(text: str) -> dict[int, int]:
    """Map the index of every balanced `{` to the index just past its `}`, in one pass.

    A backslash escapes the next character, so `\\{`/`\\}` (literal braces, e.g. sets) are not counted, while
    `\\\\{` (a line break, then a group) is. Unclosed `{` (a cut-off generation) and stray `}` get no entry.
    One linear pass keeps extraction linear even on degenerate outputs that repeat `\\boxed{` thousands of times.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i + 1
        i += 1
    return pairs


def _find_boxes(text: str) -> list[tuple[int, int, str]]:
    """All complete top-level boxes as ``(start, end, content)``, left to right.

    A box whose braces never close (generation cut off inside it) is skipped, and scanning resumes right after its
    `\\boxed` token, so a complete box written after the dangling brace is still found.
    """
    boxes: list[tuple[int, int, str]] = []
    pairs = _brace_pairs(text)
    pos = 0
    while (m := _BOX_RE.search(text, pos)) is not None:
        j = k = m.end()
        while k < len(text) and text[k] in " \t":  # `\boxed {x}` is legal LaTeX
            k += 1
        if k < len(text) and text[k] == "{":
            end = pairs.get(k)
            if end is None:
                pos = j  # truncated box: ignore it, but keep looking inside it
                continue
            boxes.append((m.start(), end, text[k + 1 : end - 1]))
            pos = end
        elif k > j and (tok := _BOX_TOKEN_RE.match(text, k)) is not None:
            # `\boxed 5` (as in a few MATH solutions): the token up to whitespace or `$`.
            boxes.append((m.start(), tok.end(), tok.group(0)))
            pos = tok.end()
        else:
            pos = j  # `\boxed` followed by nothing usable: not a box
    return boxes


def _unwrap_inner_boxes(content: str) -> str:
    """Remove box wrappers inside a box: `\\boxed{\\boxed{3}}` -> `3`, `\\boxed{x=\\boxed{3}}` -> `x=3`."""
    for _ in range(10):  # bounded: boxes are rarely nested more than twice
        boxes = _find_boxes(content)
        if not boxes:
            break
        parts = []
        last = 0
        for start, end, inner in boxes:
            parts.append(content[last:start])
            parts.append(inner)
            last = end
        parts.append(content[last:])
        content = "".join(parts)
    return content


def extract_boxed_answer(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` (or `\\fbox{...}`, `\\boxed x`) in ``text``.

    - Braces are balanced, so nested groups are kept: `\\boxed{\\frac{1}{2}}` -> `\\frac{1}{2}`.
    - Only the last top-level box counts: `\\boxed{3} ... wait ... \\boxed{4}` -> `4`.
    - Boxes nested in the chosen box are unwrapped: `\\boxed{\\boxed{3}}` -> `3`.
    - `\\boxed{}` -> `""` (a box, with an empty answer, graded incorrect).
    - A box cut off before its closing brace is ignored; the last *complete* box before it (if any) is the answer,
      otherwise the result is None (no box).
    """
    boxes = _find_boxes(text)
    if not boxes:
        return None
    return _unwrap_inner_boxes(boxes[-1][2]).strip()


# ----------------------------------------------------------------------------------------------------------------
# String normalization (the cheap path, also used as the majority-vote key)
# ----------------------------------------------------------------------------------------------------------------

_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|mathit)\s*\{")
# A `\\` pair (row separator) is matched first so that `\\ ` is never read as the spacing command `\ `.
_SPACING_RE = re.compile(r"(\\\\)|\\[!,;:> ]|\\q?quad(?![A-Za-z])|~")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])\.?")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|°")


def _unwrap_command(text: str, pattern: re.Pattern[str]) -> str:
    """Replace every `\\cmd{content}` matched by ``pattern`` (which ends at the `{`) by `content`, recursively."""
    out = []
    pairs = _brace_pairs(text)
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        end = pairs.get(m.end() - 1)
        if end is None:  # unclosed: leave it as it is
            out.append(text[pos : m.end()])
        else:
            out.append(text[pos : m.start()])
            out.append(_unwrap_command(text[m.end() : end - 1], pattern))
        pos = m.end() if end is None else end
    out.append(text[pos:])
    return "".join(out)


def normalize_answer(answer: str) -> str:
    """A whitespace- and markup-insensitive form of an answer string, for exact matching and vote grouping.

    Two answers with the same normalized form are graded equal without calling math-verify, so this only removes
    markup that never changes the value: whitespace, `\\left`/`\\right`, spacing commands (`\\!`, `\\,`, ...),
    `\\dfrac`/`\\tfrac`, degree signs, `\\text{}`-like wrappers, dollar signs and trailing periods.
    """
    s = _unwrap_command(answer.strip(), _TEXT_WRAPPER_RE)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _SPACING_RE.sub(lambda m: m.group(1) or "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = _DEGREE_RE.sub("", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "%")
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


# ----------------------------------------------------------------------------------------------------------------
# Equivalence
# ----------------------------------------------------------------------------------------------------------------

_MV_SILENCED = False


def _silence_math_verify() -> None:
    """math-verify logs a warning when its signal timeouts are disabled, and on every parse failure; we handle both."""
    global _MV_SILENCED
    if not _MV_SILENCED:
        for name in ("math_verify", "latex2sympy2_extended"):
            logging.getLogger(name).setLevel(logging.ERROR)
        _MV_SILENCED = True


def _to_math_mode(answer: str) -> str:
    """Wrap an answer in `$...$` so math-verify's LaTeX extractor takes the whole string.

    Bare strings go through its plain-expression extractor, which misreads `1,2,3` as 1.2 and `5\\sqrt{2}` as 5.
    Inline math may not contain newlines or unescaped dollars, so both are removed first.
    """
    s = answer.replace("\n", " ").replace("\r", " ")
    s = re.sub(r"(?<!\\)\$", "", s)
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
    whole = extracted is not None and re.sub(r"\s+", "", extracted) == re.sub(r"\s+", "", expected)
    return parsed, whole


def answers_match(pred: str, gold: str) -> bool:
    """Whether the extracted answer ``pred`` is equivalent to the reference answer ``gold``.

    In-process and without a time bound: use :func:`grade_many` for untrusted input.
    """
    norm_pred, norm_gold = normalize_answer(pred), normalize_answer(gold)
    if not norm_pred or not norm_gold:
        return False
    if norm_pred == norm_gold:
        return True

    from math_verify import verify

    _silence_math_verify()
    gold_parsed, gold_whole = _parse(gold)
    pred_parsed, pred_whole = _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    if not (gold_whole and pred_whole):
        # A partial parse can only be trusted to say "different"; equality would rest on an ignored remainder.
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def grade_one(completion: str, gold: str) -> GradeResult:
    """Grade one completion against its reference answer, in this process and without a time bound."""
    pred = extract_boxed_answer(completion)
    if pred is None:
        return GradeResult(pred=None, correct=False, status="no_box")
    try:
        correct = answers_match(pred, gold)
    except Exception:  # math-verify / sympy can raise on odd input; that is a wrong answer, not a crash
        logger.debug("grading error", exc_info=True)
        return GradeResult(pred=pred, correct=False, status="error")
    return GradeResult(pred=pred, correct=correct, status="correct" if correct else "incorrect")


def _grade_cheap(completion: str, gold: str) -> GradeResult | None:
    """The part of :func:`grade_one` that cannot hang (no sympy): a result, or None when math-verify is needed."""
    pred = extract_boxed_answer(completion)
    if pred is None:
        return GradeResult(pred=None, correct=False, status="no_box")
    norm_pred, norm_gold = normalize_answer(pred), normalize_answer(gold)
    if not norm_pred or not norm_gold:
        return GradeResult(pred=pred, correct=False, status="incorrect")
    if norm_pred == norm_gold:
        return GradeResult(pred=pred, correct=True, status="correct")
    return None


# ----------------------------------------------------------------------------------------------------------------
# Time-bounded grading in killable worker processes
# ----------------------------------------------------------------------------------------------------------------

# Workers are fresh interpreters running this module, not multiprocessing children: fork is unsafe once torch's
# thread pools exist, and spawn/forkserver re-run the caller's ``__main__`` in every worker (an evaluation script
# importing torch at the top costs ~1.7 s and ~225 MB per worker that way, against ~0.5 s and ~60 MB for
# sympy/math-verify alone). Requests and results travel as JSON lines over the worker's stdin/stdout.
_WORKER_BOOTSTRAP = "from mathsft.grading import _worker_main; _worker_main()"
_READY = "ready"
# How long a fresh worker may take to import sympy/math-verify before we give up on it.
_STARTUP_TIMEOUT_S = 120.0
_MAX_START_FAILURES = 3


def _worker_main() -> None:
    """Worker loop: answer ``[index, completion, gold]`` JSON lines on stdin with ``[index, pred, correct, status]``."""
    import sys

    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints from libraries must not corrupt the protocol
    _silence_math_verify()
    # Warm up imports and the LaTeX parser so the first item's time limit is not spent importing sympy.
    answers_match("1", "\\frac{2}{2}")
    out.write(json.dumps(_READY) + "\n")
    out.flush()
    for line in sys.stdin:
        index, completion, gold = json.loads(line)
        r = grade_one(completion, gold)
        out.write(json.dumps([index, r.pred, r.correct, r.status]) + "\n")
        out.flush()


class _Worker:
    """One grading process and the pipes to it."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # The child must import the same `mathsft` (and math-verify) as this process, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOTSTRAP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
        )
        self.started_at = time.monotonic()
        self.ready = False
        self.task: int | None = None  # index of the item being graded
        self.deadline = 0.0

    def fileno(self) -> int:
        """Lets ``multiprocessing.connection.wait`` watch the worker's stdout."""
        return self.proc.stdout.fileno()

    def submit(self, index: int, completion: str, gold: str, timeout_s: float) -> None:
        self.proc.stdin.write(json.dumps([index, completion, gold]) + "\n")
        self.proc.stdin.flush()
        self.task = index
        self.deadline = time.monotonic() + timeout_s

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def stop(self) -> None:
        try:
            self.proc.stdin.close()  # EOF ends the worker loop
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

    Extraction and the string match run here (they cannot hang). The rest runs in ``num_workers`` (default
    ``os.cpu_count()``) worker processes; an item still running ``timeout_s`` seconds after it was handed out gets
    status ``"timeout"`` (incorrect), and its worker is killed and replaced. An item whose worker dies (crash, out
    of memory) gets status ``"error"``.
    """
    results: list[GradeResult | None] = [None] * len(items)
    pending: list[int] = []
    for i, (completion, gold) in enumerate(items):
        cheap = _grade_cheap(completion, gold)
        if cheap is None:
            pending.append(i)
        else:
            results[i] = cheap

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="grading", initial=len(items) - len(pending))
    try:
        if pending:
            _run_pool(items, pending, results, timeout_s, num_workers or os.cpu_count() or 1, bar)
    finally:
        if bar is not None:
            bar.close()
    return [r if r is not None else GradeResult(pred=None, correct=False, status="error") for r in results]


def _failed(completion: str, status: str) -> GradeResult:
    """An incorrect result for an item whose worker timed out or died."""
    return GradeResult(pred=extract_boxed_answer(completion), correct=False, status=status)


def _run_pool(
    items: Sequence[tuple[str, str]],
    pending: list[int],
    results: list[GradeResult | None],
    timeout_s: float,
    num_workers: int,
    bar: Any,
) -> None:
    """Drive the worker pool until every index in ``pending`` has a result."""
    queue = list(reversed(pending))  # pop() from the end = input order
    workers: list[_Worker] = []
    start_failures = 0
    remaining = len(pending)

    def record(index: int, result: GradeResult) -> None:
        nonlocal remaining
        results[index] = result
        remaining -= 1
        if bar is not None:
            bar.update(1)

    try:
        workers = [_Worker() for _ in range(min(num_workers, len(pending)))]
        while remaining > 0:
            for w in workers:
                if w.ready and w.task is None and queue:
                    i = queue.pop()
                    w.submit(i, items[i][0], items[i][1], timeout_s)

            deadlines = [w.deadline if w.ready else w.started_at + _STARTUP_TIMEOUT_S for w in workers if
                         w.task is not None or not w.ready]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            readable = wait(workers, timeout=wait_s)

            for k, w in enumerate(workers):
                if w in readable:
                    line = w.proc.stdout.readline()
                    if line:
                        msg = json.loads(line)
                        if msg == _READY:
                            w.ready = True
                        else:
                            index, pred, correct, status = msg
                            w.task = None
                            record(index, GradeResult(pred=pred, correct=correct, status=status))
                        continue
                    # EOF: the process died (crash, OOM kill). Its item is an error; the worker is replaced.
                    if w.task is not None:
                        record(w.task, _failed(items[w.task][0], "error"))
                    elif not w.ready:
                        start_failures += 1
                        if start_failures > _MAX_START_FAILURES:
                            raise RuntimeError("grading worker processes keep dying at start-up")
                    w.kill()
                    workers[k] = _Worker()
                    continue
                now = time.monotonic()
                if w.task is not None and now >= w.deadline:
                    record(w.task, _failed(items[w.task][0], "timeout"))
                    w.kill()
                    workers[k] = _Worker()
                elif not w.ready and now >= w.started_at + _STARTUP_TIMEOUT_S:
                    raise RuntimeError(f"grading worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")
    finally:
        for w in workers:
            w.stop()
