"""run_study.py: the smoke study end to end on CPU, offline (train, pick the best LR, evaluate, report, skip on
rerun), its configuration errors, and the plan of the real study."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image, ImageStat

import run_study
from conftest import REPO, run_cli
from mathsft.report import missing_cells
from mathsft.study import describe_changes, overrides_to_args

# The smoke study as committed, made shorter for the test: 4 steps per epoch, 8 evaluation problems. It still runs
# every stage: 6 trainings (two learning rates per method), base + 3 evaluations, the report.
SHORTEN = [
    "--train_overrides", json.dumps({"max_train_samples": 64, "max_eval_samples": 16, "logging_steps": 1}),
    "--evaluation", json.dumps({"limit": 8}),
]  # fmt: skip
RUNS = ["adamw-lr3e-4", "adamw-lr1e-3", "sgd-lr0.1", "sgd-lr0.3", "lora-lr3e-3", "lora-lr0.01"]


def _study(tmp_path: Path, *extra: str):
    return run_cli(
        "run_study.py", "--config", "studies/smoke.yaml", "--study_dir", str(tmp_path / "study"),
        "--report_dir", str(tmp_path / "report"), *SHORTEN, *extra, timeout=1800,
    )  # fmt: skip


def _summaries(study: Path) -> dict[str, float]:
    paths = list(study.glob("train/*/run_summary.json")) + list(study.glob("eval/*/summary.json"))
    return {str(p.relative_to(study)): p.stat().st_mtime_ns for p in paths}


@pytest.mark.slow
def test_smoke_study_end_to_end_then_skips(tmp_path: Path) -> None:
    first = _study(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    study, report = tmp_path / "study", tmp_path / "report"
    lines = first.stdout.splitlines()
    assert sum(bool(re.match(r"\[\d+/10\] .* done in \d+", line)) for line in lines) == 10, first.stdout
    assert lines[-1] == f"report: {report / 'report.md'}"

    # Layout: one folder per stage, each with its command and log.
    for name in RUNS:
        run = study / "train" / name
        assert (run / "run_summary.json").is_file() and (run / "stage.log").stat().st_size > 0
        assert json.loads((run / "stage_config.json").read_text())["name"] == name
    for name in ("base", "adamw", "sgd", "lora"):
        assert (study / "eval" / name / "summary.json").is_file() and (study / "eval" / name / "stage.log").is_file()
    assert (study / "study_config.json").is_file()

    # The best rate of each method by final validation loss is the one evaluated.
    def final(name: str) -> float:
        return json.loads((study / "train" / name / "run_summary.json").read_text())["eval_loss"][-1][1]

    best = {method: min([r for r in RUNS if r.startswith(method)], key=final) for method in ("adamw", "sgd", "lora")}
    best_sgd = best["sgd"]
    for method, run in best.items():
        assert json.loads((study / "eval" / method / "stage_config.json").read_text())["run"] == run
    assert json.loads((study / "eval" / "sgd" / "summary.json").read_text())["model"] == str(study / "train" / best_sgd)
    lora_eval = json.loads((study / "eval" / "lora" / "summary.json").read_text())
    assert lora_eval["adapter"] == str(study / "train" / best["lora"])
    assert lora_eval["model"] == "assets/smoke-task/model" and lora_eval["num_problems"] == 8

    # Figures: real images, every run a line, the best SGD run emphasised, epoch ends marked.
    figures = json.loads((report / "figures.json").read_text())
    for name in ("loss_train.png", "loss_val.png"):
        with Image.open(report / name) as image:
            image.load()
            assert image.width > 300 and image.height > 200
            assert max(ImageStat.Stat(image.convert("L")).var) > 0
        drawn = figures[name]["lines"]
        assert sorted(line["run"] for line in drawn) == sorted(RUNS)
        assert [line["label"] for line in drawn if line["best"] and line["method"] == "sgd"] == [f"{best_sgd} (best)"]
        assert figures[name]["epoch_boundaries"] == [4, 8]

    # Tables: every method plus the base row; the report links them and shows the figures.
    resources = (report / "resources.md").read_text()
    for name in RUNS:
        assert re.search(rf"^\| {re.escape(name)} \| \w+ \| cpu .* \| fp32 / float32 weights \| 8 × 2 × 1 = 16 \|.*"
                         r"\| n/a \(CPU run\) \| n/a \(CPU run\) \| \d+\.\d\d \|", resources, re.M), name  # fmt: skip
    accuracy = (report / "accuracy.md").read_text()
    interval = r"\d+\.\d–\d+\.\d%"
    base_row = rf"^\| base \| assets/smoke-task/model \| \d+\.\d\d% \| {interval} \| \(base\) \| \d+ / 8 \|"
    assert re.search(base_row, accuracy, re.M)
    for method, run in best.items():
        row = rf"^\| {method} \| {run} \| \d+\.\d\d% \| {interval} \| [+-]\d+\.\d\d \| \d+ / 8 \|"
        assert re.search(row, accuracy, re.M), method
    assert missing_cells(report) == []  # every convergence and resources cell has its number
    text = (report / "report.md").read_text()
    assert "[resources.md](resources.md)" in text and "[accuracy.md](accuracy.md)" in text
    assert "![Training loss](loss_train.png)" in text and "![Validation loss](loss_val.png)" in text
    assert "| missing" not in text and "## Missing" not in text

    # Rerun: every stage is skipped, no summary is rewritten, the report is rebuilt.
    before = _summaries(study)
    assert len(before) == 10
    second = _study(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sum("skipped (done)" in line for line in second.stdout.splitlines()) == 10, second.stdout
    assert "done in" not in second.stdout
    assert _summaries(study) == before

    # A changed setting is refused in one line, naming the change, before anything runs.
    changed = _study(tmp_path, "--evaluation", json.dumps({"limit": 8, "max_new_tokens": 40}))
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    err = changed.stderr.strip().splitlines()
    assert len(err) == 1 and "--max_new_tokens 128 -> 40" in err[0] and "--overwrite true" in err[0], err

    # make_report.py rebuilds the same report from the finished study.
    rebuilt = run_cli("make_report.py", str(study), "--output", str(tmp_path / "rebuilt"))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (tmp_path / "rebuilt" / "accuracy.md").read_text() == accuracy


def _fails_with(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        run_study.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_config_errors_are_one_line(capsys, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(Path(REPO / "studies/smoke.yaml").read_text() + "sgd_learning_rates: [0.1]\n")
    _fails_with(capsys, ["--config", str(unknown)], "unknown study key 'sgd_learning_rates' in")
    _fails_with(capsys, ["--config", str(tmp_path / "nope.yaml")], "study config not found")
    smoke = ["--config", "studies/smoke.yaml", "--study_dir", str(tmp_path / "s"), "--dry_run", "true"]
    _fails_with(
        capsys, [*smoke, "--recipes", '{"sgd": "recipes/smoke/nope.yaml"}'], "recipe not found: recipes/smoke/nope.yaml"
    )
    _fails_with(capsys, [*smoke, "--recipes", '{"sgd": "recipes/smoke/adamw.yaml"}'], "trains adamw, not sgd")
    _fails_with(capsys, [*smoke, "--methods", "adamw", "rmsprop"], "unknown method 'rmsprop'")
    rates = [*smoke, "--learning_rates", '{"adamm": [0.1]}']
    _fails_with(capsys, rates, "unknown method key 'adamm' in learning_rates (did you mean 'adamw'?)")
    settings = [*smoke, "--evaluation", '{"max_new_token": 4}']
    _fails_with(capsys, settings, "unknown run_eval.py option key 'max_new_token' in the study's evaluation settings")
    overrides = [*smoke, "--train_overrides", '{"max_step": 3}']
    _fails_with(capsys, overrides, "unknown train_sft.py option key 'max_step' in train_overrides (did you mean")
    _fails_with(capsys, [*smoke, "--train_overrides", '{"output_dir": "x"}'], "may not set 'output_dir'")
    _fails_with(capsys, [*smoke, "--learning_rates", '{"sgd": [0.1, -1]}'], "values must be finite and > 0")
    _fails_with(capsys, [*smoke, "--launcher", "accelerate"], "needs accelerate_config")
    _fails_with(capsys, [*smoke, "--evaluation", '{"num_samples": 4}'], "greedy decoding")


@pytest.mark.slow  # a study subprocess (about 9 s)
def test_missing_recipe_from_the_command_line_has_no_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "run_study.py", "--config", "studies/smoke.yaml", "--study_dir", str(tmp_path),
        "--recipes", '{"lora": "nope.yaml"}',
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: recipe not found: nope.yaml"]


def test_real_study_plan(capsys, tmp_path: Path) -> None:
    """The Qwen3 study as a dry run: the grid, the accelerate commands, nothing run."""
    study = tmp_path / "qwen"
    run_study.main(["--config", "studies/qwen3-0.6b-base.yaml", "--study_dir", str(study), "--dry_run", "true"])
    out = capsys.readouterr().out
    for name in ("adamw-lr5e-6", "adamw-lr1e-5", "adamw-lr2e-5", "sgd-lr0.01", "sgd-lr0.02", "sgd-lr0.05",
                 "lora-lr1e-4", "lora-lr2e-4", "lora-lr4e-4"):  # fmt: skip
        assert f"--output_dir {study / 'train' / name} " in out
    assert out.count("accelerate launch --config_file accelerate_configs/single_gpu.yaml --num_processes 1") == 9
    assert "tuning budget: adamw 3 trials x 1 seed, sgd 3 trials x 1 seed, lora 3 trials x 1 seed" in out
    assert "[1/13] eval base ... to run: python run_eval.py --model Qwen/Qwen3-0.6B-Base" in out
    assert "--max_new_tokens 1024" in out and "--backend auto" in out
    assert not study.exists()


def test_lora_rank_grid_names_and_alpha(capsys, tmp_path: Path) -> None:
    argv = ["--config", "studies/smoke.yaml", "--study_dir", str(tmp_path), "--dry_run", "true"]
    run_study.main([*argv, "--methods", "lora", "--lora_ranks", "8", "32"])
    out = capsys.readouterr().out
    assert "train lora lr=0.01 r=8 ... to run:" in out
    assert "--output_dir " + str(tmp_path / "train" / "lora-lr0.01-r32") + " --learning_rate 0.01 --lora_r 32" in out
    assert "--lora_r 8 --lora_alpha 16" in out and "--lora_r 32 --lora_alpha 64" in out  # alpha/r stays 2


def test_overrides_and_change_description() -> None:
    assert overrides_to_args({"max_steps": 8, "packing": False, "lora_target_modules": ["q_proj", "v_proj"]}) == [
        "--max_steps", "8", "--packing", "false", "--lora_target_modules", "q_proj", "v_proj",
    ]  # fmt: skip
    old = {"command": ["python", "x.py", "--lr", "1", "--n", "2"], "recipe_sha256": "a", "run": "r1"}
    new = {"command": ["python", "x.py", "--lr", "3", "--n", "2", "--k"], "recipe_sha256": "b", "run": "r1"}
    assert describe_changes(old, new) == "--lr 1 -> 3; (nothing) -> --k; recipe file changed"
