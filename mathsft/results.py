"""Finding results on disk: training runs and evaluations from study folders, run folders and evaluation folders,
the best run of each method, and which evaluation scores which method. The report renders what this finds."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mathsft import artifacts
from mathsft.artifacts import (
    BASE_EVAL,
    EVAL_CONFIG,
    EVAL_SUMMARY,
    RUN_SUMMARY,
    STAGE_CONFIG,
    STUDY_CONFIG,
    STUDY_EVAL_DIR,
    STUDY_TRAIN_DIR,
    TRAINER_STATE,
    EvalRecord,
    TrainRecord,
    read_json,
)  # fmt: skip
from mathsft.errors import UserError
from mathsft.methods import METHODS


def _train_record(path: Path, group: str) -> TrainRecord:
    summary = artifacts.read_run_summary(path)
    stage = read_json(path / STAGE_CONFIG) or {}
    method = (summary or {}).get("method") or stage.get("method")
    if method is None and path.name.split("-")[0] in METHODS:  # an unfinished run of a study: its folder name
        method = path.name.split("-")[0]
    name = f"{group}/{path.name}" if group else path.name
    return TrainRecord(name, path, summary, method, group, stage or None)


def _eval_record(path: Path, group: str, label: str | None) -> EvalRecord:
    summary = artifacts.read_eval_summary(path)
    stage = read_json(path / STAGE_CONFIG) or {}
    run = stage.get("run")
    if run and group:
        run = f"{group}/{run}"
    return EvalRecord(label or "", path, summary, run, group)


def _is_study(path: Path) -> bool:
    return (path / STUDY_TRAIN_DIR).is_dir() or (path / STUDY_EVAL_DIR).is_dir()


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def collect(paths: Iterable[str | Path]) -> tuple[list[TrainRecord], list[EvalRecord]]:
    """Training runs and evaluations from study dirs (``train/*``, ``eval/*``), run dirs and eval dirs.

    In a study dir an evaluation is named by its folder (``base``, ``adamw``, ...), and the run it scored comes from
    its ``stage_config.json``. An evaluation folder given on its own is matched by the ``model``/``adapter`` in its
    ``summary.json`` (or ``eval_config.json``): a listed training run's folder names it after that run's method;
    no adapter and no match makes it ``base``; anything else keeps its folder name.
    """
    paths = [Path(p) for p in paths]
    studies = [p for p in paths if p.is_dir() and _is_study(p)]
    prefix_groups = len(studies) > 1  # several studies: run names are prefixed by the study folder
    runs: list[TrainRecord] = []
    evals: list[EvalRecord] = []
    loose_evals: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"not found: {path}")
        if path.is_dir() and _is_study(path):
            group = path.name if prefix_groups else ""
            # The study's own list of runs and methods, when it wrote one: folders left over from an earlier grid
            # are not part of this study (and must not change which run counts as best).
            plan = read_json(path / STUDY_CONFIG) or {}
            listed, methods = set(plan.get("runs") or []), set(plan.get("methods") or [])
            train_dirs = _subdirs(path / STUDY_TRAIN_DIR)
            runs += [_train_record(d, group) for d in train_dirs if not listed or d.name in listed]
            evals += [
                _eval_record(d, group, d.name)
                for d in _subdirs(path / STUDY_EVAL_DIR)
                if not methods or d.name == BASE_EVAL or d.name in methods
            ]
        elif (path / RUN_SUMMARY).is_file() or (path / TRAINER_STATE).is_file():
            runs.append(_train_record(path, ""))
        elif (path / EVAL_SUMMARY).is_file() or (path / EVAL_CONFIG).is_file():
            loose_evals.append(path)
        else:
            raise UserError(
                f"{path} is neither a study dir (train/, eval/), a training run (run_summary.json) "
                "nor an evaluation (summary.json)"
            )
    by_path = {r.path.resolve(): r for r in runs}
    for path in loose_evals:
        info = read_json(path / EVAL_SUMMARY) or read_json(path / EVAL_CONFIG) or {}
        adapter, model = info.get("adapter"), info.get("model")
        matched = next(
            (by_path[Path(p).resolve()] for p in (adapter, model) if p and Path(p).resolve() in by_path), None
        )
        record = _eval_record(path, "", None)
        if matched is not None:
            record.label, record.run = matched.method or matched.name, matched.name
        else:
            record.label = BASE_EVAL if not adapter else path.name
        evals.append(record)
    # Two evaluations with one label (e.g. two loose base evals) keep apart by their folder names.
    seen: dict[tuple[str, str], int] = {}
    for record in evals:
        key = (record.group, record.label)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            record.label = f"{record.label} ({record.path.name})"
    order = {m: i for i, m in enumerate(METHODS)}
    runs.sort(
        key=lambda r: (
            r.group,
            order.get(r.method or "", len(order)),
            r.learning_rate is None,  # unknown grid points last
            r.learning_rate or 0.0,
            r.lora_r or 0,
            r.name,
        )
    )
    return runs, evals


def best_runs(runs: list[TrainRecord]) -> dict[tuple[str, str], str]:
    """``{(group, method): best run name}`` by :data:`BEST_RULE`."""
    best = {}
    for key in sorted({(r.group, r.method) for r in runs if r.method}):
        name = artifacts.select_best([(r.name, r.summary) for r in runs if (r.group, r.method) == key])
        if name is not None:
            best[key] = name
    return best


@dataclass
class AccuracyRow:
    label: str
    record: EvalRecord | None
    expected_run: str | None  # the run the study would evaluate (for a missing evaluation)
    base: EvalRecord | None


def accuracy_rows(runs: list[TrainRecord], evals: list[EvalRecord]) -> list[AccuracyRow]:
    """Base first, then one row per method (present or missing), then any other evaluation, per group."""
    best = best_runs(runs)
    rows = []
    groups = sorted({r.group for r in runs} | {e.group for e in evals})
    bases = [e for e in evals if e.label == BASE_EVAL]
    for group in groups:
        prefix = f"{group}/" if group else ""
        in_group = {e.label: e for e in evals if e.group == group}
        base = in_group.get(BASE_EVAL) or (bases[0] if len(bases) == 1 else None)
        rows.append(AccuracyRow(prefix + BASE_EVAL, in_group.get(BASE_EVAL), None, None))
        methods = [m for m in METHODS if m in in_group or any(r.group == group and r.method == m for r in runs)]
        for method in methods:
            rows.append(AccuracyRow(prefix + method, in_group.get(method), best.get((group, method)), base))
        for name, record in in_group.items():
            if name != BASE_EVAL and name not in METHODS:
                rows.append(AccuracyRow(prefix + name, record, None, base))
    return rows
