"""The report from hand-made run and evaluation files: exact tables, missing pieces shown as missing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import make_report
from mathsft.artifacts import format_lr, select_best
from mathsft.report import write_report
from mathsft.results import collect

GIB_EPOCHS_CUDA = [
    {"epoch": 1.0, "global_step": 10, "wall_time_s": 600.0, "tokens": 1_200_000, "tokens_per_s": 2000.0,
     "peak_memory_allocated_gib": 10.5, "peak_memory_reserved_gib": 12.25},
    {"epoch": 2.0, "global_step": 20, "wall_time_s": 3700.0, "tokens": 1_200_000, "tokens_per_s": 324.3,
     "peak_memory_allocated_gib": 11.0, "peak_memory_reserved_gib": 12.0},
]  # fmt: skip
EPOCHS_CPU = [
    {"epoch": 1.0, "global_step": 10, "wall_time_s": 20.0, "tokens": 30_000, "tokens_per_s": 1500.0,
     "peak_memory_allocated_gib": None, "peak_memory_reserved_gib": None, "peak_rss_gib": 0.6018},
    {"epoch": 2.0, "global_step": 20, "wall_time_s": 10.0, "tokens": 30_000, "tokens_per_s": 3000.0,
     "peak_memory_allocated_gib": None, "peak_memory_reserved_gib": None, "peak_rss_gib": 0.5},
]  # fmt: skip


def run_summary(method: str, lr: float, val: list[float], *, cuda: bool = True, **extra: Any) -> dict[str, Any]:
    lora = method == "lora"
    hyper = {
        "model_name_or_path": "Qwen/Qwen3-0.6B-Base", "dtype": "float32",
        "optimizer": "sgd" if method == "sgd" else "adamw", "learning_rate": lr, "weight_decay": 0.0,
        "adam_betas": [0.9, 0.95], "adam_epsilon": 1e-8, "sgd_momentum": 0.9, "sgd_nesterov": False,
        "lr_scheduler_type": "SchedulerType.COSINE", "warmup_steps": 0.03, "num_train_epochs": 2,
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "world_size": 1,
        "effective_batch_size": 16, "max_length": 1024, "bf16": cuda, "fp16": False, "seed": 42, "use_peft": lora,
    }  # fmt: skip
    if lora:
        hyper |= {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05}
    return {
        "method": method,
        "hyperparameters": hyper,
        "data": {
            "dataset_name": "ricdomolm/MATH-500",
            "dataset_train_split": "train",
            "validation_fraction": 0.1,
            "split_seed": 42,
            "overlong": "drop",
            "system_prompt": None,
            "num_train": 10_800,
            "num_validation": 1200,
        },  # fmt: skip
        "trainable_params": 10_092_544 if lora else 596_049_920,
        "total_params": 606_142_464 if lora else 596_049_920,
        "train_loss": [[5, 1.2], [10, 0.9], [15, 0.8], [20, 0.7]],
        "eval_loss": [[10 * (i + 1), v] for i, v in enumerate(val)],
        "epochs": GIB_EPOCHS_CUDA if cuda else EPOCHS_CPU,
        "memory_kind": "cuda" if cuda else "cpu_peak_rss",
        "total_time_s": 4500.0 if cuda else 35.0,
        "global_step": 20,
        "device_name": "NVIDIA H100 80GB HBM3" if cuda else "cpu (x86_64, 2 cores)",
        "num_processes": 1,
        "versions": {"python": "3.11.7", "torch": "2.13.0"},
        "dropped_examples": 12,
        "interrupted": False,
        "finished_at": "2026-01-01T00:00:00+0000",
    } | extra


def eval_summary(accuracy: float, problems: int, samples: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "num_problems": problems,
        "num_samples": samples,
        "accuracy": accuracy,
        "by_subject": {"Algebra": {"accuracy": 0.5, "count": 2}, "Geometry": {"accuracy": accuracy, "count": 2}},
        "by_level": {"1": {"accuracy": 1.0, "count": 1}, "5": {"accuracy": 0.0, "count": 3}},
        "no_box": 1,
        "truncated": 0,
        "grader_timeout": 0,
        "model": "Qwen/Qwen3-0.6B-Base",
        "adapter": None,
        "dataset": "ricdomolm/MATH-500",
        "split": "test",
        "generation": {"num_samples": samples, "temperature": 0.0, "max_new_tokens": 1024, "seed": 42},
        "backend": "paged",
        "dtype": "bfloat16",
        "device": "NVIDIA H100 80GB HBM3",
        "wall_time_s": 95.0,
        "generated_tokens_per_s": 5123.4,
    } | extra


def write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """adamw (GPU), two sgd runs (one never finished), lora (CPU, sampled eval); the sgd evaluation is missing."""
    root = tmp_path / "study"
    write(root / "train/adamw-lr1e-5/run_summary.json", run_summary("adamw", 1e-5, [1.0, 0.8]))
    write(root / "train/sgd-lr0.01/run_summary.json", run_summary("sgd", 0.01, [1.1, 0.95]))
    write(root / "train/sgd-lr0.02/stage_config.json", {"stage": "train", "method": "sgd", "learning_rate": 0.02})
    write(root / "train/lora-lr2e-4/run_summary.json", run_summary("lora", 2e-4, [1.05, 0.9], cuda=False))
    write(root / "eval/base/summary.json", eval_summary(0.25, 4))
    write(root / "eval/adamw/summary.json", eval_summary(0.5, 4, truncated=1, no_box=0))
    write(root / "eval/adamw/stage_config.json", {"stage": "eval", "run": "adamw-lr1e-5"})
    lora_eval = eval_summary(0.1875, 4, samples=4, no_box=2, adapter="x/lora-lr2e-4")
    lora_eval |= {"pass@1": 0.1875, "pass@2": 0.3125, "pass@4": 0.5, "maj@4": 0.25}
    write(root / "eval/lora/summary.json", lora_eval)
    write(root / "eval/lora/stage_config.json", {"stage": "eval", "run": "lora-lr2e-4"})
    return root


def table_rows(markdown: str, header_start: str) -> list[str]:
    """The data rows of the first table whose header starts with ``header_start``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_resources_table_exact(study: Path, tmp_path: Path) -> None:
    write_report([study], tmp_path / "report")
    text = (tmp_path / "report" / "resources.md").read_text()
    assert table_rows(text, "| run | method | device |") == [
        "| adamw-lr1e-5 | adamw | NVIDIA H100 80GB HBM3 | bf16 / float32 weights | 8 × 2 × 1 = 16 "
        "| 596,049,920 (100.00%) | 596,049,920 | 11.00 | 12.25 | 10 min 00 s, 1 h 01 min | 1 h 11 min | 1 h 15 min "
        "| 558 |",
        "| sgd-lr0.01 | sgd | NVIDIA H100 80GB HBM3 | bf16 / float32 weights | 8 × 2 × 1 = 16 "
        "| 596,049,920 (100.00%) | 596,049,920 | 11.00 | 12.25 | 10 min 00 s, 1 h 01 min | 1 h 11 min | 1 h 15 min "
        "| 558 |",
        "| sgd-lr0.02 | sgd | missing | missing | missing | missing | missing | missing | missing | missing | missing "
        "| missing | missing |",
        "| lora-lr2e-4 | lora | cpu (x86_64, 2 cores) | fp32 / float32 weights | 8 × 2 × 1 = 16 "
        "| 10,092,544 (1.67%) | 606,142,464 | 0.60 (RSS) | n/a (CPU) | 20.0 s, 10.0 s | 30.0 s | 35.0 s | 2,000 |",
    ]
    assert "| lora-lr2e-4 | 2 | 20 | 10.0 s | 30,000 | 3,000 | 0.50 (RSS) |" in text
    assert "| adamw-lr1e-5 | 1 | 10 | 10 min 00 s | 1,200,000 | 2,000 | 10.50 / 12.25 |" in text


def test_accuracy_table_exact(study: Path, tmp_path: Path) -> None:
    write_report([study], tmp_path / "report")
    text = (tmp_path / "report" / "accuracy.md").read_text()
    assert table_rows(text, "| model | evaluated |") == [
        "| base | Qwen/Qwen3-0.6B-Base | 25.00% | (base) | 1 / 4 | 1 (25.0%) | 0 (0.0%) | 0 (0.0%) |",
        "| adamw | adamw-lr1e-5 | 50.00% | +25.00 | 2 / 4 | 0 (0.0%) | 1 (25.0%) | 0 (0.0%) |",
        # sgd-lr0.01 is the best (only finished) sgd run, but it was never evaluated.
        "| sgd | sgd-lr0.01 | missing | missing | missing | missing | missing | missing |",
        "| lora | lora-lr2e-4 | 18.75% | -6.25 | 3 / 16 | 2 (12.5%) | 0 (0.0%) | 0 (0.0%) |",
    ]
    assert table_rows(text, "| subject |") == [
        "| Algebra | 2 | 50.00% | 50.00% | missing | 50.00% |",
        "| Geometry | 2 | 25.00% | 50.00% | missing | 18.75% |",
    ]
    assert table_rows(text, "| level |") == [
        "| Level 1 | 1 | 100.00% | 100.00% | missing | 100.00% |",
        "| Level 5 | 3 | 0.00% | 0.00% | missing | 0.00% |",
    ]
    # Sampling metrics only for the sampled evaluation.
    assert table_rows(text, "| model | pass@1 |") == ["| lora | 18.75% | 31.25% | 50.00% | 25.00% |"]


def test_report_links_and_marks_missing(study: Path, tmp_path: Path) -> None:
    report = write_report([study], tmp_path / "report")
    text = report.read_text()
    assert "[resources.md](resources.md)" in text and "[accuracy.md](accuracy.md)" in text
    assert "![Training loss](loss_train.png)" in text and "![Validation loss](loss_val.png)" in text
    assert "lowest *final* validation loss" in text
    assert text.index("## 1. Convergence") < text.index("## 2. Resources") < text.index("## 3. Accuracy")
    assert "Please reason step by step, and put your final answer within \\boxed{}." in text
    assert "- sgd-lr0.02: missing" in text and "- sgd: missing" in text
    assert "| sgd-lr0.01 | sgd | 0.01 | — | 20 | 0.7000 | 0.9500 | 0.9500 (step 20) | ✓ best |" in text
    figures = json.loads((tmp_path / "report" / "figures.json").read_text())
    for name in ("loss_train.png", "loss_val.png"):
        assert [line["run"] for line in figures[name]["lines"]] == ["adamw-lr1e-5", "sgd-lr0.01", "lora-lr2e-4"]
        assert figures[name]["missing"] == ["sgd-lr0.02"]
        assert figures[name]["epoch_boundaries"] == [10, 20]
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_everything_missing_is_shown_missing(tmp_path: Path) -> None:
    """Only unfinished training runs, no evaluation at all: every value cell says missing, nothing is invented."""
    root = tmp_path / "study"
    write(root / "train/adamw-lr1e-5/stage_config.json", {"stage": "train", "method": "adamw"})
    (root / "eval").mkdir()
    write_report([root], tmp_path / "report")
    accuracy = (tmp_path / "report" / "accuracy.md").read_text()
    assert table_rows(accuracy, "| model | evaluated |") == [
        "| base | — | missing | missing | missing | missing | missing | missing |",
        "| adamw | — | missing | missing | missing | missing | missing | missing |",
    ]
    assert "_missing: no evaluation has a subject breakdown_" in accuracy
    resources = (tmp_path / "report" / "resources.md").read_text()
    assert table_rows(resources, "| run |")[0] == "| adamw-lr1e-5 | adamw" + " | missing" * 11 + " |"
    figures = json.loads((tmp_path / "report" / "figures.json").read_text())
    assert figures["loss_train.png"]["lines"] == [] and figures["loss_train.png"]["missing"] == ["adamw-lr1e-5"]


def test_best_run_rule() -> None:
    def summary(lr: float, final: float, interrupted: bool = False) -> dict[str, Any]:
        return {
            "hyperparameters": {"learning_rate": lr},
            "eval_loss": [[1, 5.0], [2, final]],
            "interrupted": interrupted,
        }

    assert select_best([("a", summary(0.1, 2.0)), ("b", summary(0.3, 1.5))]) == "b"
    # The final loss decides, not the lowest one along the way; diverged and interrupted runs are not eligible.
    assert select_best([("a", summary(0.1, 2.0)), ("b", summary(0.3, math.nan)), ("c", summary(1.0, 1.0, True))]) == "a"
    assert select_best([("b", summary(0.3, 1.0)), ("a", summary(0.1, 1.0))]) == "a"  # tie: smaller rate
    assert select_best([("a", None), ("b", {"eval_loss": []})]) is None


def test_format_lr() -> None:
    assert [format_lr(x) for x in (0.3, 0.05, 0.01, 3e-3, 2e-4, 1.5e-5, 5e-6)] == [
        "0.3", "0.05", "0.01", "3e-3", "2e-4", "1.5e-5", "5e-6",
    ]  # fmt: skip


def test_make_report_cli_maps_loose_eval_dirs(study: Path, tmp_path: Path, capsys) -> None:
    """Run dirs and eval dirs given one by one: an eval of a listed run's folder takes that run's method."""
    run = study / "train" / "adamw-lr1e-5"
    loose = tmp_path / "evals" / "my-adamw-eval"
    write(loose / "summary.json", eval_summary(0.5, 4, model=str(run)))
    base = tmp_path / "evals" / "qwen-base"
    write(base / "summary.json", eval_summary(0.25, 4))
    make_report.main([str(run), str(loose), str(base), "--output", str(tmp_path / "out"), "--log_scale"])
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'out' / 'report.md'}"
    runs, evals = collect([run, loose, base])
    assert [(e.label, e.run) for e in evals] == [("adamw", "adamw-lr1e-5"), ("base", None)]
    accuracy = (tmp_path / "out" / "accuracy.md").read_text()
    assert "| adamw | adamw-lr1e-5 | 50.00% | +25.00 | 2 / 4 |" in accuracy
    assert json.loads((tmp_path / "out" / "figures.json").read_text())["loss_val.png"]["log_scale"] is True


def test_make_report_bad_path_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    for argv, message in (
        ([str(tmp_path / "nope")], "not found"),
        ([str(tmp_path / "empty")], "is neither a study dir"),
    ):
        with pytest.raises(SystemExit) as exc:
            make_report.main([*argv, "--output", str(tmp_path / "out")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_study_config_limits_the_runs(study: Path, tmp_path: Path) -> None:
    """Folders left from an earlier grid are not part of the study that wrote study_config.json."""
    write(study / "train/sgd-lr0.5/run_summary.json", run_summary("sgd", 0.5, [1.0, 0.1]))  # would win
    write(study / "eval/old-method/summary.json", eval_summary(0.9, 4))
    runs, evals = collect([study])
    assert "sgd-lr0.5" in [r.name for r in runs]
    write(study / "study_config.json", {"runs": ["adamw-lr1e-5", "sgd-lr0.01", "sgd-lr0.02", "lora-lr2e-4"],
                                        "methods": ["adamw", "sgd", "lora"]})  # fmt: skip
    runs, evals = collect([study])
    assert [r.name for r in runs] == ["adamw-lr1e-5", "sgd-lr0.01", "sgd-lr0.02", "lora-lr2e-4"]
    assert [e.label for e in evals] == ["adamw", "base", "lora"]
