"""A 2-process DDP run on CPU (gloo) finishes and writes exactly one summary, with perf maxed over ranks."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_cli


@pytest.mark.slow
def test_two_process_ddp_smoke(tmp_path):
    output_dir = tmp_path / "ddp"
    # `accelerate launch --cpu --num_processes 2` starts one process here; torchrun starts two, and the trainer's
    # Accelerator picks them up as MULTI_CPU.
    result = run_cli(
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "train_sft.py",
        "--config",
        "recipes/smoke/sgd.yaml",
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        "1",
        "--eval_steps",
        "5",
        "--save_strategy",
        "no",
        "--ddp_backend",
        "gloo",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # Every parameter is used in each forward pass, so DDP must not search for unused ones (an extra autograd
    # traversal per step); with the search on, torch's reducer warns that it found none.
    assert "find_unused_parameters=True" not in result.stdout + result.stderr
    summaries = list(output_dir.rglob("run_summary.json"))
    assert summaries == [output_dir / "run_summary.json"]
    summary = json.loads(summaries[0].read_text())
    assert summary["num_processes"] == 2
    assert summary["hyperparameters"]["world_size"] == 2
    assert summary["hyperparameters"]["effective_batch_size"] == 2 * 8 * 2
    assert len(summary["epochs"]) == 1 and summary["epochs"][0]["tokens_per_s"] > 0
    # Both ranks' tokens are counted: one epoch sees the whole training split once.
    train_tokens = summary["epochs"][0]["tokens"]
    assert train_tokens > 0
    event_dirs = {p.parent for p in output_dir.rglob("events.out.tfevents.*")}
    assert event_dirs == {output_dir / "tensorboard"}
    accumulator = EventAccumulator(str(output_dir / "tensorboard"))
    accumulator.Reload()
    assert len(accumulator.Scalars("perf/epoch_time_s")) == 1  # rank 0 alone writes
