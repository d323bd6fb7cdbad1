"""Uncertainty of benchmark accuracies: Wilson and bootstrap intervals, and paired comparisons of two models.

Every model answers the same problems, so two models are compared *paired*: per problem, not by overlapping
intervals. ``paired_comparison`` gives the difference in points with a paired-bootstrap interval, and the exact
McNemar test on the problems only one of the two solves.

    per_problem = per_problem_correctness(rows)              # {id: [bool, ...]} from graded sample rows
    accuracy_with_interval(per_problem.values())             # {"accuracy", "accuracy_ci95", "ci_method"}
    a, b, ids = aligned_scores(rows_method, rows_base)
    paired_comparison(a, b)                                  # PairedComparison(difference_points=..., ...)

Accuracies and their intervals are fractions in [0, 1]; paired differences are in points (percentage points).
Only the standard library and numpy are used; every random draw comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Z_95",
    "PairedComparison",
    "accuracy_with_interval",
    "aligned_scores",
    "bootstrap_accuracy_interval",
    "hierarchical_bootstrap_means",
    "hierarchical_interval",
    "mcnemar_exact_p",
    "paired_comparison",
    "paired_comparison_by_seed",
    "per_problem_correctness",
    "per_problem_correctness_by",
    "problem_diff",
    "wilson_interval",
    "with_intervals",
]

Z_95 = 1.959963984540054  # standard normal quantile at 0.975: two-sided 95%
DEFAULT_RESAMPLES = 10_000
# Resampled indices are drawn in blocks of at most this many entries, so memory stays bounded for large tables.
_BLOCK_ENTRIES = 4_000_000


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n`` (95% for the default ``z``).

    Unlike the normal (Wald) interval it never leaves [0, 1] and does not collapse to zero width at 0/n or n/n.
    """
    if n <= 0:
        raise ValueError(f"need n > 0, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half_width = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # The exact bounds at 0/n and n/n are 0 and 1; rounding would leave them a hair off.
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == n else min(1.0, center + half_width)
    return low, high


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` resamples (with replacement, same size) of the rows of ``values``."""
    n = len(values)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // n)
    means = np.empty(resamples)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[indices].mean(axis=1)
    return means


def _percentile_interval(means: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _as_scores(values: Iterable[bool | float], what: str) -> np.ndarray:
    scores = np.asarray(list(values), dtype=float)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"{what}: need a non-empty flat sequence of per-problem scores")
    if not np.all((scores >= 0.0) & (scores <= 1.0)):
        raise ValueError(f"{what}: per-problem scores must lie in [0, 1]")
    return scores


def bootstrap_accuracy_interval(
    per_problem_scores: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap 95% interval of the mean over problems.

    Problems, not samples, are resampled: with several samples per problem, pass each problem's mean correctness,
    so that the samples of one problem (which are correlated) stay together.
    """
    if resamples < 1:
        raise ValueError(f"need resamples >= 1, got {resamples}")
    scores = _as_scores(per_problem_scores, "bootstrap_accuracy_interval")
    return _percentile_interval(_bootstrap_means(scores, resamples, seed))


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts.

    Under the null hypothesis each discordant problem is equally likely to go either way, so
    ``X ~ Binomial(only_a + only_b, 1/2)`` and ``p = min(1, 2 P(X <= min(only_a, only_b)))``. Computed with exact
    integers, so it is exact for any count.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be non-negative, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int is correctly rounded even past float range


@dataclass(frozen=True)
class PairedComparison:
    """Model a against model b on the same problems.

    ``difference_points`` is ``(accuracy_a - accuracy_b) * 100`` and ``ci95_points`` its paired-bootstrap 95%
    interval. ``only_a`` / ``only_b`` count the problems a scores higher on / b scores higher on (with one sample
    per problem: solved by a only / by b only); ``p_value`` is the exact McNemar test on them (with several samples
    per problem, the exact sign test on per-problem mean scores, which is McNemar's test when scores are 0 or 1).
    ``significant`` is true only when both agree at the 5% level: ``p_value < 0.05`` and the interval excludes 0.
    """

    difference_points: float
    ci95_points: tuple[float, float]
    p_value: float
    only_a: int
    only_b: int
    n: int
    binary: bool  # every per-problem score was 0 or 1 (one sample per problem): a true McNemar table

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05 and not self.interval_contains_zero

    @property
    def interval_contains_zero(self) -> bool:
        return self.ci95_points[0] <= 0.0 <= self.ci95_points[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, e.g. for summary files."""
        return {
            "difference_points": self.difference_points,
            "ci95_points": list(self.ci95_points),
            "p_value": self.p_value,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "n": self.n,
            "binary": self.binary,
            "significant": self.significant,
        }


def paired_comparison(
    a: Sequence[bool | float], b: Sequence[bool | float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> PairedComparison:
    """Compare per-problem scores ``a`` and ``b`` (same problems, same order; bools or mean correctness in [0, 1]).

    The bootstrap resamples problems and applies the same resample to both models, which keeps their pairing.
    """
    if resamples < 1:
        raise ValueError(f"need resamples >= 1, got {resamples}")
    scores_a, scores_b = _as_scores(a, "paired_comparison a"), _as_scores(b, "paired_comparison b")
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"a and b differ in length: {len(scores_a)} != {len(scores_b)}")
    differences = scores_a - scores_b
    return _paired_result(scores_a, scores_b, _bootstrap_means(differences, resamples, seed))


def _paired_result(scores_a: np.ndarray, scores_b: np.ndarray, bootstrap_means: np.ndarray) -> PairedComparison:
    """The comparison of two aligned score arrays (any shape) from the bootstrap means of their differences."""
    differences = scores_a - scores_b
    low, high = _percentile_interval(bootstrap_means)
    only_a, only_b = int(np.sum(differences > 0)), int(np.sum(differences < 0))
    binary = bool(np.all(np.isin(scores_a, (0.0, 1.0))) and np.all(np.isin(scores_b, (0.0, 1.0))))
    return PairedComparison(
        difference_points=float(differences.mean()) * 100,
        ci95_points=(low * 100, high * 100),
        p_value=mcnemar_exact_p(only_a, only_b),
        only_a=only_a,
        only_b=only_b,
        n=differences.size,
        binary=binary,
    )


def accuracy_with_interval(
    per_problem: Iterable[Sequence[bool]], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Accuracy over problems with its 95% interval, from each problem's list of sample correctness.

    One sample per problem: the Wilson interval. Several: the mean of per-problem mean correctness, with a
    bootstrap over problems (samples of one problem are correlated, so a Wilson interval over samples would be too
    narrow). Returns ``{"accuracy", "accuracy_ci95": [low, high], "ci_method": "wilson" | "bootstrap"}``.
    """
    problems = [list(samples) for samples in per_problem]
    if not problems or any(not samples for samples in problems):
        raise ValueError("need at least one problem, and at least one sample per problem")
    if all(len(samples) == 1 for samples in problems):
        successes = sum(bool(samples[0]) for samples in problems)
        low, high = wilson_interval(successes, len(problems))
        return {"accuracy": successes / len(problems), "accuracy_ci95": [low, high], "ci_method": "wilson"}
    scores = [sum(map(bool, samples)) / len(samples) for samples in problems]
    low, high = bootstrap_accuracy_interval(scores, resamples, seed)
    return {"accuracy": sum(scores) / len(scores), "accuracy_ci95": [low, high], "ci_method": "bootstrap"}


def per_problem_correctness(rows: Iterable[Mapping[str, Any]]) -> dict[Hashable, list[bool]]:
    """Group graded sample rows (keys ``id``, ``correct``, optionally ``sample``) into ``{id: [correct, ...]}``.

    Problems keep first-seen order; each problem's samples are ordered by ``sample``.
    """
    samples: dict[Hashable, list[tuple[int, bool]]] = {}
    for row in rows:
        samples.setdefault(row["id"], []).append((int(row.get("sample", 0)), bool(row["correct"])))
    return {pid: [correct for _, correct in sorted(pairs, key=lambda pair: pair[0])] for pid, pairs in samples.items()}


def per_problem_correctness_by(
    rows: Iterable[Mapping[str, Any]], field: str
) -> dict[str, dict[Hashable, list[bool]]]:
    """:func:`per_problem_correctness` per group of ``field`` (``"subject"``, ``"level"``): ``{name: {id: [...]}}``.

    Group names are strings (``str(row[field])``, ``"unknown"`` for ``None``, as in the summary's breakdowns);
    rows without ``field`` are left out.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if field in row:
            name = "unknown" if row[field] is None else str(row[field])
            groups.setdefault(name, []).append(row)
    return {name: per_problem_correctness(group) for name, group in groups.items()}


def with_intervals(summary: Mapping[str, Any], rows: Iterable[Mapping[str, Any]], seed: int = 0) -> dict[str, Any]:
    """A copy of a :func:`mathsft.scoring.summarize` result with ``accuracy_ci95`` and ``ci_method`` added at the
    top level and to every ``by_subject`` / ``by_level`` entry (computed from the same graded ``rows``)."""
    rows = list(rows)
    result = dict(summary)
    overall = accuracy_with_interval(per_problem_correctness(rows).values(), seed=seed)
    result |= {"accuracy_ci95": overall["accuracy_ci95"], "ci_method": overall["ci_method"]}
    for key, field in (("by_subject", "subject"), ("by_level", "level")):
        if key not in summary:
            continue
        groups = per_problem_correctness_by(rows, field)
        result[key] = {}
        for name, stats in summary[key].items():
            entry = dict(stats)
            if name in groups:
                interval = accuracy_with_interval(groups[name].values(), seed=seed)
                entry |= {"accuracy_ci95": interval["accuracy_ci95"], "ci_method": interval["ci_method"]}
            result[key][name] = entry
    return result


def _problem_scores(rows: Iterable[Mapping[str, Any]]) -> dict[Hashable, float]:
    return {pid: sum(samples) / len(samples) for pid, samples in per_problem_correctness(rows).items()}


def aligned_scores(
    rows_a: Iterable[Mapping[str, Any]], rows_b: Iterable[Mapping[str, Any]]
) -> tuple[list[float], list[float], list[Hashable]]:
    """Per-problem mean correctness of two evaluations, aligned on problem id (in ``rows_a``'s order).

    Raises ``ValueError`` when the two did not answer the same problems: a paired comparison needs both.
    """
    scores_a, scores_b = _problem_scores(rows_a), _problem_scores(rows_b)
    if scores_a.keys() != scores_b.keys():
        only_a, only_b = len(scores_a.keys() - scores_b.keys()), len(scores_b.keys() - scores_a.keys())
        raise ValueError(f"the evaluations cover different problems ({only_a} only in the first, {only_b} only in "
                         "the second); a paired comparison needs the same problems")
    ids = list(scores_a)
    return [scores_a[i] for i in ids], [scores_b[i] for i in ids], ids


def problem_diff(
    base_rows: Iterable[Mapping[str, Any]], rows: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The problems whose score changed relative to base, one record each (for a ``problem_diff.jsonl``).

    Each record: ``id``, ``subject`` and ``level`` (when the rows carry them), ``base_score``, ``score`` (per-problem
    mean correctness) and ``change``: ``"newly_solved"`` when the score went up, ``"newly_failed"`` when it went
    down. The counts match ``only_a`` / ``only_b`` of ``paired_comparison(scores, base_scores)``.
    """
    rows = list(rows)
    meta: dict[Hashable, dict[str, Any]] = {}
    for row in rows:
        meta.setdefault(row["id"], {f: row[f] for f in ("subject", "level") if f in row})
    scores, base_scores, ids = aligned_scores(rows, base_rows)
    records = []
    for pid, score, base_score in zip(ids, scores, base_scores, strict=True):
        if score == base_score:
            continue
        change = "newly_solved" if score > base_score else "newly_failed"
        records.append({"id": pid, **meta[pid], "base_score": base_score, "score": score, "change": change})
    return records


# ---- several training seeds: seeds and problems both resampled ----------------------------------------------------


def _seed_matrix(per_seed: Sequence[Sequence[float]], what: str, low: float = 0.0) -> np.ndarray:
    matrix = np.asarray([list(row) for row in per_seed], dtype=float)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"{what}: need one non-empty row of per-problem scores per seed, all of one length")
    if not np.all((matrix >= low) & (matrix <= 1.0)):
        raise ValueError(f"{what}: per-problem scores must lie in [{low:g}, 1]")
    return matrix


def hierarchical_bootstrap_means(
    per_seed: Sequence[Sequence[float]] | np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """Bootstrap means of a (seeds x problems) table of per-problem scores, resampling both seeds and problems.

    Each draw takes S seeds with replacement out of the S training seeds and P problems with replacement out of
    the P problems, and averages the table over the drawn seeds and problems. One problem resample serves all seeds
    of a draw: every seed answered the same problems (seeds and problems are crossed, not nested), so a problem's
    difficulty is shared by the seeds, and resampling the problems of each seed apart would average that shared
    part away and give too narrow an interval. Draw order, per block of draws from ``default_rng(seed)``: the seed
    indices of the block (shape ``(block, S)``), then its problem indices (``(block, P)``).
    """
    if resamples < 1:
        raise ValueError(f"need resamples >= 1, got {resamples}")
    table = np.asarray(per_seed, dtype=float)
    n_seeds, n_problems = table.shape
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // (n_seeds * n_problems))
    means = np.empty(resamples)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        seeds = rng.integers(0, n_seeds, size=(stop - start, n_seeds))
        problems = rng.integers(0, n_problems, size=(stop - start, n_problems))
        # per draw and seed: the mean over the drawn problems; then the mean over the drawn seeds
        seed_means = table[:, problems].mean(axis=2).T  # (draws, seeds)
        means[start:stop] = np.take_along_axis(seed_means, seeds, axis=1).mean(axis=1)
    return means


def hierarchical_interval(
    per_seed: Sequence[Sequence[float]], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% interval of the mean accuracy over seeds and problems (:func:`hierarchical_bootstrap_means`).

    ``per_seed[s][p]`` is seed s's mean correctness on problem p (the same problems, in the same order, for every
    seed). It covers both sources of noise: which problems were drawn and which training seeds were run.
    """
    table = _seed_matrix(per_seed, "hierarchical_interval")
    return _percentile_interval(hierarchical_bootstrap_means(table, resamples, seed))


def paired_comparison_by_seed(
    a: Mapping[Hashable, Sequence[float]],
    b: Mapping[Hashable, Sequence[float]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Compare two models trained with several seeds, paired by problem and by seed: ``a[s][p]`` against
    ``b[s][p]`` (the same seeds as keys, the same problems in the same order). A model without seeds (the base
    model) is passed as the same scores under each seed of the other.

    The difference is the mean over (seed, problem) pairs; its interval resamples seeds and problems as
    :func:`hierarchical_interval` does, applied to the table of differences (one resample for both models, which
    keeps the pairing); ``only_a`` / ``only_b`` and the exact McNemar (sign) test count discordant (seed, problem)
    pairs. With one seed this is :func:`paired_comparison`.
    """
    if set(a) != set(b) or not a:
        raise ValueError(f"a and b need the same seeds, got {sorted(map(str, a))} and {sorted(map(str, b))}")
    keys = list(a)
    scores_a = _seed_matrix([a[k] for k in keys], "paired_comparison_by_seed a")
    scores_b = _seed_matrix([b[k] for k in keys], "paired_comparison_by_seed b")
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"a and b differ in shape: {scores_a.shape} != {scores_b.shape}")
    if len(keys) == 1:
        return paired_comparison(scores_a[0], scores_b[0], resamples, seed)
    return _paired_result(scores_a, scores_b, hierarchical_bootstrap_means(scores_a - scores_b, resamples, seed))
