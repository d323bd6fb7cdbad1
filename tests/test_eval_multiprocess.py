"""Evaluation shared by several processes (``accelerate launch --num_processes N run_eval.py``; here torchrun with 2
CPU processes): the same rows as one process, one generations.jsonl and one summary.json, resumable by any number of
processes after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SMOKE_DATA, SMOKE_MODEL, run_cli
from mathsft.evaluation import _INTERRUPT_ENV

pytestmark = pytest.mark.slow

ARGS = ["--model", str(SMOKE_MODEL), "--dataset", str(SMOKE_DATA), "--limit", "8", "--max_new_tokens", "12",
        "--batch_size", "2", "--no_progress"]  # fmt: skip
TWO_PROCESSES = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "run_eval.py"]
ENV = {"OMP_NUM_THREADS": "1"}


def _rows(output: Path) -> list[dict]:
    rows = [json.loads(line) for line in (output / "generations.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda row: (row["id"], row["sample"]))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("one") / "eval"
    result = run_cli("run_eval.py", *ARGS, "--output", str(output), env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_two_processes_equal_one_row_for_row(one_process: Path, tmp_path: Path) -> None:
    output = tmp_path / "eval"
    result = run_cli(*TWO_PROCESSES, *ARGS, "--output", str(output), env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in output.iterdir() if not p.name.startswith(".")) == [
        "eval_config.json", "generations.jsonl", "summary.json",
    ]  # fmt: skip  # the shares were merged into the one file
    assert _rows(output) == _rows(one_process)
    summary = json.loads((output / "summary.json").read_text())
    expected = json.loads((one_process / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["generated_rows"] == 8
    assert summary["accuracy"] == expected["accuracy"] and summary["by_subject"] == expected["by_subject"]
    assert result.stdout.count("wrote ") == 1  # only the main process writes and reports


def test_interrupted_shares_resume_in_one_process(one_process: Path, tmp_path: Path) -> None:
    output = tmp_path / "eval"
    stopped = run_cli(*TWO_PROCESSES, *ARGS, "--output", str(output), env=ENV | {_INTERRUPT_ENV: "1"})
    assert stopped.returncode != 0
    shares = sorted(output.glob("generations.rank*.jsonl"))
    assert len(shares) == 2 and all(share.read_text().count("\n") == 2 for share in shares), stopped.stderr[-2000:]
    assert not (output / "summary.json").exists()

    resumed = run_cli("run_eval.py", *ARGS, "--output", str(output), env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "merged 4 rows left by a stopped multi-process run" in resumed.stderr
    assert not list(output.glob("generations.rank*.jsonl"))
    assert _rows(output) == _rows(one_process)  # nothing lost, nothing written twice
    assert json.loads((output / "summary.json").read_text())["resumed_rows"] == 4


