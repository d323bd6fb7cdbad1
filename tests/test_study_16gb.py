"""The study sized for a 16 GB GPU, as a dry run: the lean recipes, its grid, one epoch, the accelerate commands."""

from __future__ import annotations

from pathlib import Path

import run_study
from conftest import REPO
from mathsft.config_files import load_yaml_mapping


def test_16gb_study_plan(capsys, tmp_path: Path) -> None:
    study = tmp_path / "qwen-16gb"
    run_study.main(["--config", "studies/qwen3-0.6b-base-16gb.yaml", "--study_dir", str(study), "--dry_run", "true"])
    out = capsys.readouterr().out
    runs = {"adamw": ["adamw-lr1e-5", "adamw-lr2e-5"], "sgd": ["sgd-lr0.02", "sgd-lr0.05"],
            "lora": ["lora-lr1e-4", "lora-lr2e-4"]}  # fmt: skip
    train_lines = [line for line in out.splitlines() if "] train " in line]
    assert len(train_lines) == 6
    for method, names in runs.items():
        for name in names:
            line = next(line for line in train_lines if f"--output_dir {study / 'train' / name} " in line)
            assert f"--config recipes/qwen3-0.6b-base-16gb/{method}.yaml " in line  # the lean recipe
            assert line.endswith("--num_train_epochs 1")
            assert "accelerate launch --config_file accelerate_configs/single_gpu.yaml --num_processes 1" in line
    assert "[1/10] eval base ... to run: python run_eval.py --model Qwen/Qwen3-0.6B-Base" in out
    assert "--max_new_tokens 1024" in out and "--backend auto" in out
    assert not study.exists()


def test_16gb_study_evaluates_like_the_full_study() -> None:
    """Only training is cut down: the evaluation settings are the full study's, so the accuracies compare."""
    lean = load_yaml_mapping(str(REPO / "studies/qwen3-0.6b-base-16gb.yaml"), "study config")
    full = load_yaml_mapping(str(REPO / "studies/qwen3-0.6b-base.yaml"), "study config")
    assert lean["evaluation"] == full["evaluation"]
    assert lean["methods"] == full["methods"]
    assert all("qwen3-0.6b-base-16gb/" in path for path in lean["recipes"].values())
    assert len({len(grid) for grid in lean["learning_rates"].values()}) == 1  # the same search effort per method
