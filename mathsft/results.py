"""Finding results on disk: training runs and evaluations from a study folder, run folders and evaluation folders,
the best run of each method, which evaluation scores which method, and each evaluation's graded rows. The report
renders what this finds; one report covers one study (:func:`plan_reports` splits several studies apart).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathsft import artifacts
from mathsft.artifacts import (
    BASE_EVAL,
    EVAL_CONFIG,
    EVAL_SUMMARY,
    GENERATIONS,
    RUN_SUMMARY,
    STAGE_CONFIG,
    STUDY_CONFIG,
    STUDY_EVAL_DIR,
    STUDY_TRAIN_DIR,
    TRAINER_STATE,
    EvalRecord,
    EvalSummary,
    RunSummary,
    TrainRecord,
    read_json,
)  # fmt: skip
from mathsft.errors import UserError
from mathsft.methods import METHODS

# ---- divergence --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Divergence:
    """A run that diverged; ``step`` is where (``diverged_step``, else its first non-finite loss), None if unknown."""

    step: int | None


def divergence(summary: RunSummary | None) -> Divergence | None:
    """Whether a run diverged: ``diverged: true`` in its summary, or a non-finite loss in its curves."""
    if summary is None:
        return None
    curves = (summary.get("train_loss") or []) + (summary.get("eval_loss") or [])
    first_bad = min((int(step) for step, value in curves if not artifacts.is_finite_number(value)), default=None)
    if not summary.get("diverged") and first_bad is None:
        return None
    step = summary.get("diverged_step")
    return Divergence(int(step) if step is not None else first_bad)


# ---- finding runs and evaluations --------------------------------------------------------------------------------


def _train_record(path: Path) -> TrainRecord:
    summary = artifacts.read_run_summary(path)
    stage = read_json(path / STAGE_CONFIG) or {}
    method = summary.get("method") if summary is not None else None
    method = method or stage.get("method")
    if method is None and path.name.split("-")[0] in METHODS:  # an unfinished run of a study: its folder name
        method = path.name.split("-")[0]
    return TrainRecord(path.name, path, summary, method, "", stage or None)


def _eval_record(path: Path, label: str) -> EvalRecord:
    stage = read_json(path / STAGE_CONFIG) or {}
    return EvalRecord(label, path, artifacts.read_eval_summary(path), stage.get("run"), "", stage or None)


def is_study(path: Path) -> bool:
    """A study folder holds ``train/`` or ``eval/``."""
    return path.is_dir() and ((path / STUDY_TRAIN_DIR).is_dir() or (path / STUDY_EVAL_DIR).is_dir())


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def _study_records(path: Path) -> tuple[list[TrainRecord], list[EvalRecord]]:
    # The study's own list of runs and methods, when it wrote one: folders left over from an earlier grid are not
    # part of this study (and must not change which run counts as best).
    plan = read_json(path / STUDY_CONFIG) or {}
    listed, methods = set(plan.get("runs") or []), set(plan.get("methods") or [])
    runs = [_train_record(d) for d in _subdirs(path / STUDY_TRAIN_DIR) if not listed or d.name in listed]
    evals = [_eval_record(d, d.name) for d in _subdirs(path / STUDY_EVAL_DIR)]
    # With seeds and checkpoints the folders are <method>-seed<s>[-step<N>]: their stage record names the method.
    evals = [e for e in evals if not methods or e.label == BASE_EVAL or e.label in methods
             or (e.stage or {}).get("method") in methods]  # fmt: skip
    return runs, evals


def _loose_eval(path: Path, runs: list[TrainRecord]) -> EvalRecord:
    """An evaluation folder given on its own, named by the run its ``model``/``adapter`` points to (or ``base``)."""
    config = read_json(path / EVAL_CONFIG) or {}
    info: dict[str, Any] = dict(artifacts.read_eval_summary(path) or config)
    adapter, model = (value if isinstance(value, str) else None for value in (info.get("adapter"), info.get("model")))
    by_path = {r.path.resolve(): r for r in runs}
    matched = next((by_path[Path(p).resolve()] for p in (adapter, model) if p and Path(p).resolve() in by_path), None)
    label = path.name if adapter else _adapter_label(model, config) or BASE_EVAL
    record = _eval_record(path, label)
    if matched is not None:
        record.label, record.run = matched.method or matched.name, matched.name
    return record


def _adapter_label(model: str | None, config: dict[str, Any]) -> str | None:
    """An adapter folder evaluated as ``--model`` (its base recorded in ``eval_config.json``, or an
    ``adapter_config.json`` in the folder) is labelled by the adapter's folder name: it is not the base model."""
    if not model:
        return None
    if config.get("adapter_base") is not None or (Path(model) / "adapter_config.json").is_file():
        return Path(model).name or model
    return None


def collect(sources: Iterable[str | Path]) -> tuple[list[TrainRecord], list[EvalRecord]]:
    """Training runs and evaluations from at most one study dir (``train/*``, ``eval/*``), run dirs and eval dirs.

    In a study dir an evaluation is named by its folder (``base``, ``adamw``, ``adamw-seed1``, ``adamw-seed1-step40``,
    ...), and the run, method, seed and checkpoint step it scored come from its ``stage_config.json``. An
    evaluation folder given on its own is matched by the ``model``/``adapter`` in its ``summary.json`` (or
    ``eval_config.json``): a listed training run's folder names it after that run's method;
    no adapter and no match makes it ``base``; anything else keeps its folder name. Two studies are refused: each
    has its own base model and best runs, so one report must never mix them (see :func:`plan_reports`).
    """
    paths = [Path(p) for p in sources]
    studies = [p for p in paths if is_study(p)]
    if len(studies) > 1:
        raise UserError(f"{len(studies)} study dirs given ({', '.join(map(str, studies))}); a report covers one study")
    runs: list[TrainRecord] = []
    evals: list[EvalRecord] = []
    loose_evals: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"not found: {path}")
        if is_study(path):
            study_runs, study_evals = _study_records(path)
            runs, evals = runs + study_runs, evals + study_evals
        elif (path / RUN_SUMMARY).is_file() or (path / TRAINER_STATE).is_file():
            runs.append(_train_record(path))
        elif (path / EVAL_SUMMARY).is_file() or (path / EVAL_CONFIG).is_file():
            loose_evals.append(path)
        else:
            raise UserError(
                f"{path} is neither a study dir (train/, eval/), a training run (run_summary.json) "
                "nor an evaluation (summary.json)"
            )
    evals += [_loose_eval(path, runs) for path in loose_evals]
    _distinct_labels(evals)
    order = {m: i for i, m in enumerate(METHODS)}
    runs.sort(key=lambda r: (
        order.get(r.method or "", len(order)),
        r.learning_rate is None,  # unknown grid points last
        r.learning_rate or 0.0,
        r.lora_r or 0,
        r.name,
    ))  # fmt: skip
    return runs, evals


def _distinct_labels(evals: list[EvalRecord]) -> None:
    """Two evaluations with one label (e.g. two loose base evals) keep apart by their folder names."""
    seen: dict[str, int] = {}
    for record in evals:
        seen[record.label] = seen.get(record.label, 0) + 1
        if seen[record.label] > 1:
            record.label = f"{record.label} ({record.path.name})"


def plan_reports(sources: Sequence[str | Path], output: str | Path) -> list[tuple[list[Path], Path]]:
    """Which sources go into which report folder: ``[(sources, output_dir), ...]``.

    One study (with any run or evaluation dirs) or no study: one report in ``output``. Several study dirs and
    nothing else: one report per study in ``output/<study folder name>/``. Several studies mixed with run or
    evaluation dirs, or two studies with one folder name, are refused: which study they belong to is unknown.
    """
    paths = [Path(p) for p in sources]
    studies = [p for p in paths if is_study(p)]
    if len(studies) <= 1:
        return [(paths, Path(output))]
    others = [p for p in paths if p not in studies]
    if others:
        raise UserError(
            f"{len(studies)} study dirs and {len(others)} other dir(s) given ({others[0]}, ...): "
            "make one report per study, or give one study with its extra runs and evaluations"
        )
    names = [p.name for p in studies]
    if len(set(names)) < len(names):
        clash = next(name for name in names if names.count(name) > 1)
        raise UserError(f"two study dirs are both named '{clash}'; their reports would go to one folder")
    return [([study], Path(output) / study.name) for study in studies]


# ---- the best run of each method -----------------------------------------------------------------------------------


def run_seed(run: TrainRecord) -> int | None:
    """A run's training seed: its study stage record's ``seed``, else ``hyperparameters.seed``."""
    seed = (run.stage or {}).get("seed")
    seed = seed if seed is not None else run.hyper.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


@dataclass
class GridPoint:
    """One (method, learning rate, LoRA rank) of a study with the run of each of its seeds (seed order)."""

    method: str
    learning_rate: float | None
    lora_r: int | None
    runs: list[TrainRecord]

    @property
    def seeds(self) -> list[int | None]:
        return [run_seed(r) for r in self.runs]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]


def grid_points(runs: list[TrainRecord]) -> list[GridPoint]:
    """The runs of each method grouped by (learning rate, LoRA rank), in run order.

    Runs of one grid point are its seeds only when their seeds are known and distinct; otherwise (two runs of one
    rate and one seed, e.g. run folders given on their own) each run is its own grid point, as before seeds existed.
    """
    groups: dict[tuple[str, float | None, int | None], list[TrainRecord]] = {}
    for run in runs:
        if run.method:
            groups.setdefault((run.method, run.learning_rate, run.lora_r), []).append(run)
    points = []
    for (method, rate, rank), members in groups.items():
        seeds = [run_seed(r) for r in members]
        if len(members) > 1 and (None in seeds or len(set(seeds)) < len(seeds)):
            points += [GridPoint(method, rate, rank, [r]) for r in members]
        else:
            points.append(GridPoint(method, rate, rank, sorted(members, key=lambda r: run_seed(r) or 0)))
    return points


def best_grid_points(runs: list[TrainRecord]) -> dict[str, GridPoint]:
    """``{method: best grid point}`` by :func:`artifacts.select_best_grid_point` (the study's rule): the lowest mean
    final validation loss over seeds; a grid point with a diverged seed is never eligible."""
    best = {}
    points = grid_points(runs)
    for method in sorted({p.method for p in points}):
        # (rate, rank, index): the index keeps apart points of one rate that are not seeds of one point
        pairs = [((p.learning_rate or 0.0, p.lora_r, i), None if divergence(r.summary) else r.summary)
                 for i, p in enumerate(points) if p.method == method for r in p.runs]  # fmt: skip
        key = artifacts.select_best_grid_point(pairs)
        if key is not None:
            best[method] = points[key[2]]
    return best


def best_runs(runs: list[TrainRecord]) -> dict[str, str]:
    """``{method: best run name}``: the (first seed's) run of each method's best grid point (:func:`best_grid_points`,
    one rule with the study); a diverged run is never eligible."""
    return {method: point.runs[0].name for method, point in best_grid_points(runs).items()}


def eval_key(record: EvalRecord) -> tuple[str | None, int | None, int | None]:
    """``(method, seed, step)`` an evaluation scored, from its study stage record (``step`` None: the run's final
    model; ``seed`` None: a study without seeds). Without a record: the method its label names."""
    stage = record.stage or {}
    method = stage.get("method") if "method" in stage else record.label if record.label in METHODS else None
    seed, step = stage.get("seed"), stage.get("step")
    return (method if isinstance(method, str) else None, seed if isinstance(seed, int) else None,
            step if isinstance(step, int) else None)  # fmt: skip


@dataclass
class AccuracyRow:
    """One row of the accuracy table: base, a method (its evaluation, or the run it still needs), or another eval.

    With seeds, a method's row holds the evaluation of each seed of its best grid point (``seed_records``, in seed
    order); with two or more the report shows their mean. ``stale`` holds evaluations that scored another run than
    the best one (an older grid, a changed rule): they are never shown under the method's name.
    """

    label: str
    record: EvalRecord | None
    expected_run: str | None  # the run the study would evaluate (for a missing evaluation)
    base: EvalRecord | None  # the base evaluation this row is compared with (None for base itself)
    is_base: bool = False
    seed_records: list[tuple[int, EvalRecord]] = field(default_factory=list)
    missing_seeds: list[int] = field(default_factory=list)
    stale: list[EvalRecord] = field(default_factory=list)

    @property
    def summary(self) -> EvalSummary | None:
        return self.record.summary if self.record is not None else None

    @property
    def seed(self) -> int | None:
        """The training seed of a one-seed row of a seeded study (None otherwise)."""
        return self.seed_records[0][0] if len(self.seed_records) == 1 else None

    @property
    def aggregated(self) -> bool:
        return len(self.seed_records) > 1


def _seeded_row(method: str, records: list[EvalRecord], point: GridPoint | None, base: EvalRecord | None
                ) -> AccuracyRow:
    """A method's row from its per-seed final evaluations, each checked against the best grid point's run."""
    expected = {run_seed(r): r.name for r in point.runs} if point is not None else {}
    matched: list[tuple[int, EvalRecord]] = []
    stale = []
    for record in sorted(records, key=lambda r: eval_key(r)[1] or 0):
        seed = eval_key(record)[1]
        assert seed is not None
        if point is not None and record.run is not None and expected.get(seed) != record.run:
            stale.append(record)
        else:
            matched.append((seed, record))
    missing = [seed for seed in expected if seed is not None and seed not in {s for s, _ in matched}]
    row = AccuracyRow(method, matched[0][1] if len(matched) == 1 else None,
                      ", ".join(point.names) if point is not None else None, base, seed_records=matched,
                      missing_seeds=sorted(missing), stale=stale)  # fmt: skip
    return row


def accuracy_rows(runs: list[TrainRecord], evals: list[EvalRecord]) -> list[AccuracyRow]:
    """Base first, then one row per method (present or missing), then any other evaluation.

    An evaluation whose stage record names another run than the method's best one is stale: the row shows the
    evaluation missing and keeps the stale one apart (``AccuracyRow.stale``). Checkpoint evaluations (a stage record
    with a ``step``) belong to the accuracy over training, not to this table.
    """
    best = best_grid_points(runs)
    by_label = {e.label: e for e in evals}
    base = by_label.get(BASE_EVAL)
    rows = [AccuracyRow(BASE_EVAL, base, None, None, is_base=True)]
    used = {BASE_EVAL}
    seeded: dict[str, list[EvalRecord]] = {}
    for record in evals:
        method, seed, step = eval_key(record)
        if record.label != BASE_EVAL and (step is not None or (seed is not None and method in METHODS)):
            used.add(record.label)
            if step is None and method is not None:
                seeded.setdefault(method, []).append(record)
    methods = [m for m in METHODS if m in by_label or m in seeded or any(r.method == m for r in runs)]
    relabelled: list[AccuracyRow] = []
    for m in methods:
        point = best.get(m)
        if m in seeded:
            rows.append(_seeded_row(m, seeded[m], point, base))
            continue
        used.add(m)
        found, expected = by_label.get(m), point.runs[0].name if point is not None else None
        if found is not None and found.run is not None and expected is not None and found.run != expected:
            rows.append(AccuracyRow(m, None, expected, base, stale=[found]))
            if found.stage is None:  # an evaluation folder given on its own: shown under the run it scored
                relabelled.append(AccuracyRow(found.run, found, None, base))
        else:
            rows.append(AccuracyRow(m, found, expected, base))
    rows += [AccuracyRow(label, e, None, base) for label, e in by_label.items() if label not in used]
    return rows + relabelled


# ---- an evaluation's graded rows ---------------------------------------------------------------------------------


class RowsUnavailable(ValueError):
    """An evaluation's per-problem rows cannot be used; the message says why, for the report."""


def graded_rows(record: EvalRecord) -> list[dict[str, Any]]:
    """The graded rows of ``generations.jsonl`` that the evaluation's ``summary.json`` scored.

    As ``mathsft.evaluation`` does when it summarizes: problems ``0 .. num_problems-1`` (when ids are indices),
    samples ``0 .. num_samples-1``, the first row of each (id, sample). Raises :class:`RowsUnavailable` when the
    file is missing, torn or does not hold exactly the scored rows, so nothing is computed from other answers.
    """
    summary = record.summary
    if summary is None:
        raise RowsUnavailable(f"no {EVAL_SUMMARY}")
    path = record.path / GENERATIONS
    if not path.is_file():
        raise RowsUnavailable(f"no {GENERATIONS}")
    try:
        rows = artifacts.read_jsonl_rows(path)
    except UserError as err:
        raise RowsUnavailable(str(err)) from err
    problems, samples = summary.get("num_problems") or 0, summary.get("num_samples") or 0
    indexed = all(isinstance(row.get("id"), int) for row in rows)
    kept: dict[tuple[Any, int], dict[str, Any]] = {}
    for row in rows:
        sample = row.get("sample", 0)
        if "correct" not in row or "id" not in row or not isinstance(sample, int) or not 0 <= sample < samples:
            continue
        if indexed and not 0 <= row["id"] < problems:
            continue
        kept.setdefault((row["id"], sample), row)
    if not kept or len(kept) != problems * samples:
        raise RowsUnavailable(
            f"{GENERATIONS} holds {len(kept)} graded rows, {EVAL_SUMMARY} scored {problems} × {samples}"
        )
    return list(kept.values())
