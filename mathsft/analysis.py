"""What the report computes from collected results, before it renders anything: each evaluation's 95% interval,
paired comparisons of the evaluations (each method against base, each pair of methods), the problems each method
newly solves or fails, what the evaluation data is, and the inputs of the Findings sentences.

    runs, evals = results.collect(["runs/study-smoke"])
    study = analyze(runs, evals)
    study.comparisons[0].result.p_value

Per-problem numbers come from each evaluation's ``generations.jsonl`` (the rows its ``summary.json`` scored); the
statistics are :mod:`mathsft.stats`, with a fixed seed so that a rebuilt report prints the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mathsft import stats
from mathsft.artifacts import EvalRecord, EvalSummary, TrainRecord
from mathsft.findings import Comparison, MethodResult, findings
from mathsft.results import (
    AccuracyRow,
    RowsUnavailable,
    accuracy_rows,
    best_runs,
    divergence,
    graded_rows,
)  # fmt: skip

BOOTSTRAP_SEED = 0  # fixed: the same files give the same intervals
BOOTSTRAP_RESAMPLES = stats.DEFAULT_RESAMPLES  # 10,000
MATH500_PROBLEMS = 500


# ---- one evaluation ------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """An accuracy row with its per-problem rows and its 95% interval (fractions), or why they are unavailable."""

    row: AccuracyRow
    rows: list[dict[str, Any]] | None = None
    rows_problem: str | None = None  # why ``rows`` is None
    interval: tuple[float, float] | None = None
    interval_source: str | None = None  # "summary.json" or "generations.jsonl"

    @property
    def label(self) -> str:
        return self.row.label

    @property
    def summary(self) -> EvalSummary | None:
        return self.row.summary


def _problem_keyed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows keyed by ``unique_id`` (the problem's identity across evaluations) when every row has one and they are
    one per problem; otherwise by ``id``, the problem's index. The index is kept as ``index``."""
    ids = {row["id"] for row in rows}
    unique = {row.get("unique_id") for row in rows}
    if None in unique or len(unique) != len(ids):
        return [{**row, "index": row["id"]} for row in rows]
    return [{**row, "index": row["id"], "id": row["unique_id"]} for row in rows]


def eval_result(row: AccuracyRow) -> EvalResult:
    """The interval of one evaluation: ``accuracy_ci95`` from its summary.json when present, else computed from its
    generations.jsonl with the rule of :func:`mathsft.stats.accuracy_with_interval` (Wilson with one sample per
    problem, a bootstrap over problems with several)."""
    result = EvalResult(row)
    summary = row.summary
    if summary is None or row.record is None:
        return result
    try:
        result.rows = _problem_keyed(graded_rows(row.record))
    except RowsUnavailable as err:
        result.rows_problem = str(err)
    recorded = summary.get("accuracy_ci95")
    if isinstance(recorded, list) and len(recorded) == 2:
        result.interval, result.interval_source = (float(recorded[0]), float(recorded[1])), "summary.json"
    elif result.rows is not None:
        per_problem = stats.per_problem_correctness(result.rows).values()
        low, high = stats.accuracy_with_interval(per_problem, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)["accuracy_ci95"]
        result.interval, result.interval_source = (low, high), "generations.jsonl"
    return result


# ---- paired comparisons ----------------------------------------------------------------------------------------------


@dataclass
class PairResult:
    """Evaluation ``a`` against ``b`` (difference = a - b); ``result`` is None when they cannot be paired."""

    a: str
    b: str
    result: stats.PairedComparison | None
    problem: str | None = None  # why there is no result


def pair(a: EvalResult, b: EvalResult) -> PairResult:
    """The paired comparison of two evaluations on the problems both answered (all of them, or none)."""
    for side in (a, b):
        if side.rows is None:
            return PairResult(a.label, b.label, None, f"{side.label}: {side.rows_problem or 'no rows'}")
    assert a.rows is not None and b.rows is not None
    try:
        scores_a, scores_b, _ = stats.aligned_scores(a.rows, b.rows)
    except ValueError as err:
        return PairResult(a.label, b.label, None, str(err))
    return PairResult(a.label, b.label, stats.paired_comparison(scores_a, scores_b, BOOTSTRAP_RESAMPLES,
                                                                BOOTSTRAP_SEED))  # fmt: skip


def comparisons(results: Sequence[EvalResult]) -> list[PairResult]:
    """Each evaluated method against base, then each pair of them (in table order). Evaluations without a
    ``summary.json`` are left out: the accuracy table already shows them missing."""
    done = [r for r in results if r.summary is not None]
    base = next((r for r in done if r.row.is_base), None)
    others = [r for r in done if not r.row.is_base]
    pairs = [pair(r, base) for r in others] if base is not None else []
    pairs += [pair(x, y) for i, x in enumerate(others) for y in others[i + 1:]]
    return pairs


def problem_diff_records(results: Sequence[EvalResult]) -> list[dict[str, Any]]:
    """For each method (each evaluation but base): the problems it newly solves or newly fails relative to base,
    as ``{"model", "change", "id", "unique_id", "subject", "level", "base_score", "score"}`` records."""
    base = next((r for r in results if r.row.is_base and r.rows is not None), None)
    if base is None or base.rows is None:
        return []
    records = []
    for result in results:
        if result.row.is_base or result.rows is None:
            continue
        identity: dict[Hashable, tuple[Any, Any]] = {
            row["id"]: (row["index"], row.get("unique_id")) for row in result.rows
        }
        try:
            changed = stats.problem_diff(base.rows, result.rows)
        except ValueError:  # other problems than base: the comparisons table says so
            continue
        for record in changed:
            index, unique_id = identity[record.pop("id")]
            records.append({"model": result.label, "change": record.pop("change"), "id": index,
                            "unique_id": unique_id, **record})  # fmt: skip
    return records


# ---- what the evaluation data is -------------------------------------------------------------------------------------


def _is_math500_name(dataset: str) -> bool:
    parts = [part.lower().replace("-", "").replace("_", "") for part in Path(dataset.rstrip("/")).parts[-2:]]
    return "math500" in parts


@dataclass(frozen=True)
class Scope:
    """The evaluation data: its description, and whether it is the whole of MATH-500 (else: a smoke check)."""

    dataset: str
    split: str
    problems: int
    math500: bool

    @property
    def half_width_points(self) -> float:
        """Half the width of a 95% Wilson interval at 50% accuracy: the resolution of one model's accuracy."""
        low, high = stats.wilson_interval(self.problems // 2, self.problems) if self.problems > 1 else (0.0, 1.0)
        return 100 * (high - low) / 2


def evaluation_scope(results: Sequence[EvalResult]) -> Scope | None:
    """What the (first) evaluation scored: MATH-500 when it is a MATH-500 dataset's ``test`` split, all 500."""
    summary = next((r.summary for r in results if r.summary is not None), None)
    if summary is None:
        return None
    dataset, split, problems = str(summary.get("dataset")), str(summary.get("split")), summary.get("num_problems") or 0
    math500 = _is_math500_name(dataset) and split == "test" and problems == MATH500_PROBLEMS
    return Scope(dataset, split, problems, math500)


# ---- the whole study -------------------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """Everything the report renders, computed once."""

    runs: list[TrainRecord]
    evals: list[EvalRecord]
    best: dict[str, str]
    accuracy: list[EvalResult]
    comparisons: list[PairResult]
    problem_diff: list[dict[str, Any]]
    scope: Scope | None
    findings: list[str] = field(default_factory=list)


def analyze(runs: list[TrainRecord], evals: list[EvalRecord]) -> Analysis:
    results = [eval_result(row) for row in accuracy_rows(runs, evals)]
    analysis = Analysis(
        runs=runs,
        evals=evals,
        best=best_runs(runs),
        accuracy=results,
        comparisons=comparisons(results),
        problem_diff=problem_diff_records(results),
        scope=evaluation_scope(results),
    )
    analysis.findings = findings(method_results(analysis), [
        Comparison(p.a, p.b, p.result) for p in analysis.comparisons if p.result is not None
    ])  # fmt: skip
    return analysis


# ---- inputs of the Findings ------------------------------------------------------------------------------------------


def _epochs_peak(run: TrainRecord) -> float | None:
    summary = run.summary
    if summary is None:
        return None
    epochs = summary.get("epochs") or []
    if summary.get("memory_kind") == "cuda":
        values = [e.get("peak_memory_allocated_gib") for e in epochs]
    else:
        values = [e.get("peak_rss_gib") for e in epochs]
    finite = [v for v in values if v is not None]
    return max(finite) if finite else None


def _seconds_per_epoch(run: TrainRecord) -> float | None:
    """Mean wall time of the run's complete epochs (a resumed or stopped partial epoch would bias it)."""
    epochs = (run.summary.get("epochs") or []) if run.summary is not None else []
    walls = [e.get("wall_time_s") for e in epochs if e.get("complete", True) and not e.get("resumed_mid_epoch")]
    known = [w for w in walls if w is not None]
    return sum(known) / len(known) if known else None


def lowest_val_loss(run: TrainRecord) -> tuple[float, int] | None:
    """The lowest finite validation loss of a run and its step."""
    curve = (run.summary.get("eval_loss") or []) if run.summary is not None else []
    finite = [(float(value), int(step)) for step, value in curve if value is not None and math.isfinite(value)]
    return min(finite) if finite else None


def run_result(name: str, run: TrainRecord) -> MethodResult:
    """A run's numbers for the Findings (loss, memory, time, divergence), named ``name``."""
    summary = run.summary
    lowest = lowest_val_loss(run)
    kind = summary.get("memory_kind") if summary is not None else None
    diverged = divergence(summary)
    return MethodResult(
        name,
        lowest_val_loss=lowest[0] if lowest else None,
        lowest_val_loss_step=lowest[1] if lowest else None,
        peak_memory_gib=_epochs_peak(run),
        memory_kind=kind,
        seconds_per_epoch=_seconds_per_epoch(run),
        diverged=diverged is not None,
        diverged_step=diverged.step if diverged else None,
        interrupted=run.interrupted,
        device=None if kind is None else "cuda" if kind == "cuda" else "cpu",
    )


def method_results(analysis: Analysis) -> list[MethodResult]:
    """One result per evaluation row (a method's numbers come from its best run), then every run that diverged or
    was interrupted, named by its run."""
    by_name = {run.name: run for run in analysis.runs}
    results = []
    for evaluation in analysis.accuracy:
        best = by_name.get(analysis.best.get(evaluation.label, ""))
        result = run_result(evaluation.label, best) if best is not None else MethodResult(evaluation.label)
        summary = evaluation.summary
        if summary is not None:
            result = replace(result, accuracy=summary.get("accuracy"), accuracy_ci95=evaluation.interval)
        if best is not None or summary is not None:
            results.append(result)
    for run in analysis.runs:
        if run.summary is not None and (run.interrupted or divergence(run.summary)):
            results.append(run_result(run.name, run))
    return results
