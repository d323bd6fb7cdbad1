"""Aggregate per-sample grades into benchmark scores: accuracy, unbiased pass@k, maj@n and breakdowns.

A *row* is one graded sample, e.g. ``{"id": "test/algebra/1.json", "sample": 0, "correct": True, "pred": "3",
"status": "correct", "subject": "Algebra", "level": 2, "finish_reason": "stop", "num_tokens": 312}``.

    summary = summarize(rows)
    print(format_summary_table(summary))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, cast

from mathsft.artifacts import Scores
from mathsft.grading import normalize_answer

__all__ = ["format_summary_table", "majority_vote", "pass_at_k", "pass_at_k_values", "summarize"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` are correct (Chen et al., 2021).

    ``1 - C(n-c, k) / C(n, k)``, computed as a running product so large ``n`` neither overflows nor loses precision.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def pass_at_k_values(n: int) -> list[int]:
    """The k reported for ``n`` samples: powers of two up to ``n`` (1, 2, 4, ...), plus ``n`` itself."""
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def majority_vote(preds: list[str | None], correct: list[bool]) -> bool:
    """Whether the most frequent extracted answer is correct.

    Answers are grouped by :func:`mathsft.grading.normalize_answer` (so `\\dfrac12` and `\\frac{1}{2}` vote
    together, but `0.5` is a different answer). Samples without an answer (``None``, or empty after normalization)
    do not vote; when nobody votes the result is False. Ties go to the answer whose first occurrence comes first
    in ``preds``. The correctness returned is that of the first sample holding the winning answer (all samples
    with the same normalized answer get the same grade, so any would do).
    """
    if len(preds) != len(correct):
        raise ValueError(f"preds and correct differ in length: {len(preds)} != {len(correct)}")
    votes: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, pred in enumerate(preds):
        if pred is None:
            continue
        key = normalize_answer(pred)
        if not key:
            continue
        votes[key] = votes.get(key, 0) + 1
        first.setdefault(key, i)
    if not votes:
        return False
    # max() keeps the first maximum in insertion order, i.e. the earliest first occurrence: the tie-break.
    winner = max(votes, key=lambda key: votes[key])
    return bool(correct[first[winner]])


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _group_key(value: Any) -> str:
    return "unknown" if value is None else str(value)


def _level_sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _breakdown(problems: list[dict[str, Any]], field: str) -> dict[str, dict[str, float | int]]:
    """Per-group sample accuracy and problem count, for problems whose rows carry ``field``."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in problems:
        if field in p["meta"]:
            groups[_group_key(p["meta"][field])].append(p)
    order = sorted(groups, key=_level_sort_key) if field == "level" else sorted(groups)
    return {
        name: {
            "accuracy": _mean(c for p in groups[name] for c in p["correct"]),
            "count": len(groups[name]),
        }
        for name in order
    }


def summarize(rows: list[dict[str, Any]]) -> Scores:
    """Scores from graded sample rows (keys ``id``, ``sample``, ``correct``, ``pred``, ``status``; optionally
    ``subject``, ``level``, ``finish_reason``, ``num_tokens``).

    Returns ``num_problems``, ``num_samples`` (samples per problem, n), ``accuracy`` (mean over all samples: greedy
    pass@1 when n=1), for n > 1 ``pass@k`` (k = 1, 2, 4, ... and n; mean unbiased estimate over problems) and
    ``maj@n``, ``by_subject`` / ``by_level`` (``{name: {"accuracy", "count"}}``, count = problems), and the sample
    counts ``no_box``, ``truncated`` (finish_reason "length"), ``grader_timeout`` and ``grader_error``, plus
    ``mean_num_tokens`` when rows carry ``num_tokens``. Every problem must have the same number of samples.
    """
    by_id: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_id[row["id"]].append(row)
    sizes = {len(samples) for samples in by_id.values()}
    if len(sizes) > 1:
        raise ValueError(f"problems have different numbers of samples: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0

    problems = []
    for pid, samples in by_id.items():
        samples = sorted(samples, key=lambda r: r.get("sample", 0))
        problems.append(
            {
                "id": pid,
                "correct": [bool(r["correct"]) for r in samples],
                "preds": [r.get("pred") for r in samples],
                "meta": {f: samples[0][f] for f in ("subject", "level") if f in samples[0]},
            }
        )

    summary: dict[str, Any] = {
        "num_problems": len(problems),
        "num_samples": n,
        "accuracy": _mean(float(r["correct"]) for r in rows),
    }
    if n > 1:
        for k in pass_at_k_values(n):
            summary[f"pass@{k}"] = _mean(pass_at_k(n, sum(p["correct"]), k) for p in problems)
        summary[f"maj@{n}"] = _mean(float(majority_vote(p["preds"], p["correct"])) for p in problems)
    summary["by_subject"] = _breakdown(problems, "subject")
    summary["by_level"] = _breakdown(problems, "level")
    summary["no_box"] = sum(r.get("status") == "no_box" for r in rows)
    summary["truncated"] = sum(r.get("finish_reason") == "length" for r in rows)
    summary["grader_timeout"] = sum(r.get("status") == "timeout" for r in rows)
    summary["grader_error"] = sum(r.get("status") == "error" for r in rows)
    tokens = [r["num_tokens"] for r in rows if r.get("num_tokens") is not None]
    if tokens:
        summary["mean_num_tokens"] = _mean(tokens)
    return cast(Scores, summary)


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of a :func:`summarize` result, for logs and the console."""
    total = max(summary.get("num_problems", 0) * summary.get("num_samples", 0), 1)
    lines = [
        f"{'problems':<22}{summary['num_problems']:>10}",
        f"{'samples per problem':<22}{summary['num_samples']:>10}",
        f"{'accuracy':<22}{100 * summary['accuracy']:>9.2f}%",
    ]
    for key, value in summary.items():
        if key.startswith(("pass@", "maj@")):
            lines.append(f"{key:<22}{100 * value:>9.2f}%")
    for key in ("no_box", "truncated", "grader_timeout", "grader_error"):
        if key in summary:
            lines.append(f"{key:<22}{summary[key]:>10}  ({100 * summary[key] / total:.1f}% of samples)")
    if "mean_num_tokens" in summary:
        lines.append(f"{'mean tokens':<22}{summary['mean_num_tokens']:>10.1f}")
    for title, key in (("subject", "by_subject"), ("level", "by_level")):
        groups = summary.get(key) or {}
        if not groups:
            continue
        lines.append("")
        lines.append(f"{title:<28}{'accuracy':>10}{'problems':>10}")
        for name, stats in groups.items():
            lines.append(f"{name:<28}{100 * stats['accuracy']:>9.2f}%{stats['count']:>10}")
    return "\n".join(lines)
