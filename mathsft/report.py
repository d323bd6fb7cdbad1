"""The study report, built only from files: ``run_summary.json`` of each training run, ``summary.json`` and
``generations.jsonl`` of each evaluation (and the study's ``stage_config.json`` files to know which run an
evaluation scored). Rendering only: :mod:`mathsft.results` finds the files, :mod:`mathsft.analysis` computes
intervals, paired comparisons and the Findings.

    write_report(["runs/study-smoke"], "runs/study-smoke/report")

writes ``report.md`` (what was measured, findings, settings, then convergence, resources and accuracy, in the order
the study asks its questions), ``loss_train.png``, ``loss_val.png``, ``figures.json`` (what each figure plots),
``resources.md``, ``accuracy.md`` and ``problem_diff.jsonl``. A study that records seeds, checkpoint steps or
evaluation precision (issue 17) also gets the tuning budget per method (trials, seeds, a best rate at the grid's
edge flagged), ``lr_sensitivity.png``, ``accuracy_by_step.png`` (with checkpoint evaluations) and what the evaluation
dtype keeps of each update; a study without them renders as before. Nothing is typed by hand: a missing file is shown as
"missing", a value a file lacks as "—". One report covers one study (:func:`write_reports` splits several).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mathsft import artifacts, memory
from mathsft.analysis import (
    Analysis,
    EvalResult,
    GridResult,
    PairResult,
    Scope,
    StepPoint,
    analyze,
    eval_precision,
    lowest_val_loss,
)  # fmt: skip
from mathsft.artifacts import BEST_RULE, EpochRecord, EvalSummary, RunSummary, TrainRecord, final_val_loss, format_lr
from mathsft.errors import UserError
from mathsft.findings import ROUNDS_AWAY_BELOW, update_lost
from mathsft.methods import LORA_KEYS, METHODS
from mathsft.progress import format_duration
from mathsft.results import collect, divergence, plan_reports

MISSING = "missing"  # the whole file is absent (a run or an evaluation that did not finish)
NA = "—"  # the file exists but lacks this value
NOT_APPLICABLE = "n/a"  # the value does not exist for this run (a LoRA rank of a full fine-tuning run)
OTHER_COLORS = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
INDICATIVE_BELOW_S = 60.0  # throughput measured over less than this is marked indicative
MIB = 1024**2


# ----------------------------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------------------------


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """A Markdown table; columns whose index is in ``right`` are right-aligned (numbers)."""
    right = set(right)
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    lines = [_md_row(header), "|" + "|".join(rule) + "|"]
    lines += [_md_row(row) for row in rows]
    return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def table_rows(markdown: str, header: Sequence[str]) -> list[list[str]] | None:
    """The cells of each row of the table whose header is exactly ``header``; None when there is no such table."""
    lines = markdown.splitlines()
    if _md_row(header) not in lines:
        return None
    start = lines.index(_md_row(header)) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    return rows


def _pct(value: float | None) -> str:
    return NA if value is None else f"{100 * value:.2f}%"


def _interval(interval: tuple[float, float] | None) -> str:
    return NA if interval is None else f"{100 * interval[0]:.1f}–{100 * interval[1]:.1f}%"


def _loss(value: float | None) -> str:
    return NA if value is None else f"{value:.4f}"


def _gib(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}"


def _bytes(count: int) -> str:
    """Binary units that suit the size: ``8.88 GiB``, ``1.13 MiB``, ``577.5 KiB``."""
    if count >= memory.GIB:
        return f"{count / memory.GIB:.2f} GiB"
    if count >= MIB:
        return f"{count / MIB:.2f} MiB"
    return f"{count / 1024:.1f} KiB" if count else "0"


def _scheduler(value: Any) -> str:
    return NA if value is None else str(value).removeprefix("SchedulerType.").lower()


def _noted(text: str, notes: Sequence[str]) -> str:
    """``text (note; note)``; ``text`` alone without notes or when ``text`` is not a value."""
    return f"{text} ({'; '.join(notes)})" if notes and text not in (NA, MISSING) else text


def _throughput(per_s: float | None, seconds: float | None, on_cpu: bool) -> str:
    """Tokens/s, labelled CPU when measured there, and indicative when measured over less than a minute."""
    if per_s is None:
        return NA
    notes = ["CPU"] if on_cpu else []
    if seconds is not None and seconds < INDICATIVE_BELOW_S:
        notes.append("indicative: under 1 min")
    return _noted(f"{per_s:,.0f}", notes)


def precision(hyper: dict[str, Any]) -> str:
    """Autocast precision and the dtype the weights are kept in, e.g. ``bf16 / float32 weights``."""
    if not hyper:
        return NA
    amp = "bf16" if hyper.get("bf16") else "fp16" if hyper.get("fp16") else "fp32"
    return f"{amp} / {hyper.get('dtype', NA)} weights"


def batch_text(hyper: dict[str, Any]) -> str:
    """``per device × accumulation × processes = effective``."""
    per_device, accumulation = hyper.get("per_device_train_batch_size"), hyper.get("gradient_accumulation_steps")
    if per_device is None or accumulation is None:
        return NA
    world = hyper.get("world_size", 1)
    effective = hyper.get("effective_batch_size", per_device * accumulation * world)
    return f"{per_device} × {accumulation} × {world} = {effective}"


def _on_cpu(summary: RunSummary) -> bool:
    """Measured on a CPU: timings are indicative and the memory is the process's RSS, not GPU memory."""
    return summary.get("memory_kind") != "cuda"


def _largest(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------


def _curve(summary: RunSummary | None, kind: str, log_scale: bool) -> list[tuple[float, float]]:
    if summary is None:
        return []
    curve = (summary.get("train_loss") if kind == "train" else summary.get("eval_loss")) or []
    points = [(float(s), float(v)) for s, v in curve if v is not None and math.isfinite(float(v))]
    return [(s, v) for s, v in points if v > 0] if log_scale else points


def _epoch_ends(runs: list[TrainRecord]) -> list[tuple[int, int]]:
    """``(global_step, epoch)`` of every complete epoch of every run (a stopped run's partial epoch is no end)."""
    return sorted({
        (int(step), round(float(e.get("epoch", 0))))
        for run in runs if run.summary is not None
        for e in run.summary.get("epochs") or []
        if (step := e.get("global_step")) is not None and e.get("complete", True)
    })  # fmt: skip


def _line_style(is_best: bool, several: bool, dash: int) -> dict[str, Any]:
    if is_best or not several:
        return {"linestyle": "-", "linewidth": 2.4, "alpha": 1.0}
    return {"linestyle": ["--", ":", "-."][dash % 3], "linewidth": 1.2, "alpha": 0.75}


def plot_losses(
    runs: list[TrainRecord], best: dict[str, str], kind: str, path: Path, log_scale: bool = False,
    best_names: set[str] | None = None,
) -> dict[str, Any]:
    """Plot train (``kind="train"``) or validation loss of every run; returns what was drawn (for figures.json).

    One colour per method; with several runs per method the best is a thick solid line and the others thin dashed
    (``best_names``: every seed's run of a method's best grid point, when the study has seeds).
    Vertical dotted lines mark epoch ends (the ``global_step`` of each epoch record).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = "Training loss" if kind == "train" else "Validation loss"
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    lines: list[dict[str, Any]] = []
    missing: list[str] = []
    runs_per_method = {m: sum((r.method or r.name) == m for r in runs) for m in {r.method or r.name for r in runs}}
    others = iter(OTHER_COLORS * 10)
    colors: dict[str, str] = {}
    dashes: dict[str, int] = {}
    for run in runs:
        points = _curve(run.summary, kind, log_scale)
        if not points:
            missing.append(run.name)
            continue
        method = run.method or run.name
        color = colors.setdefault(method, METHODS[method].color if method in METHODS else next(others))
        is_best = best.get(run.method or "") == run.name or run.name in (best_names or set())
        several = runs_per_method[method] > 1
        label = run.name + (" (best)" if is_best and several else "")
        dashes[method] = dashes.get(method, -1) + (0 if is_best or not several else 1)
        marker: dict[str, Any] = {"marker": "o", "markersize": 3.5} if kind == "val" else {}
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, color=color, label=label, **_line_style(is_best, several, dashes[method]), **marker)
        lines.append({"label": label, "run": run.name, "method": run.method, "best": is_best, "points": len(points)})
    boundaries = _epoch_ends(runs)
    for step, epoch in boundaries:
        ax.axvline(step, color="0.55", linestyle=":", linewidth=1.0, zorder=0)
        ax.text(step, 1.0, f" epoch {epoch}", transform=ax.get_xaxis_transform(), va="top", ha="left", fontsize=8,
                color="0.35")  # fmt: skip
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (cross-entropy per completion token)" + (", log scale" if log_scale else ""))
    ax.set_title(f"{title} per run" + (" (epoch ends dotted)" if boundaries else ""))
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, f"no {title.lower()} data", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    artifacts.save_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return {"title": title, "lines": lines, "missing": missing, "epoch_boundaries": [s for s, _ in boundaries],
            "log_scale": log_scale}  # fmt: skip


def _method_color(method: str, others: Iterator[str]) -> str:
    return METHODS[method].color if method in METHODS else next(others)


def _line_key(g: GridResult, ranks: dict[str, set[int | None]]) -> str:
    """One line per method; a method tried at several LoRA ranks gets one line per rank."""
    method = g.point.method
    return f"{method} r{g.point.lora_r}" if len(ranks[method]) > 1 else method


def lr_sensitivity_figure(grid: Sequence[GridResult]) -> tuple[Any, dict[str, Any]]:
    """Final validation loss (and, where evaluated, accuracy) against learning rate, log x-axis: one line per method
    through the seed means, each seed a point, a diverged run an x at the top of the panel. Returns the open figure
    and what was drawn (for figures.json); :func:`plot_lr_sensitivity` saves it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [g for g in grid if g.point.learning_rate is not None and g.point.learning_rate > 0]
    with_accuracy = any(g.accuracies for g in points)
    fig, axes = plt.subplots(1, 2 if with_accuracy else 1, figsize=(13 if with_accuracy else 8, 5), dpi=110,
                             squeeze=False)  # fmt: skip
    loss_ax = axes[0][0]
    ranks: dict[str, set[int | None]] = {}
    for g in points:
        ranks.setdefault(g.point.method, set()).add(g.point.lora_r)
    lines: dict[str, list[GridResult]] = {}
    for g in sorted(points, key=lambda g: (_line_key(g, ranks), g.point.learning_rate)):
        lines.setdefault(_line_key(g, ranks), []).append(g)
    others = iter(OTHER_COLORS * 10)
    drawn, diverged_rates = [], []
    for label, members in lines.items():
        color = _method_color(members[0].point.method, others)
        means = [(g.point.learning_rate, g.mean_loss) for g in members if g.mean_loss is not None]
        loss_ax.plot([x for x, _ in means], [y for _, y in means], color=color, marker="o", linewidth=1.8,
                     label=label)  # fmt: skip
        seeds = [(g.point.learning_rate, v) for g in members for v in g.losses if v is not None]
        if seeds:
            loss_ax.scatter([x for x, _ in seeds], [y for _, y in seeds], color=color, s=14, alpha=0.5, zorder=3)
        broken = [g.point.learning_rate for g in members for d in g.diverged if d]
        if broken:  # an x at the top of the panel: a diverged run has no final loss to plot
            loss_ax.scatter(broken, [0.96] * len(broken), transform=loss_ax.get_xaxis_transform(), marker="x",
                            color=color, s=60, zorder=4, clip_on=False)  # fmt: skip
            diverged_rates += [[label, rate] for rate in broken]
        drawn.append({"label": label, "method": members[0].point.method, "points": len(means),
                      "seeds": len(seeds)})  # fmt: skip
    loss_ax.set_ylabel("final validation loss (mean over seeds; seeds as dots)")
    loss_ax.set_title("Learning-rate sensitivity" + (" (x: diverged)" if diverged_rates else ""))
    if with_accuracy:
        _accuracy_panel(axes[0][1], lines, others)
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8, loc="best")
    if not drawn:
        loss_ax.text(0.5, 0.5, "no training run with a learning rate", transform=loss_ax.transAxes, ha="center")
    return fig, {"title": "Learning-rate sensitivity", "lines": drawn, "diverged": diverged_rates,
                 "accuracy_panel": with_accuracy}  # fmt: skip


def _accuracy_panel(ax: Any, lines: dict[str, list[GridResult]], others: Iterator[str]) -> None:
    for label, members in lines.items():
        evaluated = [g for g in members if g.accuracies]
        if not evaluated:
            continue
        color = _method_color(members[0].point.method, others)
        xs = [g.point.learning_rate for g in evaluated]
        ax.plot(xs, [100 * sum(g.accuracies) / len(g.accuracies) for g in evaluated], color=color, marker="o",
                linewidth=1.8, label=label)  # fmt: skip
        seeds = [(g.point.learning_rate, 100 * a) for g in evaluated for a in g.accuracies]
        ax.scatter([x for x, _ in seeds], [y for _, y in seeds], color=color, s=14, alpha=0.5, zorder=3)
    ax.set_ylabel("accuracy, % (evaluated grid points; mean over seeds)")
    ax.set_title("Accuracy of the evaluated runs")


def _save_figure(fig: Any, path: Path) -> None:
    """Write a figure as a PNG, atomically, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    artifacts.save_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def plot_lr_sensitivity(grid: Sequence[GridResult], path: Path) -> dict[str, Any]:
    """Save :func:`lr_sensitivity_figure` as a PNG; returns what was drawn."""
    fig, info = lr_sensitivity_figure(grid)
    _save_figure(fig, path)
    return info


def step_means(steps: Sequence[StepPoint], field: str) -> dict[str, list[tuple[int, float]]]:
    """``{method: [(step, mean over seeds), ...]}`` of ``accuracy`` or ``no_box_share`` (the base model at step 0)."""
    values: dict[str, dict[int, list[float]]] = {}
    for point in steps:
        value = getattr(point, field)
        if value is not None:
            values.setdefault(point.method, {}).setdefault(point.step, []).append(float(value))
    return {method: [(step, sum(v) / len(v)) for step, v in sorted(by_step.items())]
            for method, by_step in values.items()}  # fmt: skip


def accuracy_by_step_figure(steps: Sequence[StepPoint]) -> tuple[Any, dict[str, Any]]:
    """Accuracy and the share of answers with no ``\\boxed{}`` against optimizer step: one line per method (the
    mean over seeds at each step), the base model as step 0, the final model at its run's last step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, box_ax) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    others = iter(OTHER_COLORS * 10)
    drawn = []
    accuracy, no_box = step_means(steps, "accuracy"), step_means(steps, "no_box_share")
    for method in [m for m in METHODS if m in accuracy or m in no_box] + sorted(set(accuracy) - set(METHODS)):
        color = _method_color(method, others)
        for ax, series, field in ((acc_ax, accuracy.get(method, []), "accuracy"),
                                  (box_ax, no_box.get(method, []), "no_box_share")):
            ax.plot([s for s, _ in series], [100 * v for _, v in series], color=color, marker="o", label=method)
            seeds = [(p.step, 100 * getattr(p, field)) for p in steps
                     if p.method == method and p.seed is not None and getattr(p, field) is not None]
            if seeds:  # each seed as a dot beside the mean
                ax.scatter([x for x, _ in seeds], [y for _, y in seeds], color=color, s=14, alpha=0.5, zorder=3)
        drawn.append({"method": method, "steps": [s for s, _ in accuracy.get(method, [])]})
    acc_ax.set_ylabel("accuracy, % (mean over seeds)")
    acc_ax.set_title("Accuracy over training (step 0: base model)")
    box_ax.set_ylabel("answers with no \\boxed{}, %")
    box_ax.set_title("Answers with no boxed answer")
    for ax in (acc_ax, box_ax):
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8, loc="best")
    return fig, {"title": "Accuracy over training", "lines": drawn}


def plot_accuracy_by_step(steps: Sequence[StepPoint], path: Path) -> dict[str, Any]:
    """Save :func:`accuracy_by_step_figure` as a PNG; returns what was drawn."""
    fig, info = accuracy_by_step_figure(steps)
    _save_figure(fig, path)
    return info



# ----------------------------------------------------------------------------------------------------------------
# Resources
# ----------------------------------------------------------------------------------------------------------------

RESOURCE_HEADER = [
    "run", "method", "device", "precision", "batch (per device × accum × procs = effective)", "trainable params",
    "total params", "peak GPU memory allocated (GiB)", "peak GPU memory reserved (GiB)",
    "peak process RSS, CPU (GiB)", "time per epoch", "train time", "total time", "tokens/s",
]  # fmt: skip


def _run_label(run: TrainRecord) -> str:
    notes = (["interrupted"] if run.interrupted else []) + (["diverged"] if divergence(run.summary) else [])
    return _noted(run.name, notes)


def _memory_cells(summary: RunSummary) -> list[str]:
    """Peak GPU memory allocated, reserved, and peak process RSS: GPU runs fill the first two, CPU runs the third."""
    epochs = summary.get("epochs") or []
    if _on_cpu(summary):
        rss = _largest(e.get("peak_rss_gib") for e in epochs)
        return ["n/a (CPU run)", "n/a (CPU run)", _gib(rss)]
    allocated = _largest(e.get("peak_memory_allocated_gib") for e in epochs)
    reserved = _largest(e.get("peak_memory_reserved_gib") for e in epochs)
    return [_gib(allocated), _gib(reserved), "n/a (GPU run)"]


def resource_row(run: TrainRecord) -> list[str]:
    """One row of the resources table (see ``RESOURCE_HEADER``)."""
    s = run.summary
    if s is None:
        return [_run_label(run), run.method or NA] + [MISSING] * (len(RESOURCE_HEADER) - 2)
    epochs = s.get("epochs") or []
    device = s.get("device_name") or NA
    processes = s.get("num_processes") or 1
    if processes > 1:
        device = f"{processes} × {device}"
    trainable, total = s.get("trainable_params"), s.get("total_params")
    trainable_text = f"{trainable:,} ({100 * trainable / total:.2f}%)" if trainable and total else NA
    walls = [e.get("wall_time_s") for e in epochs]
    known = [w for w in walls if w is not None]
    train_time = sum(known) if known else None
    tokens = sum(e.get("tokens") or 0 for e in epochs)
    cpu = ["CPU"] if _on_cpu(s) else []
    return [
        _run_label(run),
        run.method or NA,
        device,
        precision(run.hyper),
        batch_text(run.hyper),
        trainable_text,
        f"{total:,}" if total else NA,
        *_memory_cells(s),
        _noted(", ".join(format_duration(w) for w in walls), cpu) if walls else NA,
        _noted(format_duration(train_time), cpu),
        _noted(format_duration(s.get("total_time_s")), cpu),
        _throughput(tokens / train_time if train_time and tokens else None, train_time, bool(cpu)),
    ]


EPOCH_HEADER = ["run", "epoch", "step", "time", "tokens", "tokens/s", "peak GPU memory allocated / reserved (GiB)",
                "peak process RSS, CPU (GiB)"]  # fmt: skip


def _epoch_row(run: TrainRecord, summary: RunSummary, e: EpochRecord) -> list[str]:
    cpu = _on_cpu(summary)
    allocated, reserved = e.get("peak_memory_allocated_gib"), e.get("peak_memory_reserved_gib")
    gpu = "n/a (CPU run)" if cpu else f"{_gib(allocated)} / {_gib(reserved)}"
    rss = _gib(e.get("peak_rss_gib")) if cpu else "n/a (GPU run)"
    wall = e.get("wall_time_s")
    return [
        run.name, f"{e.get('epoch', 0):g}", str(e.get("global_step", NA)),
        _noted(format_duration(wall), ["CPU"] if cpu else []), f"{e.get('tokens', 0):,}",
        _throughput(e.get("tokens_per_s"), wall, cpu), gpu, rss,
    ]  # fmt: skip


MEMORY_HEADER = ["method", "run", "weights dtype", "trainable params", "weights", "gradients", "optimizer state",
                 "static total", "measured peak", "rest: activations and workspace"]  # fmt: skip


def _memory_breakdown_row(method: str, run: TrainRecord | None) -> list[str]:
    """The static memory of a method's run beside its measured peak (see ``MEMORY_HEADER``)."""
    if run is None or run.summary is None:
        return [method, run.name if run else NA] + [MISSING] * (len(MEMORY_HEADER) - 2)
    s = run.summary
    static = memory.static_memory_from_summary(s)
    trainable = s.get("trainable_params")
    peak = _largest(
        (e.get("peak_rss_gib") if _on_cpu(s) else e.get("peak_memory_allocated_gib")) for e in s.get("epochs") or []
    )
    what = "process RSS, CPU" if _on_cpu(s) else "GPU, allocated"
    measured = NA if peak is None else f"{peak:.2f} GiB ({what})"
    if _on_cpu(s):
        rest = "n/a (RSS is the whole process)"
    else:
        rest = NA if static is None or peak is None else f"{static.activations_and_workspace_gib(peak):.2f} GiB"
    if static is None:
        cells = [NA] * 4
    else:
        buffers = memory.state_buffers(method, run.hyper)
        cells = [_bytes(static.weights_bytes), _bytes(static.gradients_bytes),
                 _noted(_bytes(static.optimizer_state_bytes), [f"{buffers} per trainable parameter"]),
                 _bytes(static.total_bytes)]  # fmt: skip
    dtype = str(run.hyper.get("dtype", NA))
    return [method, run.name, dtype, NA if trainable is None else f"{trainable:,}", *cells, measured, rest]


MEASURED_HEADER = ["method", "run", "predicted static (weights, gradients, optimizer state)",
                   "measured peak allocated", "activations and workspace (allocated − static)", "peak reserved",
                   "allocator cache (reserved − allocated)"]  # fmt: skip


def _measured_row(method: str, run: TrainRecord) -> list[str]:
    """Predicted static memory against the measured CUDA peaks; a CPU run's RSS is shown but not compared."""
    s = run.summary
    if s is None:
        return [method, run.name] + [MISSING] * (len(MEASURED_HEADER) - 2)
    static = memory.static_memory_from_summary(s)
    predicted = NA if static is None else f"{static.total_gib:.2f} GiB"
    epochs = s.get("epochs") or []
    if _on_cpu(s):
        rss = _largest(e.get("peak_rss_gib") for e in epochs)
        measured = NA if rss is None else f"{rss:.2f} GiB (process RSS, CPU: not comparable)"
        return [method, run.name, predicted, measured, "n/a (CPU run)", "n/a (CPU run)", "n/a (CPU run)"]
    allocated = _largest(e.get("peak_memory_allocated_gib") for e in epochs)
    reserved = _largest(e.get("peak_memory_reserved_gib") for e in epochs)
    rest = NA if static is None or allocated is None else f"{static.activations_and_workspace_gib(allocated):.2f} GiB"
    cache = NA if allocated is None or reserved is None else f"{reserved - allocated:.2f} GiB"
    return [method, run.name, predicted, NA if allocated is None else f"{allocated:.2f} GiB", rest,
            NA if reserved is None else f"{reserved:.2f} GiB", cache]  # fmt: skip


def measured_against_predicted(analysis: Analysis) -> list[str]:
    """resources.md, studies of issue 17: every run of each method's best grid point (each seed), predicted static
    memory beside the measured peaks and what they hold beyond it."""
    runs = [r for r in analysis.runs if r.name in analysis.best_names and r.method]
    if not runs:
        return []
    return [
        "## Measured against predicted", "",
        "The static prediction above against what each best run measured: the peak allocated beyond the static part "
        "is activations, temporaries and workspace; the peak reserved beyond the peak allocated is memory the CUDA "
        "caching allocator held without using it (fragmentation and cache). A CPU run's RSS is the whole process "
        "and is not compared.", "",
        md_table(MEASURED_HEADER, [_measured_row(r.method or NA, r) for r in runs], right=range(2, 7)), "",
    ]  # fmt: skip


def memory_breakdown(analysis: Analysis) -> str:
    """One row per method: its best run (or its first run with a summary)."""
    rows = []
    for method in [m for m in METHODS if any(r.method == m for r in analysis.runs)]:
        candidates = [r for r in analysis.runs if r.method == method]
        run = next((r for r in candidates if r.name == analysis.best.get(method)), None)
        run = run or next((r for r in candidates if r.summary is not None), candidates[0])
        rows.append(_memory_breakdown_row(method, run))
    return md_table(MEMORY_HEADER, rows, right=range(3, 10)) if rows else f"_{MISSING}: no training runs_"


MEMORY_NOTE = (
    "The static part follows from the parameter counts and dtypes in `run_summary.json` (`mathsft/memory.py`): "
    "the weights (every parameter), the gradients (trainable parameters only) and the optimizer state, whose "
    "buffers per trainable parameter come from the method registry (`mathsft/methods.py`): AdamW keeps two moments, "
    "SGD one momentum buffer (none without momentum), LoRA the AdamW moments of its adapters only. On a GPU the "
    "measured peak (`torch.cuda.max_memory_allocated`) minus the static part is activations, temporaries and "
    "allocator workspace. A CPU run's peak RSS holds the whole process (Python, libraries, data), so nothing is "
    "subtracted from it and it is never compared with GPU memory."
)


def resources_markdown(analysis: Analysis) -> str:
    runs = analysis.runs
    epoch_rows = [
        _epoch_row(run, run.summary, epoch)
        for run in runs
        if run.summary is not None
        for epoch in run.summary.get("epochs") or []
    ]
    parts = [
        "# Resources",
        "",
        "One row per training run, read from its `run_summary.json`. GPU runs: peak memory is the maximum over "
        "epochs of `torch.cuda.max_memory_allocated` / `max_memory_reserved` (reset at each epoch start), in GiB. "
        "CPU runs: the peak resident set size (RSS) of the training process, in its own column, since it is not GPU "
        "memory; their times are marked (CPU). Epoch times exclude the validation passes; tokens/s is training "
        "(non-padding) tokens over the summed epoch time, marked indicative when measured over less than a minute; "
        f'total time is the whole run (loading, validation and saving included). "{MISSING}": the run has no '
        f'`run_summary.json`; "{NA}": the summary lacks the value.',
        "",
        md_table(RESOURCE_HEADER, [resource_row(r) for r in runs], right=range(5, 14)),
        "",
        "## Where the memory goes",
        "",
        MEMORY_NOTE,
        "",
        memory_breakdown(analysis),
        "",
        *(measured_against_predicted(analysis) if analysis.extended else []),
        "## Per epoch",
        "",
        md_table(EPOCH_HEADER, epoch_rows, right=range(1, 8)) if epoch_rows else f"_{MISSING}: no epoch records_",
        "",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------------------------------------

ACCURACY_HEADER = [
    "model", "evaluated", "accuracy", "95% CI", "Δ vs base (points)", "correct", "no \\boxed{}", "truncated",
    "grader timeouts",
]  # fmt: skip


def _count(summary: EvalSummary, value: int | None) -> str:
    if value is None:
        return NA
    total = (summary.get("num_problems") or 0) * (summary.get("num_samples") or 0)
    return f"{value} ({100 * value / total:.1f}%)" if total else str(value)


def accuracy_row(result: EvalResult) -> list[str]:
    """One row of the main accuracy table (see ``ACCURACY_HEADER``)."""
    row, s = result.row, result.summary
    if s is None:
        evaluated = NA if row.is_base else (row.record.run if row.record else None) or row.expected_run or NA
        return [row.label, evaluated] + [MISSING] * (len(ACCURACY_HEADER) - 2)
    if row.is_base:
        evaluated = str(s.get("model", NA))
    elif row.aggregated:  # the mean over these seeds' runs
        evaluated = ", ".join(record.run or record.path.name for _, record in row.seed_records)
    else:
        evaluated = (row.record.run if row.record else None) or str(s.get("adapter") or s.get("model") or NA)
    evaluated = _noted(evaluated, [f"seed {seed}: {MISSING}" for seed in row.missing_seeds])
    accuracy = s.get("accuracy")
    base = row.base.summary if row.base is not None else None
    if row.is_base:
        delta = "(base)"
    elif base is None or accuracy is None or base.get("accuracy") is None:
        delta = NA
    else:
        delta = f"{100 * (accuracy - base['accuracy']):+.2f}"
    samples = (s.get("num_problems") or 0) * (s.get("num_samples") or 0)
    correct = f"{round(accuracy * samples)} / {samples}" if accuracy is not None and samples else NA
    return [
        row.label, evaluated, _pct(accuracy), _interval(result.interval), delta, correct,
        _count(s, s.get("no_box")), _count(s, s.get("truncated")), _count(s, s.get("grader_timeout")),
    ]  # fmt: skip


COMPARISON_HEADER = ["comparison (a vs b)", "Δ accuracy (points)", "95% CI (points, paired bootstrap)",
                     "solved only by a", "solved only by b", "McNemar p (exact)", "significant at 5%"]  # fmt: skip


def _p_value(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def comparison_row(pair: PairResult) -> list[str]:
    """One row of the paired-comparison table (see ``COMPARISON_HEADER``)."""
    name = f"{pair.a} vs {pair.b}"
    r = pair.result
    if r is None:
        return [name, f"not compared: {pair.problem}"] + [NA] * (len(COMPARISON_HEADER) - 2)
    low, high = r.ci95_points
    test = "" if r.binary else " (sign test)"
    return [name, f"{r.difference_points:+.2f}", f"{low:+.2f} to {high:+.2f}", str(r.only_a), str(r.only_b),
            _p_value(r.p_value) + test, "yes" if r.significant else "no"]  # fmt: skip


COMPARISON_NOTE = (
    "Every model answered the same problems, so two models are compared problem by problem (paired). "
    "Δ is a's accuracy minus b's, in points, with a 95% paired-bootstrap interval (problems resampled with "
    "replacement, the same resample for both models; 10,000 resamples, seed 0). \"Solved only by\" counts the "
    "problems one model solves and the other does not; McNemar's exact p is the two-sided binomial test on those "
    "two counts (with several samples per problem: the sign test on per-problem mean scores, and the counts are "
    "problems scored higher). \"Significant at 5%\" is yes only when p < 0.05 and the interval excludes 0."
)


def comparisons_markdown(analysis: Analysis) -> str:
    if not analysis.comparisons:
        return "_No paired comparison: fewer than two finished evaluations._"
    return md_table(COMPARISON_HEADER, [comparison_row(p) for p in analysis.comparisons], right=range(1, 6))


def _breakdown_table(results: list[EvalResult], by: str) -> str:
    title = "level" if by == "by_level" else "subject"
    groups = {row_label: (s.get("by_level") if by == "by_level" else s.get("by_subject")) or {}
              for row_label, s in ((r.label, r.summary) for r in results) if s is not None}  # fmt: skip
    names: list[str] = []
    counts: dict[str, int] = {}
    for breakdown in groups.values():
        for name, group in breakdown.items():
            names += [name] if name not in names else []
            counts.setdefault(name, group["count"])
    if not names:
        return f"_{MISSING}: no evaluation has a {title} breakdown_"
    if by == "by_level":
        names.sort(key=lambda n: (0, float(n)) if n.replace(".", "", 1).isdigit() else (1, 0.0))
    table = []
    for name in names:
        cells = [f"Level {name}" if by == "by_level" else name, str(counts.get(name, NA))]
        for result in results:
            entry = groups.get(result.label, {}).get(name)
            cells.append(MISSING if result.summary is None else _pct(entry["accuracy"]) if entry else NA)
        table.append(cells)
    return md_table([title, "problems", *[r.label for r in results]], table, right=range(1, len(results) + 2))


def _sampling_table(results: list[EvalResult]) -> list[str]:
    sampled = [(r.label, r.summary) for r in results if r.summary is not None]
    sampled = [(label, summary) for label, summary in sampled if (summary.get("num_samples") or 1) > 1]
    if not sampled:
        return []
    keys: list[str] = []
    for _, summary in sampled:
        keys += [k for k in summary if k.startswith(("pass@", "maj@")) and k not in keys]
    # pass@k / maj@n keys depend on n, so the schema cannot list them: read as a plain mapping
    values: list[dict[str, Any]] = [dict(summary) for _, summary in sampled]
    table = [[label] + [_pct(v.get(k)) for k in keys] for (label, _), v in zip(sampled, values, strict=True)]
    return [
        "## Sampling: pass@k and maj@n",
        "",
        "pass@k: unbiased estimate that one of k samples is correct; maj@n: majority vote over the n samples.",
        "",
        md_table(["model", *keys], table, right=range(1, len(keys) + 1)),
        "",
    ]


SETTINGS_HEADER = ["model", "model path", "adapter", "problems", "samples", "max new tokens", "temperature",
                   "backend", "dtype", "device", "wall time", "generated tokens/s"]  # fmt: skip


def _settings_row(result: EvalResult) -> list[str]:
    s = result.summary
    if s is None:
        return [result.label] + [MISSING] * (len(SETTINGS_HEADER) - 1)
    g = s.get("generation") or {}
    device = str(s.get("device", NA))
    cpu = device.lower().startswith("cpu")
    wall = s.get("wall_time_s")
    return [
        result.label, f"`{s.get('model', NA)}`", f"`{s['adapter']}`" if s.get("adapter") else NOT_APPLICABLE,
        str(s.get("num_problems", NA)), str(g.get("num_samples", s.get("num_samples", NA))),
        str(g.get("max_new_tokens", NA)), str(g.get("temperature", NA)), str(s.get("backend", NA)),
        str(s.get("dtype", NA)), device, _noted(format_duration(wall), ["CPU"] if cpu else []),
        _throughput(s.get("generated_tokens_per_s"), s.get("generation_time_s") or wall, cpu),
    ]  # fmt: skip


def _dataset_text(scope: Scope | None) -> str:
    if scope is None:
        return MISSING
    what = "MATH-500" if scope.math500 else "smoke: not MATH-500"
    return f"`{scope.dataset}` ({scope.split} split, {scope.problems} problems; {what})"


def accuracy_markdown(analysis: Analysis) -> str:
    results = analysis.accuracy
    parts = [
        "# Accuracy",
        "",
        f"Benchmark: {_dataset_text(analysis.scope)}. Accuracy is the mean over all samples (greedy pass@1 with one "
        "sample per problem); the 95% CI is a Wilson interval over problems (a bootstrap over problems with several "
        "samples per problem), read from `summary.json` (`accuracy_ci95`) or else computed from the evaluation's "
        '`generations.jsonl`. "Δ vs base" is the change in percentage points against the base model. An answer '
        "counts when the last `\\boxed{}` of the completion is equivalent to the reference (see docs/grading.md); "
        '"no \\boxed{}" completions have no boxed answer, "truncated" ones hit the token budget. For each method the '
        f'evaluated run is its best by final validation loss. "{MISSING}": no `summary.json`; "{NA}": not available.',
        "",
        md_table(ACCURACY_HEADER, [accuracy_row(r) for r in results], right=range(2, 9)),
        "",
        *stale_notes(analysis),
        *seed_table(analysis),
        "## Paired comparisons",
        "",
        COMPARISON_NOTE,
        "",
        comparisons_markdown(analysis),
        "",
        f"Per problem: [{artifacts.PROBLEM_DIFF}]({artifacts.PROBLEM_DIFF}) lists, for each model against base, the "
        "problems it newly solves (`newly_solved`) or newly fails (`newly_failed`), with the problem's `id`, "
        f"`unique_id`, subject and level ({len(analysis.problem_diff)} records).",
        "",
        *_sampling_table(expanded(results)),
        "## By subject",
        "",
        _breakdown_table(results, "by_subject"),
        "",
        "## By level",
        "",
        _breakdown_table(results, "by_level"),
        "",
        "## Evaluation settings",
        "",
        md_table(SETTINGS_HEADER, [_settings_row(r) for r in expanded(results)], right=(3, 4, 5, 6, 10, 11)),
        "",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Tuning budget, seeds, evaluation precision (studies with seeds, checkpoint evaluations or precision records)
# ----------------------------------------------------------------------------------------------------------------

BUDGET_HEADER = ["method", "learning rates", "LoRA ranks", "learning-rate trials", "seeds", "best", "note"]
EDGE_NOTE = "best at the grid's edge: widen it"


def _point_text(g: GridResult) -> str:
    rate = NA if g.point.learning_rate is None else format_lr(g.point.learning_rate)
    return rate + (f", r {g.point.lora_r}" if g.point.lora_r is not None else "")


def edge_flag(grid: Sequence[GridResult], method: str) -> str | None:
    """``EDGE_NOTE`` (with which edge) when the method's best rate is the lowest or highest of two or more rates."""
    rates = sorted({g.point.learning_rate for g in grid if g.point.method == method and g.point.learning_rate})
    best = next((g for g in grid if g.point.method == method and g.best), None)
    if best is None or len(rates) < 2 or best.point.learning_rate not in (rates[0], rates[-1]):
        return None
    return f"{EDGE_NOTE} ({'lowest' if best.point.learning_rate == rates[0] else 'highest'} rate tried)"


def budget_table(grid: Sequence[GridResult]) -> str:
    """Per method: the rates, ranks, number of learning-rate trials (grid points) and seeds, the best grid point."""
    rows = []
    for method in [m for m in METHODS if any(g.point.method == m for g in grid)]:
        points = [g for g in grid if g.point.method == method]
        rates = sorted({g.point.learning_rate for g in points if g.point.learning_rate is not None})
        ranks = sorted({g.point.lora_r for g in points if g.point.lora_r is not None})
        seeds = sorted({s for g in points for s in g.point.seeds if s is not None})
        best = next((g for g in points if g.best), None)
        note = edge_flag(grid, method) or ("no eligible grid point" if best is None else "")
        rows.append([
            method, ", ".join(format_lr(r) for r in rates) or NA,
            ", ".join(map(str, ranks)) or NOT_APPLICABLE, str(len(points)),
            f"{len(seeds)} ({', '.join(map(str, seeds))})" if seeds else NA,
            _point_text(best) if best is not None else NA, note,
        ])  # fmt: skip
    return md_table(BUDGET_HEADER, rows, right=(3,)) if rows else f"_{MISSING}: no training runs_"


GRID_HEADER = ["method", "learning rate", "LoRA r", "seeds", "final val loss per seed", "mean final val loss",
               "accuracy (evaluated seeds)", "selected"]  # fmt: skip


def grid_table(grid: Sequence[GridResult]) -> str:
    """Every grid point with its seeds' final validation losses and their mean, on which the best is chosen."""
    rows = []
    for g in grid:
        per_seed = [("diverged" if d else _loss(v)) for v, d in zip(g.losses, g.diverged, strict=True)]
        seeds = ", ".join(NA if s is None else str(s) for s in g.point.seeds)
        accuracy = _pct(sum(g.accuracies) / len(g.accuracies)) + f" ({len(g.accuracies)})" if g.accuracies else NA
        rows.append([
            g.point.method, NA if g.point.learning_rate is None else format_lr(g.point.learning_rate),
            NA if g.point.lora_r is None else str(g.point.lora_r), seeds, ", ".join(per_seed), _loss(g.mean_loss),
            accuracy, "✓ best" if g.best else "",
        ])  # fmt: skip
    return md_table(GRID_HEADER, rows, right=(1, 2, 5, 6)) if rows else f"_{MISSING}: no training runs_"


def tuning_section(analysis: Analysis, figures: dict[str, Any]) -> list[str]:
    """How many learning-rate trials and seeds each method had, each grid point's seed mean, the sensitivity plot."""
    lines = [
        "### Tuning budget and seeds", "",
        "A grid point is one learning rate (and LoRA rank) of a method; each of its seeds is one training run. The "
        "best grid point has the lowest *mean* final validation loss over its seeds, and is eligible only when every "
        "seed finished with a finite one (ties: the smaller rate). A best rate at the lowest or highest rate tried "
        f'is flagged "{EDGE_NOTE}": the optimum may lie outside the grid.', "",
        budget_table(analysis.grid), "",
        grid_table(analysis.grid), "",
    ]  # fmt: skip
    if artifacts.LR_SENSITIVITY_PNG in figures:
        lines += [f"![Learning-rate sensitivity]({artifacts.LR_SENSITIVITY_PNG})", ""]
    return lines


PRECISION_KINDS = ["attention", "mlp", "embedding", "norm", "lm_head"]
ROUNDS_AWAY_NOTE = "mostly rounds away at the evaluation dtype"


def precision_section(analysis: Analysis) -> list[str]:
    """Per best run: the share of its fine-tuning update that survives the cast to the evaluation dtype."""
    runs = [r for r in analysis.runs if r.name in analysis.best_names and eval_precision(r) is not None]
    if not runs:
        return []
    kinds = list(PRECISION_KINDS)
    for run in runs:
        kinds += [k for k in (eval_precision(run) or {}).get("by_kind") or {} if k not in kinds]
    rows, warnings = [], []
    for run in runs:
        record = eval_precision(run) or {}
        overall, by_kind = _number(record.get("overall")), record.get("by_kind") or {}
        low, error = update_lost(record), _number(record.get("rounding_error"))
        inexact = record.get("base_exact", True) is False
        if low:
            lost = (f"the cast changes it by {_pct(error)} of its size" if inexact
                    else f"only {_pct(overall)} of the update survives the cast")  # fmt: skip
            warnings.append(f"- **{run.method}** ({run.name}): {lost} to {record.get('dtype', NA)}: "
                            f"its update {ROUNDS_AWAY_NOTE}.")  # fmt: skip
        note = [ROUNDS_AWAY_NOTE] if low else []
        note += ["base not exact in this dtype: the share counts rounding noise"] if inexact else []
        rows.append([run.method or NA, run.name, str(record.get("dtype", NA)), _pct(overall),
                     *[_pct(_number(by_kind.get(k))) for k in kinds], _pct(error), "; ".join(note)])  # fmt: skip
    header = ["method", "run", "evaluation dtype", "update surviving the cast", *kinds, "cast error", "note"]
    return [
        "### What the evaluation precision keeps", "",
        "Training keeps float32 master weights; the evaluation loads the model in the dtype shown. The share of the "
        "fine-tuning update that survives that cast is ‖cast(w_ft) − cast(w_base)‖ / ‖w_ft − w_base‖ (Frobenius "
        "norm over the tensors of each kind; LoRA: the merged weights), from `eval_precision` in each run's "
        f"`run_summary.json`; \"{NA}\": no update of that kind. Below {100 * ROUNDS_AWAY_BELOW:.0f}% the update "
        "mostly rounds away, and the accuracy measures less than the training did. \"cast error\" is "
        "‖(cast(w_ft) − cast(w_base)) − (w_ft − w_base)‖ / ‖w_ft − w_base‖: about 0 when the update survives, about "
        "1 when it rounds away. A base whose weights are not exact in the dtype (an fp32 checkpoint) moves with the "
        "cast too, so its share can exceed 100% for tiny updates; there the cast error decides (above "
        f"{100 * ROUNDS_AWAY_BELOW:.0f}%: mostly lost).", "",
        md_table(header, rows, right=range(3, 5 + len(kinds))), "",
        *warnings, *([""] if warnings else []),
    ]  # fmt: skip


def _number(value: Any) -> float | None:
    return float(value) if artifacts.is_finite_number(value) else None


def steps_section(analysis: Analysis, figures: dict[str, Any]) -> list[str]:
    if artifacts.ACCURACY_BY_STEP_PNG not in figures:
        return []
    accuracy = step_means(analysis.steps, "accuracy")
    rows = [[method, ", ".join(f"{step}: {_pct(value)}" for step, value in series)]
            for method, series in accuracy.items()]  # fmt: skip
    return [
        "### Accuracy over training", "",
        "Every saved checkpoint of each method's best run (each seed) evaluated with the same settings; step 0 is "
        "the base model, the last step the final model. Lines are the mean over seeds; the right panel is the share "
        "of answers with no `\\boxed{}` (a model that has not learnt the answer format yet).", "",
        f"![Accuracy over training]({artifacts.ACCURACY_BY_STEP_PNG})", "",
        md_table(["method", "accuracy by step (mean over seeds)"], rows), "",
    ]  # fmt: skip


def stale_notes(analysis: Analysis) -> list[str]:
    """Evaluations that scored another run than the method's best one: named, never shown as the method's."""
    notes = []
    for result in analysis.accuracy:
        for record in result.row.stale:
            if record.stage is None:  # given on its own: its row is named by its run
                notes.append(f"- `{record.path.name}` scored `{record.run}`, which is not {result.label}'s best run "
                             f"({result.row.expected_run or NA}): shown as `{record.run}`, not as {result.label}.")
                continue
            notes.append(f"- Not shown: `{record.path.name}` scored `{record.run}`, which is not {result.label}'s best "
                         f"run ({result.row.expected_run or NA}); a stale evaluation (an earlier grid or rule). Run "
                         "the study again to evaluate the best run.")  # fmt: skip
    return notes + [""] if notes else []


SEEDS_NOTE = (
    "With several training seeds, a method's row is the mean over the seeds of its best grid point; its 95% CI is a "
    "hierarchical bootstrap (10,000 resamples, seed 0): each draw resamples the seeds with replacement and the "
    "problems with replacement, one problem resample shared by all seeds of the draw (every seed answered the same "
    "problems), so it covers both the seed and the problem noise. Counts are over all seeds' answers. Paired "
    "comparisons pair by problem and by seed (seed s of one method against seed s of the other; base against every "
    "seed), with the same resampling of the differences; McNemar counts discordant (seed, problem) pairs."
)


def seed_table(analysis: Analysis) -> list[str]:
    """accuracy.md: each seed of a row over several seeds, as the one-seed rows are shown."""
    rows = [accuracy_row(seed) for result in analysis.accuracy for seed in result.seeds]
    if not rows:
        return []
    return ["## Per seed", "", SEEDS_NOTE, "", md_table(ACCURACY_HEADER, rows, right=range(2, 9)), ""]


def expanded(results: Sequence[EvalResult]) -> list[EvalResult]:
    """Each row over several seeds replaced by its seeds (for the settings and sampling tables)."""
    return [single for result in results for single in (result.seeds or [result])]


# ----------------------------------------------------------------------------------------------------------------
# report.md
# ----------------------------------------------------------------------------------------------------------------

CONVERGENCE_HEADER = ["run", "method", "learning rate", "LoRA r", "steps", "final train loss", "final val loss",
                      "lowest val loss", "selected"]  # fmt: skip


def _convergence_row(run: TrainRecord, best: dict[str, str], best_names: set[str] | None = None) -> list[str]:
    s = run.summary
    if s is None:
        return [run.name, run.method or NA] + [MISSING] * (len(CONVERGENCE_HEADER) - 2)
    train = s.get("train_loss") or []
    lowest = lowest_val_loss(run)
    final_train, final_val = _loss(float(train[-1][1]) if train else None), _loss(final_val_loss(s))
    lowest_text = f"{lowest[0]:.4f} (step {lowest[1]})" if lowest else NA
    selected = "✓ best" if best.get(run.method or "") == run.name or run.name in (best_names or set()) else ""
    diverged = divergence(s)
    if diverged is not None:  # its last losses are not the result of training: say where it broke
        where = "diverged" + ("" if diverged.step is None else f" at step {diverged.step}")
        final_train, final_val, selected = where, where, "diverged"
        lowest_text = lowest_text if lowest else where
    if run.interrupted:
        selected = "interrupted"
    lora_r = NOT_APPLICABLE if run.method in METHODS and not METHODS[run.method].peft else (
        NA if run.lora_r is None else str(run.lora_r))  # fmt: skip
    return [
        run.name, run.method or NA, NA if run.learning_rate is None else format_lr(run.learning_rate), lora_r,
        str(s.get("global_step", NA)), final_train, final_val, lowest_text, selected,
    ]  # fmt: skip


def convergence_table(analysis: Analysis) -> str:
    rows = [_convergence_row(run, analysis.best, analysis.best_names) for run in analysis.runs]
    return md_table(CONVERGENCE_HEADER, rows, right=(2, 3, 4, 5, 6, 7)) if rows else f"_{MISSING}: no training runs_"


def optimizer_settings(method: str | None, hyper: dict[str, Any]) -> str:
    """The optimizer hyperparameters the run's method owns (from the registry), e.g. ``adam_beta1 0.9, ...``."""
    if method not in METHODS:
        return NA
    keys = [k for k in METHODS[method].hyperparameters if k not in LORA_KEYS and k in hyper]
    return ", ".join(f"{k} {hyper[k]}" for k in keys) or NA


HYPERPARAMETER_HEADER = ["run", "optimizer", "lr", "schedule", "warmup", "weight decay", "optimizer settings",
                         "epochs", "batch", "LoRA", "seed"]  # fmt: skip


def _hyperparameter_row(run: TrainRecord) -> list[str]:
    h = run.hyper
    if not h:
        return [run.name] + [MISSING] * (len(HYPERPARAMETER_HEADER) - 1)
    lora = NOT_APPLICABLE
    if h.get("use_peft"):
        lora = f"r {h.get('lora_r')}, alpha {h.get('lora_alpha')}, dropout {h.get('lora_dropout')}"
    rate = h.get("learning_rate")
    return [
        run.name, str(h.get("optimizer", NA)), NA if rate is None else format_lr(rate),
        _scheduler(h.get("lr_scheduler_type")), str(h.get("warmup_steps", NA)), str(h.get("weight_decay", NA)),
        optimizer_settings(run.method, h), str(h.get("num_train_epochs", NA)), batch_text(h), lora,
        str(h.get("seed", NA)),
    ]  # fmt: skip


def _differs(values: list[Any]) -> bool:
    return len({json.dumps(v, sort_keys=True) for v in values}) > 1


def _finished(runs: list[TrainRecord]) -> list[RunSummary]:
    return [r.summary for r in runs if r.summary is not None]


def _training_data_line(summaries: list[RunSummary]) -> list[str]:
    if not summaries or not summaries[0].get("data"):
        return [f"- **Training data:** {MISSING}"]
    first = summaries[0]
    data, hyper = first["data"], first.get("hyperparameters") or {}
    lines = [
        f"- **Training data:** `{data.get('dataset_name')}` split `{data.get('dataset_train_split')}`, "
        f"{data.get('num_train', NA)} train / {data.get('num_validation', NA)} validation examples "
        f"(validation fraction {data.get('validation_fraction')}, split seed {data.get('split_seed')}); "
        f"max length {hyper.get('max_length', NA)} tokens, overlong examples: {data.get('overlong')} "
        f"({first.get('dropped_examples', NA)} dropped)."
    ]
    if _differs([s.get("data") for s in summaries]):
        lines.append("- **Warning:** the runs differ in their data settings; see each run_summary.json.")
    return lines


def _template_lines(system: Any) -> list[str]:
    from mathsft.template import CHAT_TEMPLATE_KWARGS, END_OF_TURN, INSTRUCTION

    return [
        f"- **Template:** the model's chat template with {CHAT_TEMPLATE_KWARGS}, system turn: "
        f"{repr(system) if system else 'none'}; the user turn is the problem followed by the instruction below, "
        f"in training and in evaluation alike; the assistant turn ends with `{END_OF_TURN}`, which training makes "
        "the end-of-sequence token.",
        "",
        "  ```text",
        "  <problem>" + INSTRUCTION.replace("\n", "\n  "),
        "  ```",
    ]


def _evaluation_lines(summaries: list[EvalSummary]) -> list[str]:
    if not summaries:
        return [f"- **Evaluation:** {MISSING}"]
    e = summaries[0]
    g = e.get("generation") or {}
    decoding = "greedy" if not g.get("temperature") else f"temperature {g.get('temperature')}, top-p {g.get('top_p')}"
    lines = [
        f"- **Evaluation:** `{e.get('dataset', NA)}` split `{e.get('split', NA)}`, {e.get('num_problems', NA)} "
        f"problems, {g.get('num_samples', e.get('num_samples', NA))} sample(s) each, {decoding}, at most "
        f"{g.get('max_new_tokens', NA)} new tokens, backend {e.get('backend', NA)}, {e.get('dtype', NA)}; "
        "the same prompt as in training; the last `\\boxed{}` is graded (details in accuracy.md)."
    ]
    settings = [[x.get("dataset"), x.get("split"), x.get("num_problems"), x.get("generation")] for x in summaries]
    if _differs(settings):
        lines.append("- **Warning:** the evaluations differ in their settings; see accuracy.md.")
    return lines


def _setup_section(analysis: Analysis) -> list[str]:
    finished = _finished(analysis.runs)
    evaluated = [e.summary for e in analysis.evals if e.summary is not None]
    models = sorted({str(r.hyper.get("model_name_or_path")) for r in analysis.runs if r.summary}) or [MISSING]
    data = finished[0].get("data") if finished else None
    lines = ["## Setup", "", f"- **Model:** {', '.join(f'`{m}`' for m in models)}"]
    lines += _training_data_line(finished)
    lines += _template_lines(data.get("system_prompt") if data else None)
    seeds = sorted({str(r.hyper.get("seed")) for r in analysis.runs if r.summary})
    eval_seeds = sorted({str((e.get("generation") or {}).get("seed")) for e in evaluated})
    split_seed = data.get("split_seed", NA) if data else NA
    lines.append(
        f"- **Seeds:** training {', '.join(seeds) or MISSING}; data split {split_seed}; "
        f"evaluation sampling {', '.join(eval_seeds) or MISSING}."
    )
    lines += _evaluation_lines(evaluated)
    versions = finished[0].get("versions") if finished else None
    if versions:
        text = ", ".join(f"{k} {v}" for k, v in versions.items())
        if _differs([s.get("versions") for s in finished]):
            text += " (of the first run; the runs differ, see each run_summary.json)"
        lines.append(f"- **Versions:** {text}.")
    else:
        lines.append(f"- **Versions:** {MISSING}")
    table = md_table(HYPERPARAMETER_HEADER, [_hyperparameter_row(r) for r in analysis.runs])
    return lines + ["", "### Hyperparameters", "", table, ""]


def scope_paragraph(analysis: Analysis) -> str:
    """What the evaluation data is, and, for anything but the whole of MATH-500, what this report cannot show."""
    scope = analysis.scope
    if scope is None:
        return "No evaluation has finished yet: this report shows training only."
    if scope.math500:
        return (f"The evaluation data is MATH-500: `{scope.dataset}` ({scope.split} split, all {scope.problems} "
                f"problems); one model's accuracy is known to about "
                f"±{scope.half_width_points:.1f} points (95% interval at 50% accuracy), and differences between "
                "models are judged by the paired comparisons.")  # fmt: skip
    cpu = any(_on_cpu(s) for s in _finished(analysis.runs))
    return (
        f"**Smoke study, not MATH-500.** The evaluation data is `{scope.dataset}` ({scope.split} split, "
        f"{scope.problems} problems), not the 500 test problems of "
        "MATH-500. This report checks that the pipeline works end to end; it cannot show how the methods compare on "
        f"MATH-500: with {scope.problems} problems one model's accuracy is known only to about "
        f"±{scope.half_width_points:.0f} points (95% interval at 50% accuracy), and a small model, small data and "
        "small budgets need not rank the methods as the real study would."
        + (" Times and memory were measured on a CPU: they say nothing about a GPU." if cpu else "")
    )


def _header(analysis: Analysis, sources: list[str]) -> list[str]:
    finished = _finished(analysis.runs)
    models = sorted({str(r.hyper.get("model_name_or_path")) for r in analysis.runs if r.summary})
    methods = [m for m in METHODS if any(r.method == m for r in analysis.runs)] or [MISSING]
    model = f"`{models[0]}`" if len(models) == 1 else ", ".join(f"`{m}`" for m in models) or MISSING
    data = finished[0].get("data") if finished else None
    training = (f"`{data.get('dataset_name')}` split `{data.get('dataset_train_split')}` ({data.get('num_train', NA)} "
                "train examples)") if data else MISSING  # fmt: skip
    return [
        f"# Fine-tuning {model} with {', '.join(methods)}",
        "",
        f"Built by `make_report.py` from {', '.join(f'`{s}`' for s in sources)} on {time.strftime('%Y-%m-%d %H:%M')}. "
        f'Every number comes from the runs\' files; "{MISSING}" marks a run or evaluation without results.',
        "",
        f"- **Model:** {model}",
        f"- **Training data:** {training}",
        f"- **Evaluation data:** {_dataset_text(analysis.scope)}",
        "",
        scope_paragraph(analysis),
        "",
        "The study asks, in order: how each optimizer converges (loss curves), what each costs (memory, time, "
        "throughput) and what each buys (accuracy on the evaluation data against the base model).",
        "",
    ]


def _findings_section(analysis: Analysis) -> list[str]:
    lines = [
        "## Findings",
        "",
        "Sentences generated from the numbers below (`mathsft/findings.py`); each quotes the number it rests on. An "
        "accuracy difference is called significant only when its paired 95% interval excludes 0 and McNemar's "
        "p < 0.05.",
        "",
    ]
    lines += [f"- {sentence}" for sentence in analysis.findings] or ["_No finding: no comparable numbers yet._"]
    return lines + [""]


def report_markdown(analysis: Analysis, figures: dict[str, Any], sources: list[str]) -> str:
    missing = [r.name for r in analysis.runs if r.summary is None]
    missing += [r.label for r in analysis.accuracy if r.summary is None]
    missing += [f"{r.label} seed {seed}" for r in analysis.accuracy for seed in r.row.missing_seeds]
    lines = [
        *_header(analysis, sources),
        *_findings_section(analysis),
        *_setup_section(analysis),
        "## 1. Convergence", "", BEST_RULE, "",
        "![Training loss](loss_train.png)", "", "![Validation loss](loss_val.png)", "",
        convergence_table(analysis), "",
        *(tuning_section(analysis, figures) if analysis.extended else []),
    ]  # fmt: skip
    unplotted = {name: figures[name]["missing"] for name in (artifacts.LOSS_TRAIN_PNG, artifacts.LOSS_VAL_PNG)}
    if any(unplotted.values()):
        lines += [
            f"Not plotted (no data): training loss {', '.join(unplotted[artifacts.LOSS_TRAIN_PNG]) or NA}; "
            f"validation loss {', '.join(unplotted[artifacts.LOSS_VAL_PNG]) or NA}.",
            "",
        ]
    lines += [
        "## 2. Resources",
        "",
        "Peak memory, time and throughput of each run; where the memory goes (weights, gradients, optimizer state) "
        "and per-epoch numbers in [resources.md](resources.md).",
        "",
        md_table(RESOURCE_HEADER, [resource_row(r) for r in analysis.runs], right=range(5, 14))
        if analysis.runs else f"_{MISSING}: no training runs_",
        "",
        "## 3. Accuracy",
        "",
        "Base model against each method's best run; per-subject and per-level breakdowns, sampling metrics, "
        f"evaluation settings in [accuracy.md](accuracy.md), per-problem changes in "
        f"[{artifacts.PROBLEM_DIFF}]({artifacts.PROBLEM_DIFF}).",
        "",
        md_table(ACCURACY_HEADER, [accuracy_row(r) for r in analysis.accuracy], right=range(2, 9)),
        "",
        *stale_notes(analysis),
        *([SEEDS_NOTE, ""] if any(r.row.aggregated for r in analysis.accuracy) else []),
        COMPARISON_NOTE,
        "",
        comparisons_markdown(analysis),
        "",
        *steps_section(analysis, figures),
        *precision_section(analysis),
    ]  # fmt: skip
    if missing:
        lines += ["## Missing", "", *[f"- {name}: {MISSING}" for name in missing], ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Writing, and checking what was written
# ----------------------------------------------------------------------------------------------------------------


def write_report(sources: Sequence[str | Path], output: str | Path, log_scale: bool = False) -> Path:
    """Write the whole report of one study into ``output`` from study/run/eval folders; returns report.md's path."""
    runs, evals = collect(sources)
    if not runs and not evals:
        raise UserError(f"no training runs or evaluations found in {', '.join(str(s) for s in sources)}")
    analysis = analyze(runs, evals)
    output = Path(output)
    artifacts.check_writable_dir(output, "report folder")  # one line, not a traceback, for a file in the way
    from mathsft.ownership import refuse_report_clashes

    refuse_report_clashes(output)  # a user's report.md is never replaced
    output.mkdir(parents=True, exist_ok=True)
    figures = {
        name: plot_losses(runs, analysis.best, kind, output / name, log_scale, analysis.best_names)
        for name, kind in ((artifacts.LOSS_TRAIN_PNG, "train"), (artifacts.LOSS_VAL_PNG, "val"))
    }
    if analysis.extended:  # a study without seeds, checkpoints or precision records renders as before
        lr_png, steps_png = artifacts.LR_SENSITIVITY_PNG, artifacts.ACCURACY_BY_STEP_PNG
        figures[lr_png] = plot_lr_sensitivity(analysis.grid, output / lr_png)
        if analysis.steps:
            figures[steps_png] = plot_accuracy_by_step(analysis.steps, output / steps_png)
    artifacts.write_json_atomic(output / artifacts.FIGURES_JSON, figures)
    diff = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in analysis.problem_diff)
    artifacts.write_text_atomic(output / artifacts.PROBLEM_DIFF, diff)
    artifacts.write_text_atomic(output / artifacts.RESOURCES_MD, resources_markdown(analysis))
    artifacts.write_text_atomic(output / artifacts.ACCURACY_MD, accuracy_markdown(analysis))
    report = output / artifacts.REPORT_MD
    artifacts.write_text_atomic(report, report_markdown(analysis, figures, [str(s) for s in sources]))
    return report


def write_reports(sources: Sequence[str | Path], output: str | Path, log_scale: bool = False) -> list[Path]:
    """One report per study: several study dirs go to ``output/<study name>/`` (see ``results.plan_reports``)."""
    return [write_report(group, folder, log_scale) for group, folder in plan_reports(sources, output)]


CHECKED_TABLES = {
    artifacts.REPORT_MD: (("convergence", CONVERGENCE_HEADER), ("resources", RESOURCE_HEADER)),
    artifacts.RESOURCES_MD: (("resources", RESOURCE_HEADER), ("memory breakdown", MEMORY_HEADER),
                             ("per epoch", EPOCH_HEADER)),
}  # fmt: skip


def missing_cells(report_dir: str | Path) -> list[str]:
    """Every "missing" or "—" cell of the convergence and resources tables of a written report (report.md and
    resources.md), as ``"report.md convergence: sgd-lr0.1 / LoRA r: —"``; an absent table counts too. A finished
    study's report has none."""
    found = []
    for file_name, tables in CHECKED_TABLES.items():
        text = (Path(report_dir) / file_name).read_text(encoding="utf-8")
        for title, header in tables:
            rows = table_rows(text, header)
            if rows is None:
                found.append(f"{file_name} {title}: no table")
                continue
            found += [
                f"{file_name} {title}: {row[0]} / {column}: {cell}"
                for row in rows
                for column, cell in zip(header, row, strict=False)
                if cell in (MISSING, NA)
            ]
    return found
