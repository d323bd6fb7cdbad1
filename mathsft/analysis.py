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
from typing import Any, cast

from mathsft import artifacts, stats
from mathsft.artifacts import EvalRecord, EvalSummary, TrainRecord, final_val_loss
from mathsft.findings import Comparison, MethodResult, findings, update_lost
from mathsft.results import (
    AccuracyRow,
    GridPoint,
    RowsUnavailable,
    accuracy_rows,
    best_grid_points,
    best_runs,
    divergence,
    eval_key,
    graded_rows,
    grid_points,
    run_seed,
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
    seeds: list[EvalResult] = field(default_factory=list)  # a row over several seeds: each seed's result
    combined: EvalSummary | None = None  # ... and their summaries combined (see :func:`combined_summary`)

    @property
    def label(self) -> str:
        return self.row.label

    @property
    def summary(self) -> EvalSummary | None:
        return self.combined if self.row.aggregated else self.row.summary


def _problem_keyed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows keyed by ``unique_id`` (the problem's identity across evaluations) when every row has one and they are
    one per problem; otherwise by ``id``, the problem's index. The index is kept as ``index``."""
    ids = {row["id"] for row in rows}
    unique = {row.get("unique_id") for row in rows}
    if None in unique or len(unique) != len(ids):
        return [{**row, "index": row["id"]} for row in rows]
    return [{**row, "index": row["id"], "id": row["unique_id"]} for row in rows]


def eval_result(row: AccuracyRow) -> EvalResult:
    """The interval of one row: :func:`seeded_result` for a row over several seeds, else :func:`single_result`."""
    return seeded_result(row) if row.aggregated else single_result(row)


def single_result(row: AccuracyRow) -> EvalResult:
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


def seed_rows(row: AccuracyRow) -> list[AccuracyRow]:
    """One row per seed of a row over several seeds, labelled ``<method> seed <s>``."""
    return [AccuracyRow(f"{row.label} seed {seed}", record, record.run, row.base, seed_records=[(seed, record)])
            for seed, record in row.seed_records]  # fmt: skip


def _seed_table(results: Sequence[EvalResult]) -> tuple[list[list[float]], list[dict[str, Any]]]:
    """Per-problem scores of each seed aligned on the first seed's problems, and all rows as one evaluation
    (seed k's sample j becomes sample ``k * samples + j``). Raises ValueError when they are not comparable."""
    first = results[0].rows
    assert first is not None
    table, combined, offset = [], [], 0
    for result in results:
        assert result.rows is not None
        _, scores, _ = stats.aligned_scores(first, result.rows)
        table.append(scores)
        combined += [{**row, "sample": row.get("sample", 0) + offset} for row in result.rows]
        offset += 1 + max((row.get("sample", 0) for row in result.rows), default=0)
    return table, combined


def seeded_result(row: AccuracyRow) -> EvalResult:
    """A method's result over the seeds of its best grid point: the mean accuracy over seeds, with the interval of
    :func:`mathsft.stats.hierarchical_interval` (seeds and problems resampled) from the seeds' generations.jsonl."""
    seeds = [single_result(seed_row) for seed_row in seed_rows(row)]
    result = EvalResult(row, seeds=seeds)
    done = [r for r in seeds if r.summary is not None]
    if not done:
        return result
    if len(done) == 1:  # one seed evaluated: its own interval, as without seeds
        result.rows, result.rows_problem = done[0].rows, done[0].rows_problem
        result.interval, result.interval_source = done[0].interval, done[0].interval_source
    else:
        unavailable = next((r for r in done if r.rows is None), None)
        try:
            if unavailable is not None:
                raise ValueError(f"{unavailable.label}: {unavailable.rows_problem}")
            table, result.rows = _seed_table(done)
            result.interval = stats.hierarchical_interval(table, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
            result.interval_source = "generations.jsonl, seeds and problems resampled"
        except ValueError as err:
            result.rows, result.rows_problem = None, str(err)
    result.combined = combined_summary([r.summary for r in done if r.summary is not None], result.interval)
    return result


def combined_summary(summaries: Sequence[EvalSummary], interval: tuple[float, float] | None) -> EvalSummary:
    """One summary for the evaluations of several seeds: accuracy (overall, per subject and level) is the mean over
    seeds; counts (no box, truncated, ...) are summed and ``num_samples`` is the seeds' samples together, so every
    count's share is of all answers; the interval is the one over seeds and problems. pass@k / maj@n stay per seed."""
    first: dict[str, Any] = dict(summaries[0])
    combined: dict[str, Any] = {k: v for k, v in first.items() if not k.startswith(("pass@", "maj@"))}
    combined["accuracy"] = _mean([s.get("accuracy") for s in summaries])
    combined["num_samples"] = sum(s.get("num_samples") or 0 for s in summaries)
    for key in ("no_box", "truncated", "grader_timeout", "grader_error"):
        values = [dict(s).get(key) for s in summaries]
        combined[key] = sum(values) if all(isinstance(v, int) for v in values) else None
    for key in ("by_subject", "by_level"):
        groups: dict[str, Any] = first.get(key) or {}
        combined[key] = {name: {"accuracy": _mean([_group_accuracy(s, key, name) for s in summaries]),
                                "count": group.get("count")} for name, group in groups.items()}  # fmt: skip
    combined["accuracy_ci95"] = list(interval) if interval is not None else None
    combined["ci_method"] = "hierarchical bootstrap (seeds and problems)"
    return cast(EvalSummary, combined)


def _group_accuracy(summary: EvalSummary, key: str, name: str) -> Any:
    groups = cast(dict[str, Any], summary).get(key) or {}
    return (groups.get(name) or {}).get("accuracy")


def _mean(values: Sequence[Any]) -> float | None:
    known = [float(v) for v in values if isinstance(v, int | float)]
    return sum(known) / len(known) if known and len(known) == len(values) else None


# ---- paired comparisons ----------------------------------------------------------------------------------------------


@dataclass
class PairResult:
    """Evaluation ``a`` against ``b`` (difference = a - b); ``result`` is None when they cannot be paired."""

    a: str
    b: str
    result: stats.PairedComparison | None
    problem: str | None = None  # why there is no result
    seeds: int = 1  # training seeds paired (problem and seed pairs)


def pair(a: EvalResult, b: EvalResult) -> PairResult:
    """The paired comparison of two evaluations on the problems both answered (all of them, or none); with seeds,
    paired by problem and by seed (:func:`pair_by_seed`)."""
    if a.row.aggregated or b.row.aggregated or (a.row.seed is not None and b.row.seed is not None):
        return pair_by_seed(a, b)
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


def _rows_by_seed(result: EvalResult) -> dict[int | None, EvalResult]:
    """Each seed's evaluated result (``{None: result}`` for an evaluation without seeds, such as base)."""
    if result.row.aggregated:
        return {seed.row.seed: seed for seed in result.seeds if seed.summary is not None}
    return {result.row.seed: result}


def pair_by_seed(a: EvalResult, b: EvalResult) -> PairResult:
    """Two methods paired by problem and by seed (seed s of a against seed s of b), on the seeds both have; an
    evaluation without seeds (base) is paired with every seed of the other."""
    seeds_a, seeds_b = _rows_by_seed(a), _rows_by_seed(b)
    if None in seeds_a:
        seeds_a = {seed: seeds_a[None] for seed in seeds_b}
    if None in seeds_b:
        seeds_b = {seed: seeds_b[None] for seed in seeds_a}
    common = [seed for seed in seeds_a if seed in seeds_b]
    if not common:
        return PairResult(a.label, b.label, None, "no training seed evaluated for both")
    table_a: dict[Hashable, list[float]] = {}
    table_b: dict[Hashable, list[float]] = {}
    reference: list[dict[str, Any]] | None = None
    for seed in common:
        for side in (seeds_a[seed], seeds_b[seed]):
            if side.rows is None:
                return PairResult(a.label, b.label, None, f"{side.label}: {side.rows_problem or 'no rows'}")
        rows_a, rows_b = seeds_a[seed].rows, seeds_b[seed].rows
        assert rows_a is not None and rows_b is not None
        reference = reference or rows_a
        try:  # every seed on the same problems in one order: the first seed's
            _, table_a[seed], _ = stats.aligned_scores(reference, rows_a)
            _, table_b[seed], _ = stats.aligned_scores(reference, rows_b)
        except ValueError as err:
            return PairResult(a.label, b.label, None, str(err))
    result = stats.paired_comparison_by_seed(table_a, table_b, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    return PairResult(a.label, b.label, result, seeds=len(common))


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
class GridResult:
    """One grid point with each seed's final validation loss (None: missing, not finite or diverged) and the final
    accuracy of each of its seeds that was evaluated."""

    point: GridPoint
    losses: list[float | None]
    diverged: list[bool]
    accuracies: list[float] = field(default_factory=list)
    best: bool = False

    @property
    def mean_loss(self) -> float | None:
        """The mean over seeds, only when every seed has a finite final validation loss (the rule's eligibility)."""
        known = [v for v in self.losses if v is not None]
        return sum(known) / len(known) if known and len(known) == len(self.losses) else None


@dataclass(frozen=True)
class StepPoint:
    """One evaluation of a method's model along training: the base model (step 0, seed None), a checkpoint, or the
    final model (at its run's last step)."""

    method: str
    seed: int | None
    step: int
    accuracy: float | None
    no_box_share: float | None
    evaluation: str  # the evaluation folder


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
    grid: list[GridResult] = field(default_factory=list)
    steps: list[StepPoint] = field(default_factory=list)
    extended: bool = False  # written by the seeds/checkpoints/precision study: the report shows those sections

    @property
    def best_names(self) -> set[str]:
        """Every run of each method's best grid point (all its seeds)."""
        return {name for g in self.grid if g.best for name in g.point.names} | set(self.best.values())


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
        grid=grid_results(runs, results),
        steps=accuracy_by_step(runs, evals, results),
        extended=is_extended(runs, evals),
    )
    analysis.findings = findings(method_results(analysis), [
        Comparison(p.a, p.b, p.result, "(seed, problem) pairs" if p.seeds > 1 else "problems")
        for p in analysis.comparisons if p.result is not None
    ])  # fmt: skip
    return analysis


def is_extended(runs: list[TrainRecord], evals: list[EvalRecord]) -> bool:
    """Whether the study records seeds, checkpoint steps or evaluation precision (issue 17's study); a study
    without any of them renders exactly as before."""
    return (any("seed" in (r.stage or {}) for r in runs) or any("step" in (e.stage or {}) for e in evals)
            or any(eval_precision(r) is not None for r in runs))  # fmt: skip


def eval_precision(run: TrainRecord) -> dict[str, Any] | None:
    """``eval_precision`` of a run summary: how much of the fine-tuning update survives the evaluation dtype."""
    value = dict(run.summary).get("eval_precision") if run.summary is not None else None
    return value if isinstance(value, dict) else None


def _evaluated_seeds(results: Sequence[EvalResult]) -> dict[str, tuple[str, EvalSummary]]:
    """``{run name: (evaluation label, summary)}`` of every final evaluation shown in the accuracy table."""
    found = {}
    for result in results:
        if result.row.is_base:
            continue
        for single in result.seeds or [result]:
            record = single.row.record
            if record is not None and record.run is not None and single.row.summary is not None:
                found[record.run] = (single.label, single.row.summary)
    return found


def grid_results(runs: list[TrainRecord], results: Sequence[EvalResult]) -> list[GridResult]:
    """Every grid point with its seeds' final validation losses, and the accuracies of its evaluated seeds."""
    best = {id(point.runs[0]) for point in best_grid_points(runs).values()}
    evaluated = _evaluated_seeds(results)
    grid = []
    for point in grid_points(runs):
        diverged = [divergence(r.summary) is not None for r in point.runs]
        losses = [None if d else final_val_loss(r.summary) for r, d in zip(point.runs, diverged, strict=True)]
        accuracies = [evaluated[r.name][1].get("accuracy") for r in point.runs if r.name in evaluated]
        grid.append(GridResult(point, losses, diverged, [float(a) for a in accuracies if a is not None],
                               id(point.runs[0]) in best))  # fmt: skip
    return grid


def _step_point(method: str, seed: int | None, step: int, label: str, summary: EvalSummary) -> StepPoint:
    answers = (summary.get("num_problems") or 0) * (summary.get("num_samples") or 0)
    no_box = summary.get("no_box")
    share = no_box / answers if isinstance(no_box, int) and answers else None
    return StepPoint(method, seed, step, summary.get("accuracy"), share, label)


def accuracy_by_step(runs: list[TrainRecord], evals: list[EvalRecord], results: Sequence[EvalResult]
                     ) -> list[StepPoint]:
    """Accuracy along training of each method's best run (per seed): the base model as step 0, every evaluated
    checkpoint at its step (its stage record), the final model at its run's last step. Empty without checkpoint
    evaluations. A checkpoint evaluation of another run than the best one (stale) is left out."""
    best = {method: set(point.names) for method, point in best_grid_points(runs).items()}
    checkpoints = [(e, eval_key(e)) for e in evals if eval_key(e)[2] is not None and e.summary is not None]
    checkpoints = [(e, key) for e, key in checkpoints if key[0] is not None and e.run in best.get(key[0], set())]
    if not checkpoints:
        return []
    methods = [m for m in best if any(key[0] == m for _, key in checkpoints)]
    base = next((r for r in results if r.row.is_base and r.summary is not None), None)
    points = [_step_point(m, None, 0, base.label, base.summary) for m in methods if base and base.summary]
    for e, (method, seed, step) in checkpoints:
        assert method is not None and step is not None and e.summary is not None
        points.append(_step_point(method, seed, step, e.label, e.summary))
    by_name = {r.name: r for r in runs}
    for run_name, (label, summary) in _evaluated_seeds(results).items():
        run = by_name.get(run_name)
        if run is not None and run.method in methods and run.summary and run.summary.get("global_step") is not None:
            points.append(_step_point(run.method, run_seed(run), int(run.summary["global_step"]), label, summary))
    return sorted(points, key=lambda p: (p.method, p.step, p.seed or 0))


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
        precision = eval_precision(best) if best is not None else None
        if precision is not None and artifacts.is_finite_number(precision.get("overall")):
            inexact_base = precision.get("base_exact", True) is False
            error = precision.get("rounding_error") if inexact_base else None
            result = replace(result, update_survival=float(precision["overall"]), eval_dtype=precision.get("dtype"),
                             update_lost=update_lost(precision),
                             update_rounding_error=float(error) if artifacts.is_finite_number(error) else None)  # type: ignore[arg-type]
        point = next((g for g in analysis.grid if g.best and g.point.method == evaluation.label), None)
        if point is not None and len(point.point.runs) > 1:  # several seeds: the mean of their lowest losses
            lows = [lowest_val_loss(r) for r in point.point.runs]
            mean = sum(low[0] for low in lows if low) / len(lows) if all(lows) else None
            result = replace(result, lowest_val_loss=mean, lowest_val_loss_step=None, seeds=len(lows))
        if best is not None or summary is not None:
            results.append(result)
    for run in analysis.runs:
        if run.summary is not None and (run.interrupted or divergence(run.summary)):
            results.append(run_result(run.name, run))
    return results
