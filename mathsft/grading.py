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
import math
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


def _silence_math_verify() -> None:
    """Skip math-verify's one-time "timeout is disabled" warnings: we disable its signal timeouts on purpose, because
    the time bound comes from killable worker processes (see :func:`grade_many`)."""
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


def _string_match(pred: str, gold: str) -> bool | None:
    """The cheap verdict: True for equal normalized strings, False for an empty side, None when undecided."""
    norm_pred, norm_gold = normalize_answer(pred), normalize_answer(gold)
    if not norm_pred or not norm_gold:
        return False
    if norm_pred == norm_gold:
        return True
    return None


def _math_verify_match(pred: str, gold: str) -> bool:
    """math-verify's verdict on two answer strings (no time bound; math-verify's own signal timeouts are off)."""
    from math_verify import verify

    _silence_math_verify()
    gold_parsed, gold_whole = _parse(gold)
    pred_parsed, pred_whole = _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    if not (gold_whole and pred_whole):
        # A partial parse can only be trusted to say "different": equality could rest on the ignored remainder.
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def answers_match(pred: str, gold: str) -> bool:
    """Whether the extracted answer ``pred`` is equivalent to the reference answer ``gold``.

    In-process and without a time bound: use :func:`grade_many` for untrusted input.
    """
    verdict = _string_match(pred, gold)
    return verdict if verdict is not None else _math_verify_match(pred, gold)


def _grade_pred(pred: str | None, gold: str) -> GradeResult:
    """Grade an already extracted answer (None = no box)."""
    if pred is None:
        return GradeResult(pred=None, correct=False, status="no_box")
    try:
        correct = answers_match(pred, gold)
    except Exception:  # math-verify / sympy can raise (or run out of memory) on odd input: a wrong answer, not a crash
        logger.debug("grading error", exc_info=True)
        return GradeResult(pred=pred, correct=False, status="error")
    return GradeResult(pred=pred, correct=correct, status="correct" if correct else "incorrect")


def grade_one(completion: str, gold: str) -> GradeResult:
    """Grade one completion against its reference answer, in this process and without a time bound."""
    return _grade_pred(extract_boxed_answer(completion or ""), str(gold))


# ----------------------------------------------------------------------------------------------------------------
# Time-bounded grading in killable worker processes
# ----------------------------------------------------------------------------------------------------------------

# Workers are fresh interpreters running this module, not multiprocessing children: fork is unsafe once torch's
# thread pools exist, and spawn/forkserver re-run the caller's ``__main__`` in every worker (an evaluation script
# importing torch at the top costs ~1.7 s and ~225 MB per worker that way, against ~0.5 s and ~60 MB for
# sympy/math-verify alone). Requests and results travel as JSON lines over the worker's stdin/stdout.
_WORKER_BOOTSTRAP = "from mathsft.grading import _worker_main; _worker_main({cpu_limit_s})"
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
    """Worker loop: answer ``[index, pred, gold]`` JSON lines on stdin with ``[index, correct, status]`` lines.

    With ``cpu_limit_s``, the kernel kills the worker once one item has used that many CPU seconds.
    """
    # Keep a private copy of stdout for the protocol and point fd 1 (and sys.stdout) at stderr, so that stray
    # output from Python or C code cannot corrupt it.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _limit_memory()
    _silence_math_verify()
    # Warm up imports and the LaTeX parser so the first item's time limit is not spent importing sympy.
    answers_match("1", "\\frac{2}{2}")
    out.write(json.dumps(_READY) + "\n")
    out.flush()
    for line in sys.stdin:
        index, pred, gold = json.loads(line)
        if cpu_limit_s is not None:
            _limit_cpu(cpu_limit_s)
        r = _grade_pred(pred, gold)
        out.write(json.dumps([index, r.correct, r.status]) + "\n")
        out.flush()


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
    """One grading process and the pipes to it."""

    def __init__(self, timeout_s: float) -> None:
        env = dict(os.environ)
        # The child must import the same `mathsft` (and math-verify) as this process, installed or not.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join([package_root] + [p or os.getcwd() for p in sys.path])
        env.setdefault("OMP_NUM_THREADS", "1")
        cpu_limit_s = math.ceil(timeout_s) + _ORPHAN_CPU_MARGIN_S if math.isfinite(timeout_s) else None
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOTSTRAP.format(cpu_limit_s=cpu_limit_s)],
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

    def submit(self, index: int, pred: str, gold: str, timeout_s: float) -> None:
        try:
            self.proc.stdin.write(json.dumps([index, pred, gold]) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the worker died; its stdout reaches EOF and the item is recorded as an error
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
    preds = [extract_boxed_answer(completion or "") for completion, _ in items]
    golds = [str(gold) for _, gold in items]  # datasets sometimes hold integer answers
    pending: list[int] = []
    for i, (pred, gold) in enumerate(zip(preds, golds, strict=True)):
        verdict = None if pred is None else _string_match(pred, gold)
        if pred is None or verdict is not None:
            results[i] = _grade_pred(pred, gold)  # no box, or decided by the string match: no sympy involved
        else:
            pending.append(i)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="grading", initial=len(items) - len(pending))
    try:
        if pending:
            _run_pool(preds, golds, pending, results, timeout_s, num_workers or os.cpu_count() or 1, bar)
    finally:
        if bar is not None:
            bar.close()
    return [r if r is not None else GradeResult(pred=None, correct=False, status="error") for r in results]


def _run_pool(
    preds: list[str | None],
    golds: list[str],
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
        workers = [_Worker(timeout_s) for _ in range(min(num_workers, len(pending)))]
        while remaining > 0:
            for w in workers:
                if w.ready and w.task is None and queue:
                    i = queue.pop()
                    w.submit(i, preds[i], golds[i], timeout_s)

            deadlines = [
                w.deadline if w.ready else w.started_at + _STARTUP_TIMEOUT_S
                for w in workers
                if w.task is not None or not w.ready
            ]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            if wait_s is not None and not math.isfinite(wait_s):
                wait_s = None
            readable = wait(workers, timeout=wait_s)

            for k, w in enumerate(workers):
                if w in readable:
                    line = w.proc.stdout.readline()
                    try:
                        msg = json.loads(line) if line else None
                    except json.JSONDecodeError:
                        msg = None  # garbled protocol: treat the worker as dead
                    if msg is not None:
                        if msg == _READY:
                            w.ready = True
                        else:
                            index, correct, status = msg
                            w.task = None
                            record(index, GradeResult(pred=preds[index], correct=correct, status=status))
                        continue
                    # EOF: the process died (crash, killed by the OS). Its item is an error; the worker is replaced.
                    if w.task is not None:
                        record(w.task, GradeResult(pred=preds[w.task], correct=False, status="error"))
                    elif not w.ready:
                        start_failures += 1
                        if start_failures > _MAX_START_FAILURES:
                            raise RuntimeError("grading worker processes keep dying at start-up")
                    w.kill()
                    workers[k] = _Worker(timeout_s)
                    continue
                now = time.monotonic()
                if w.task is not None and now >= w.deadline:
                    record(w.task, GradeResult(pred=preds[w.task], correct=False, status="timeout"))
                    w.kill()
                    workers[k] = _Worker(timeout_s)
                elif not w.ready and now >= w.started_at + _STARTUP_TIMEOUT_S:
                    raise RuntimeError(f"grading worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")
    finally:
        for w in workers:
            w.stop()


def grader_identity() -> dict[str, str]:
    """Which grader produced a grade: this module and the versions of the libraries that decide equivalence."""
    from importlib.metadata import PackageNotFoundError, version

    identity = {"module": __name__}
    for package in ("math-verify", "latex2sympy2_extended", "sympy"):
        try:
            identity[package] = version(package)
        except PackageNotFoundError:
            identity[package] = "missing"
    return identity
