"""The study report, built only from files: ``run_summary.json`` of each training run, ``summary.json`` of each
evaluation (and the study's ``stage_config.json`` files to know which run an evaluation scored).

    write_report(["runs/study-smoke"], "runs/study-smoke/report")

writes ``report.md`` (settings, then convergence, resources and accuracy, in the order the study asks its
questions), ``loss_train.png``, ``loss_val.png``, ``figures.json`` (what each figure plots), ``resources.md`` and
``accuracy.md``. Nothing is typed by hand: a missing file is shown as "missing", a value a file lacks as "—".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mathsft import artifacts
from mathsft.artifacts import BEST_RULE, EvalRecord, TrainRecord, final_val_loss, format_lr
from mathsft.errors import UserError
from mathsft.methods import LORA_KEYS, METHODS
from mathsft.progress import format_duration
from mathsft.results import AccuracyRow, accuracy_rows, best_runs, collect

MISSING = "missing"  # the whole file is absent (a run or an evaluation that did not finish)
NA = "—"  # the file exists but lacks this value
OTHER_COLORS = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


# ----------------------------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------------------------


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A Markdown table; columns whose index is in ``right`` are right-aligned (numbers)."""
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return NA if value is None else f"{100 * value:.2f}%"


def _loss(value: float | None) -> str:
    return NA if value is None else f"{value:.4f}"


def _scheduler(value: Any) -> str:
    return NA if value is None else str(value).removeprefix("SchedulerType.").lower()


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


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------


def plot_losses(
    runs: list[TrainRecord], best: dict[tuple[str, str], str], kind: str, path: Path, log_scale: bool = False
) -> dict[str, Any]:
    """Plot train (``kind="train"``) or validation loss of every run; returns what was drawn (for figures.json).

    One colour per method; with several runs per method the best is a thick solid line and the others thin dashed.
    Vertical dotted lines mark epoch ends (the ``global_step`` of each epoch record).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "train_loss" if kind == "train" else "eval_loss"
    title = "Training loss" if kind == "train" else "Validation loss"
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    lines, missing = [], []
    per_method: dict[tuple[str, str], int] = {}
    for run in runs:
        per_method[(run.group, run.method or run.name)] = per_method.get((run.group, run.method or run.name), 0) + 1
    others = iter(OTHER_COLORS * 10)
    colors: dict[str, str] = {}
    dash_index: dict[tuple[str, str], int] = {}
    for run in runs:
        points = [(float(s), float(v)) for s, v in (run.summary or {}).get(key) or [] if math.isfinite(float(v))]
        if log_scale:
            points = [(s, v) for s, v in points if v > 0]
        if not points:
            missing.append(run.name)
            continue
        method = run.method or run.name
        color = colors.setdefault(method, METHODS[method].color if method in METHODS else next(others))
        is_best = best.get((run.group, run.method or "")) == run.name
        several = per_method[(run.group, method)] > 1
        label = run.name + (" (best)" if is_best and several else "")
        if is_best or not several:
            style = {"linestyle": "-", "linewidth": 2.4, "alpha": 1.0}
        else:
            i = dash_index[(run.group, method)] = dash_index.get((run.group, method), -1) + 1
            style = {"linestyle": ["--", ":", "-."][i % 3], "linewidth": 1.2, "alpha": 0.75}
        marker = {"marker": "o", "markersize": 3.5} if kind == "val" else {}
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, color=color, label=label, **style, **marker)
        lines.append({"label": label, "run": run.name, "method": run.method, "best": is_best, "points": len(points)})

    boundaries = sorted(
        {
            (int(e["global_step"]), round(float(e.get("epoch", 0))))
            for run in runs
            for e in (run.summary or {}).get("epochs") or []
            if e.get("global_step") is not None and e.get("complete", True)  # a stopped run's partial epoch is no end
        }
    )
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
    return {
        "title": title,
        "lines": lines,
        "missing": missing,
        "epoch_boundaries": [step for step, _ in boundaries],
        "log_scale": log_scale,
    }


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------

RESOURCE_HEADER = [
    "run", "method", "device", "precision", "batch (per device × accum × procs = effective)", "trainable params",
    "total params", "peak memory allocated (GiB)", "peak memory reserved (GiB)", "time per epoch", "train time",
    "total time", "tokens/s",
]  # fmt: skip


def resource_row(run: TrainRecord) -> list[str]:
    """One row of the resources table (see ``RESOURCE_HEADER``)."""
    s = run.summary
    name = run.name + (" (interrupted)" if run.interrupted else "")
    if s is None:
        return [name, run.method or NA] + [MISSING] * (len(RESOURCE_HEADER) - 2)
    epochs = s.get("epochs") or []
    device = s.get("device_name") or NA
    if (s.get("num_processes") or 1) > 1:
        device = f"{s['num_processes']} × {device}"
    trainable, total = s.get("trainable_params"), s.get("total_params")
    trainable_text = f"{trainable:,} ({100 * trainable / total:.2f}%)" if trainable and total else NA

    def peak(field: str) -> float | None:
        values = [e[field] for e in epochs if e.get(field) is not None]
        return max(values) if values else None

    if s.get("memory_kind") == "cuda":
        allocated, reserved = peak("peak_memory_allocated_gib"), peak("peak_memory_reserved_gib")
        allocated_text = NA if allocated is None else f"{allocated:.2f}"
        reserved_text = NA if reserved is None else f"{reserved:.2f}"
    else:  # CPU: peak resident set size of the process; "reserved" has no CPU counterpart
        rss = peak("peak_rss_gib")
        allocated_text = NA if rss is None else f"{rss:.2f} (RSS)"
        reserved_text = "n/a (CPU)"
    walls = [e.get("wall_time_s") for e in epochs]
    train_time = sum(w for w in walls if w is not None) if walls else None
    tokens = sum(e.get("tokens") or 0 for e in epochs)
    tokens_per_s = f"{tokens / train_time:,.0f}" if train_time and tokens else NA
    return [
        name,
        run.method or NA,
        device,
        precision(run.hyper),
        batch_text(run.hyper),
        trainable_text,
        f"{total:,}" if total else NA,
        allocated_text,
        reserved_text,
        ", ".join(format_duration(w) for w in walls) if walls else NA,
        format_duration(train_time),
        format_duration(s.get("total_time_s")),
        tokens_per_s,
    ]


def resources_markdown(runs: list[TrainRecord]) -> str:
    epoch_rows = []
    for run in runs:
        for e in (run.summary or {}).get("epochs") or []:
            memory = (
                f"{e['peak_memory_allocated_gib']:.2f} / {e['peak_memory_reserved_gib']:.2f}"
                if e.get("peak_memory_allocated_gib") is not None and e.get("peak_memory_reserved_gib") is not None
                else f"{e['peak_rss_gib']:.2f} (RSS)"
                if e.get("peak_rss_gib") is not None
                else NA
            )
            tps = e.get("tokens_per_s")
            epoch_rows.append(
                [
                    run.name,
                    f"{e.get('epoch', 0):g}",
                    str(e.get("global_step", NA)),
                    format_duration(e.get("wall_time_s")),
                    f"{e.get('tokens', 0):,}",
                    NA if tps is None else f"{tps:,.0f}",
                    memory,
                ]
            )
    parts = [
        "# Resources",
        "",
        "One row per training run, read from its `run_summary.json`. Peak memory is the maximum over epochs of "
        "`torch.cuda.max_memory_allocated` / `max_memory_reserved` (reset at each epoch start), in GiB; on CPU runs "
        'it is the peak resident set size of the training process, marked "(RSS)". Epoch times exclude the '
        "validation passes; tokens/s is training (non-padding) tokens over the summed epoch time; total time is the "
        f'whole run (loading, validation and saving included). "{MISSING}": the run has no `run_summary.json`; '
        f'"{NA}": the summary lacks the value.',
        "",
        md_table(RESOURCE_HEADER, [resource_row(r) for r in runs], right=range(5, 13)),
        "",
        "## Per epoch",
        "",
        md_table(
            ["run", "epoch", "step", "time", "tokens", "tokens/s", "peak memory allocated / reserved (GiB)"],
            epoch_rows,
            right=range(1, 7),
        )
        if epoch_rows
        else f"_{MISSING}: no epoch records_",
        "",
    ]
    return "\n".join(parts)


ACCURACY_HEADER = [
    "model", "evaluated", "accuracy", "Δ vs base (points)", "correct", "no \\boxed{}", "truncated", "grader timeouts",
]  # fmt: skip


def _count(summary: dict[str, Any], key: str) -> str:
    if summary.get(key) is None:
        return NA
    total = (summary.get("num_problems") or 0) * (summary.get("num_samples") or 0)
    share = f" ({100 * summary[key] / total:.1f}%)" if total else ""
    return f"{summary[key]}{share}"


def accuracy_row(row: AccuracyRow) -> list[str]:
    """One row of the main accuracy table (see ``ACCURACY_HEADER``)."""
    record = row.record
    if record is None or record.summary is None:
        evaluated = (record.run if record else None) or row.expected_run or NA
        if row.label.endswith("base") and record is None:
            evaluated = NA
        return [row.label, evaluated] + [MISSING] * (len(ACCURACY_HEADER) - 2)
    s = record.summary
    if row.label.endswith("base") and row.base is None:
        evaluated = str(s.get("model", NA))
    else:
        evaluated = record.run or str(s.get("adapter") or s.get("model") or NA)
    accuracy = s.get("accuracy")
    if row.base is None:
        delta = "(base)" if row.label.endswith("base") else NA
    elif row.base.summary is None or accuracy is None:
        delta = NA
    else:
        delta = f"{100 * (accuracy - row.base.summary['accuracy']):+.2f}"
    samples = (s.get("num_problems") or 0) * (s.get("num_samples") or 0)
    correct = f"{round(accuracy * samples)} / {samples}" if accuracy is not None and samples else NA
    return [
        row.label, evaluated, _pct(accuracy), delta, correct,
        _count(s, "no_box"), _count(s, "truncated"), _count(s, "grader_timeout"),
    ]  # fmt: skip


def _breakdown_table(rows: list[AccuracyRow], key: str, title: str) -> str:
    names: list[str] = []
    counts: dict[str, int] = {}
    for row in rows:
        for name, stats in ((row.record.summary or {}).get(key) or {} if row.record else {}).items():
            if name not in names:
                names.append(name)
            counts.setdefault(name, stats.get("count"))
    if not names:
        return f"_{MISSING}: no evaluation has a {title} breakdown_"
    if key == "by_level":
        names.sort(key=lambda n: (0, float(n)) if n.replace(".", "", 1).isdigit() else (1, 0.0))
    header = [title, "problems"] + [row.label for row in rows]
    table = []
    for name in names:
        cells = [f"Level {name}" if key == "by_level" else name, str(counts.get(name, NA))]
        for row in rows:
            if row.record is None or row.record.summary is None:
                cells.append(MISSING)
            else:
                stats = (row.record.summary.get(key) or {}).get(name)
                cells.append(_pct(stats["accuracy"]) if stats else NA)
        table.append(cells)
    return md_table(header, table, right=range(1, len(header)))


def accuracy_markdown(runs: list[TrainRecord], evals: list[EvalRecord]) -> str:
    rows = accuracy_rows(runs, evals)
    summaries = [r.record.summary for r in rows if r.record and r.record.summary]
    first = summaries[0] if summaries else {}
    dataset = f"`{first.get('dataset', NA)}` ({first.get('split', NA)} split)" if first else MISSING
    parts = [
        "# Accuracy",
        "",
        f"Benchmark: {dataset}. Accuracy is the mean over all samples (greedy pass@1 with one sample per problem); "
        '"Δ vs base" is the change in percentage points against the base model. An answer counts when the last '
        '`\\boxed{}` of the completion is equivalent to the reference (see docs/grading.md); "no \\boxed{}" '
        'completions have no boxed answer, "truncated" ones hit the token budget. For each method the evaluated '
        f'run is its best by final validation loss. "{MISSING}": no `summary.json`; "{NA}": not available.',
        "",
        md_table(ACCURACY_HEADER, [accuracy_row(r) for r in rows], right=range(2, 8)),
        "",
    ]
    sampled = [r for r in rows if r.record and r.record.summary and (r.record.summary.get("num_samples") or 1) > 1]
    if sampled:
        keys: list[str] = []
        for row in sampled:
            keys += [k for k in row.record.summary if k.startswith(("pass@", "maj@")) and k not in keys]
        table = [[row.label] + [_pct(row.record.summary.get(k)) for k in keys] for row in sampled]
        parts += [
            "## Sampling: pass@k and maj@n",
            "",
            "pass@k: unbiased estimate that one of k samples is correct; maj@n: majority vote over the n samples.",
            "",
            md_table(["model", *keys], table, right=range(1, len(keys) + 1)),
            "",
        ]
    parts += [
        "## By subject",
        "",
        _breakdown_table(rows, "by_subject", "subject"),
        "",
        "## By level",
        "",
        _breakdown_table(rows, "by_level", "level"),
        "",
        "## Evaluation settings",
        "",
        md_table(
            [
                "model",
                "model path",
                "adapter",
                "problems",
                "samples",
                "max new tokens",
                "temperature",
                "backend",
                "dtype",
                "device",
                "wall time",
                "generated tokens/s",
            ],
            [_settings_row(r) for r in rows],
            right=(3, 4, 5, 6, 10, 11),
        ),  # fmt: skip
        "",
    ]
    return "\n".join(parts)


def _settings_row(row: AccuracyRow) -> list[str]:
    if row.record is None or row.record.summary is None:
        return [row.label] + [MISSING] * 11
    s = row.record.summary
    g = s.get("generation") or {}
    tps = s.get("generated_tokens_per_s")
    return [
        row.label, f"`{s.get('model', NA)}`", f"`{s['adapter']}`" if s.get("adapter") else NA,
        str(s.get("num_problems", NA)), str(g.get("num_samples", s.get("num_samples", NA))),
        str(g.get("max_new_tokens", NA)), str(g.get("temperature", NA)), str(s.get("backend", NA)),
        str(s.get("dtype", NA)), str(s.get("device", NA)), format_duration(s.get("wall_time_s")),
        NA if tps is None else f"{tps:,.0f}",
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# report.md
# ----------------------------------------------------------------------------------------------------------------


def _convergence_table(runs: list[TrainRecord], best: dict[tuple[str, str], str]) -> str:
    rows = []
    for run in runs:
        s = run.summary
        if s is None:
            rows.append([run.name, run.method or NA] + [MISSING] * 7)
            continue
        train, val = s.get("train_loss") or [], s.get("eval_loss") or []
        finite = [(v, step) for step, v in val if math.isfinite(float(v))]
        lowest = f"{min(finite)[0]:.4f} (step {min(finite)[1]})" if finite else NA
        selected = "✓ best" if best.get((run.group, run.method or "")) == run.name else ""
        if run.interrupted:
            selected = "interrupted"
        rows.append(
            [
                run.name,
                run.method or NA,
                NA if run.learning_rate is None else format_lr(run.learning_rate),
                NA if run.lora_r is None else str(run.lora_r),
                str(s.get("global_step", NA)),
                _loss(float(train[-1][1]) if train else None),
                _loss(final_val_loss(s)) if val else NA,
                lowest,
                selected,
            ]
        )
    header = ["run", "method", "learning rate", "LoRA r", "steps", "final train loss", "final val loss",
              "lowest val loss", "selected"]  # fmt: skip
    return md_table(header, rows, right=(2, 3, 4, 5, 6, 7))


def optimizer_settings(method: str | None, hyper: dict[str, Any]) -> str:
    """The optimizer hyperparameters the run's method owns (from the registry), e.g. ``adam_beta1 0.9, ...``."""
    if method not in METHODS:
        return NA
    keys = [k for k in METHODS[method].hyperparameters if k not in LORA_KEYS and k in hyper]
    return ", ".join(f"{k} {hyper[k]}" for k in keys) or NA


def _hyperparameter_table(runs: list[TrainRecord]) -> str:
    rows = []
    for run in runs:
        h = run.hyper
        if not h:
            rows.append([run.name] + [MISSING] * 10)
            continue
        lora = NA
        if h.get("use_peft"):
            lora = f"r {h.get('lora_r')}, alpha {h.get('lora_alpha')}, dropout {h.get('lora_dropout')}"
        rate = h.get("learning_rate")
        rows.append(
            [
                run.name,
                str(h.get("optimizer", NA)),
                NA if rate is None else format_lr(rate),
                _scheduler(h.get("lr_scheduler_type")),
                str(h.get("warmup_steps", NA)),
                str(h.get("weight_decay", NA)),
                optimizer_settings(run.method, h),
                str(h.get("num_train_epochs", NA)),
                batch_text(h),
                lora,
                str(h.get("seed", NA)),
            ]
        )
    header = ["run", "optimizer", "lr", "schedule", "warmup", "weight decay", "optimizer settings", "epochs", "batch",
              "LoRA", "seed"]  # fmt: skip
    return md_table(header, rows)


def _differs(values: list[Any]) -> bool:
    return len({json.dumps(v, sort_keys=True) for v in values}) > 1


def _setup_section(runs: list[TrainRecord], evals: list[EvalRecord]) -> list[str]:
    from mathsft.template import CHAT_TEMPLATE_KWARGS, END_OF_TURN, INSTRUCTION

    finished = [r for r in runs if r.summary]
    first = finished[0].summary if finished else {}
    hyper, data = first.get("hyperparameters", {}), first.get("data", {})
    models = sorted({str(r.hyper.get("model_name_or_path")) for r in finished}) or [MISSING]
    lines = ["## Setup", ""]
    lines.append(f"- **Model:** {', '.join(f'`{m}`' for m in models)}")
    if data:
        lines.append(
            f"- **Training data:** `{data.get('dataset_name')}` split `{data.get('dataset_train_split')}`, "
            f"{data.get('num_train', NA)} train / {data.get('num_validation', NA)} validation examples "
            f"(validation fraction {data.get('validation_fraction')}, split seed {data.get('split_seed')}); "
            f"max length {hyper.get('max_length', NA)} tokens, overlong examples: {data.get('overlong')} "
            f"({first.get('dropped_examples', NA)} dropped)."
        )
        if _differs([{k: v for k, v in r.summary.get("data", {}).items()} for r in finished]):
            lines.append("- **Warning:** the runs differ in their data settings; see each run_summary.json.")
    else:
        lines.append(f"- **Training data:** {MISSING}")
    system = data.get("system_prompt") if data else None
    lines += [
        f"- **Template:** the model's chat template with {CHAT_TEMPLATE_KWARGS}, system turn: "
        f"{repr(system) if system else 'none'}; the user turn is the problem followed by the instruction below, "
        f"in training and in evaluation alike; the assistant turn ends with `{END_OF_TURN}`, which training makes "
        "the end-of-sequence token.",
        "",
        "  ```text",
        "  <problem>" + INSTRUCTION.replace("\n", "\n  "),
        "  ```",
    ]
    seeds = sorted({str(r.hyper.get("seed")) for r in finished})
    eval_seeds = sorted({str((e.summary.get("generation") or {}).get("seed")) for e in evals if e.summary})
    split_seed = data.get("split_seed", NA) if data else NA
    lines.append(
        f"- **Seeds:** training {', '.join(seeds) or MISSING}; data split {split_seed}; "
        f"evaluation sampling {', '.join(eval_seeds) or MISSING}."
    )
    evaluated = [e.summary for e in evals if e.summary]
    if evaluated:
        e = evaluated[0]
        g = e.get("generation") or {}
        decoding = (
            "greedy" if not g.get("temperature") else f"temperature {g.get('temperature')}, top-p {g.get('top_p')}"
        )
        lines.append(
            f"- **Evaluation:** `{e.get('dataset', NA)}` split `{e.get('split', NA)}`, {e.get('num_problems', NA)} "
            f"problems, {g.get('num_samples', e.get('num_samples', NA))} sample(s) each, {decoding}, at most "
            f"{g.get('max_new_tokens', NA)} new tokens, backend {e.get('backend', NA)}, {e.get('dtype', NA)}; "
            "the same prompt as in training; the last `\\boxed{}` is graded (details in accuracy.md)."
        )
        if _differs([{k: x.get(k) for k in ("dataset", "split", "num_problems", "generation")} for x in evaluated]):
            lines.append("- **Warning:** the evaluations differ in their settings; see accuracy.md.")
    else:
        lines.append(f"- **Evaluation:** {MISSING}")
    versions = first.get("versions") or {}
    if versions:
        text = ", ".join(f"{k} {v}" for k, v in versions.items())
        if _differs([r.summary.get("versions") for r in finished]):
            text += " (of the first run; the runs differ, see each run_summary.json)"
        lines.append(f"- **Versions:** {text}.")
    else:
        lines.append(f"- **Versions:** {MISSING}")
    lines += ["", "### Hyperparameters", "", _hyperparameter_table(runs), ""]
    return lines


def report_markdown(
    runs: list[TrainRecord], evals: list[EvalRecord], figures: dict[str, Any], sources: list[str]
) -> str:
    best = best_runs(runs)
    rows = accuracy_rows(runs, evals)
    missing = [r.name for r in runs if r.summary is None]
    missing += [r.label for r in rows if r.record is None or r.record.summary is None]
    models = sorted({str(r.hyper.get("model_name_or_path")) for r in runs if r.summary})
    title = "AdamW vs SGD vs LoRA fine-tuning on MATH" + (f": `{models[0]}`" if len(models) == 1 else "")
    lines = [
        f"# {title}",
        "",
        f"Built by `make_report.py` from {', '.join(f'`{s}`' for s in sources)} on {time.strftime('%Y-%m-%d %H:%M')}. "
        f'Every number comes from the runs\' files; "{MISSING}" marks a run or evaluation without results.',
        "",
        "The study asks, in order: how each optimizer converges (loss curves), what each costs (memory, time, "
        "throughput) and what each buys (MATH-500 accuracy against the base model).",
        "",
        *_setup_section(runs, evals),
        "## 1. Convergence",
        "",
        BEST_RULE,
        "",
        "![Training loss](loss_train.png)",
        "",
        "![Validation loss](loss_val.png)",
        "",
        _convergence_table(runs, best) if runs else f"_{MISSING}: no training runs_",
        "",
    ]
    unplotted = [figures.get(name, {}).get("missing") for name in (artifacts.LOSS_TRAIN_PNG, artifacts.LOSS_VAL_PNG)]
    if any(unplotted):
        lines += [
            f"Not plotted (no data): training loss {', '.join(figures[artifacts.LOSS_TRAIN_PNG]['missing']) or NA}; "
            f"validation loss {', '.join(figures[artifacts.LOSS_VAL_PNG]['missing']) or NA}.",
            "",
        ]
    lines += [
        "## 2. Resources",
        "",
        "Peak memory, time and throughput of each run; per-epoch numbers in [resources.md](resources.md).",
        "",
        md_table(RESOURCE_HEADER, [resource_row(r) for r in runs], right=range(5, 13))
        if runs
        else f"_{MISSING}: no training runs_",
        "",
        "## 3. Accuracy",
        "",
        "Base model against each method's best run; per-subject and per-level breakdowns, sampling metrics and "
        "evaluation settings in [accuracy.md](accuracy.md).",
        "",
        md_table(ACCURACY_HEADER, [accuracy_row(r) for r in rows], right=range(2, 8)),
        "",
    ]
    if missing:
        lines += ["## Missing", "", *[f"- {name}: {MISSING}" for name in missing], ""]
    return "\n".join(lines)


def write_report(sources: Sequence[str | Path], output: str | Path, log_scale: bool = False) -> Path:
    """Write the whole report into ``output`` from study/run/eval folders; returns the path of report.md."""
    runs, evals = collect(sources)
    if not runs and not evals:
        raise UserError(f"no training runs or evaluations found in {', '.join(str(s) for s in sources)}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    best = best_runs(runs)
    figures = {
        artifacts.LOSS_TRAIN_PNG: plot_losses(runs, best, "train", output / artifacts.LOSS_TRAIN_PNG, log_scale),
        artifacts.LOSS_VAL_PNG: plot_losses(runs, best, "val", output / artifacts.LOSS_VAL_PNG, log_scale),
    }
    artifacts.write_json_atomic(output / artifacts.FIGURES_JSON, figures)
    artifacts.write_text_atomic(output / artifacts.RESOURCES_MD, resources_markdown(runs))
    artifacts.write_text_atomic(output / artifacts.ACCURACY_MD, accuracy_markdown(runs, evals))
    report = output / artifacts.REPORT_MD
    artifacts.write_text_atomic(report, report_markdown(runs, evals, figures, [str(s) for s in sources]))
    return report
