"""bench/run_gpu.sh (the one GPU command) and bench/epoch_table.py: the epoch table from run summaries, the script's
refusals, and (slow) the whole script in its CPU dry mode with the tiny smoke model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.epoch_table import EXIT_TIMEOUT, RUN_SUBDIR, write_epoch_table
from conftest import OFFLINE_ENV, REPO
from mathsft.artifacts import RUN_SUMMARY, RunSummary, schema_problems, write_json_atomic


def _summary(method: str, wall: float, tokens: int, device: str = "NVIDIA H200") -> dict[str, Any]:
    epoch = {
        "epoch": 1.0, "complete": True, "resumed_mid_epoch": False, "global_step": 212, "wall_time_s": wall,
        "tokens": tokens, "tokens_per_s": round(tokens / wall, 2), "peak_memory_allocated_gib": 29.7,
        "peak_memory_reserved_gib": 30.4,
    }  # fmt: skip
    summary = {
        "method": method, "hyperparameters": {"method": method}, "data": {}, "trainable_params": 1, "total_params": 2,
        "train_loss": [[5, 11.0]], "eval_loss": [], "epochs": [epoch], "memory_kind": "cuda", "total_time_s": wall + 20,
        "global_step": 212, "device_name": device, "num_processes": 1, "versions": {"torch": "2.11.0"},
        "dropped_examples": 0, "dropped_train_examples": 0, "dropped_validation_examples": 0, "interrupted": False,
        "diverged": False, "diverged_step": None,
        "finished_at": "2026-11-29T06:00:00+0000",
    }  # fmt: skip
    assert schema_problems(summary, RunSummary) == []  # the fixture is a valid run_summary.json
    return summary


def _run_dir(root: Path, method: str, summary: dict[str, Any] | None, status: str) -> None:
    folder = root / method
    folder.mkdir(parents=True)
    (folder / "command.txt").write_text(f"train_sft.py --config recipes/qwen3-0.6b-base/{method}.yaml\n")
    (folder / "command_status.txt").write_text(status + "\n")
    if summary is not None:
        (folder / RUN_SUBDIR).mkdir()
        write_json_atomic(folder / RUN_SUBDIR / RUN_SUMMARY, summary)


def test_epoch_table_rows_from_run_summaries(tmp_path):
    runs = tmp_path / "epochs"
    _run_dir(runs, "adamw", _summary("adamw", 70.0, 3_500_000), "0 95")
    _run_dir(runs, "sgd", None, f"{EXIT_TIMEOUT} 140")
    _run_dir(runs, "lora", {"method": "lora"}, "1 12")  # a torn or foreign summary is reported, not trusted
    records = write_epoch_table(runs, ["adamw", "sgd", "lora"], tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "epoch_runs.json").read_text())
    assert [r["method"] for r in saved["runs"]] == ["adamw", "sgd", "lora"] == [r["method"] for r in records]
    assert saved["runs"][0]["epoch"]["wall_time_s"] == 70.0 and saved["runs"][0]["command_wall_s"] == 95.0
    table = (tmp_path / "out" / "epoch_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert rows[0].startswith("| method | epoch wall s | steps | tokens | tokens/s | peak alloc GiB | peak reserved")
    assert rows[1] == "| adamw | 70.0 | 212 | 3,500,000 | 50,000 | 29.70 | 30.40 | 90.0 | 95.0 | ok |"
    assert rows[2] == "| sgd | - | - | - | - | - | - | - | 140.0 | timed out after 140 s |"
    assert rows[3].startswith("| lora | - |") and rows[3].endswith("| failed (exit code 1) |")
    assert "AdamW target, one epoch <= 75 s on an H200: met (70.0 s)." in table


def _script(env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    full_env = os.environ | OFFLINE_ENV | env
    return subprocess.run(
        ["bash", "bench/run_gpu.sh"], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def test_script_refuses_an_unknown_mode_and_missing_data(tmp_path):
    bad_mode = _script({"MODE": "tpu"}, timeout=30)
    assert bad_mode.returncode == 2 and "MODE must be gpu or cpu-smoke" in bad_mode.stderr
    no_data = _script({"MODE": "gpu", "DATA": str(tmp_path / "nothing"), "RESULTS": str(tmp_path / "r")}, timeout=60)
    assert no_data.returncode == 2 and "cp -r ../shared/data/math500" in no_data.stderr
    assert not (tmp_path / "r").exists()  # nothing written before the data is there
    if shutil.which("nvidia-smi") is None:
        data = tmp_path / "data"
        for path in (data / "math500" / "train.jsonl", data / "qwen3-0.6b-base" / "config.json"):
            path.parent.mkdir(parents=True)
            path.write_text("")
        no_gpu = _script({"MODE": "gpu", "DATA": str(data), "RESULTS": str(tmp_path / "r")}, timeout=60)
        assert no_gpu.returncode == 2 and "MODE=gpu needs an NVIDIA GPU" in no_gpu.stderr
        assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cpu_dry_run_of_the_gpu_script(tmp_path):
    out, results = tmp_path / "out", tmp_path / "results" / "cpu-smoke_run"
    done = _script({"MODE": "cpu-smoke", "OUT": str(out), "RESULTS": str(results)}, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = {"environment.txt", "run_gpu.log", "epoch_runs.json", "epoch_table.md", "train_throughput.json",
             "train_throughput.md"}  # fmt: skip
    assert {p.name for p in results.iterdir()} == names
    # What the device tool brings back: at most 8 files, at most 2 folders down.
    copied = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in copied} == names and all(p.parent == out / results.name for p in copied)

    epochs = json.loads((results / "epoch_runs.json").read_text())["runs"]
    assert [r["method"] for r in epochs] == ["adamw", "sgd", "lora"]
    for record in epochs:
        assert record["exit_code"] == 0 and record["summary_problems"] == [] and record["epoch"]["complete"]
        assert f"--config recipes/qwen3-0.6b-base/{record['method']}.yaml" in record["command"]
        assert "--num_train_epochs 1 --save_strategy no" in record["command"]
        assert record["summary"]["method"] == record["method"] and record["epoch"]["tokens"] > 0
    table = (results / "epoch_table.md").read_text()
    assert sum(line.endswith("| ok |") for line in table.splitlines()) == 3

    bench = json.loads((results / "train_throughput.json").read_text())
    statuses = {(r["configuration"], r["method"]): r["status"] for r in bench["results"]}
    assert statuses[("course", "sgd")] == statuses[("fast", "sgd")] == statuses[("fast+varlen", "sgd")] == "ok"
    varlen = next(r for r in bench["results"] if r["configuration"] == "fast+varlen")
    assert varlen["loss_equal"] and varlen["max_length"] == 256  # the script's recipe overrides reached the bench
    log = (results / "run_gpu.log").read_text()
    assert "== epoch adamw" in log and "== bench" in log and "== done" in log
