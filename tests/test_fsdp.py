"""FSDP2 (accelerate_configs/fsdp.yaml) on 2 CPU processes (gloo): sharded optimizer, same losses as 1 process.

accelerate does not select FSDP on CPU processes (it silently falls back to DDP), so the launch goes through
tests/fsdp_on_cpu.py, which lifts only that gate; see its docstring.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli

MAX_STEPS = 6
CHECKPOINT_STEP = 3
PER_DEVICE_BATCH = 8  # the smoke recipe's; 2 processes x 8 x accumulation 2 = 32 rows per optimizer step
LAYOUT_LINE = re.compile(r"optimizer parameters on this rank: (\{.*\})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_fsdp_config(folder: Path) -> Path:
    """The committed FSDP2 config with only what a 2-CPU machine needs changed: the process count and use_cpu."""
    config = yaml.safe_load((REPO / "accelerate_configs" / "fsdp.yaml").read_text())
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_version"] == 2
    config |= {"num_processes": 2, "use_cpu": True}
    path = folder / "fsdp_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def smoke_args(output_dir: Path, per_device_batch: int, *extra: str) -> list[str]:
    return [
        "train_sft.py",
        "--config",
        "recipes/smoke/adamw.yaml",
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(MAX_STEPS),
        "--per_device_train_batch_size",
        str(per_device_batch),
        "--logging_steps",
        "1",
        "--eval_steps",
        str(MAX_STEPS),
        "--save_steps",
        str(CHECKPOINT_STEP),
        *extra,
    ]


def launch_fsdp(config: Path, output_dir: Path, *extra: str):
    launcher = ["-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port"]
    result = run_cli(
        *launcher, str(free_port()), "tests/fsdp_on_cpu.py", *smoke_args(output_dir, PER_DEVICE_BATCH, *extra)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return result


def optimizer_layouts(stdout: str) -> list[dict]:
    return [json.loads(match) for match in LAYOUT_LINE.findall(stdout)]


def grad_norms(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["grad_norm"] for entry in history if "grad_norm" in entry]


def train_loss(output_dir: Path) -> tuple[list[int], list[float]]:
    """(logged steps, losses) from run_summary.json."""
    curve = json.loads((output_dir / "run_summary.json").read_text())["train_loss"]
    return [int(step) for step, _ in curve], [loss for _, loss in curve]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    config = cpu_fsdp_config(folder)
    output_dir = folder / "run"
    result = launch_fsdp(config, output_dir)
    return config, output_dir, result


@pytest.mark.slow
def test_fsdp2_shards_the_optimizer_and_matches_one_process(fsdp_run, tmp_path):
    _, output_dir, result = fsdp_run
    summary = json.loads((output_dir / "run_summary.json").read_text())
    assert list(output_dir.rglob("run_summary.json")) == [output_dir / "run_summary.json"]
    assert summary["num_processes"] == 2 and summary["hyperparameters"]["effective_batch_size"] == 32

    # Only rank 0 logs at INFO. Full sharding over 2 ranks leaves it the larger half of each tensor's rows.
    (layout,) = optimizer_layouts(result.stdout)
    assert layout["holds_model_parameters"]
    assert layout["tensors"] > 0 and layout["sharded_tensors"] == layout["tensors"]
    assert layout["total_elements"] == summary["trainable_params"]
    assert layout["total_elements"] / 2 <= layout["local_elements"] < 0.6 * layout["total_elements"]

    # One process over the same 32 rows per optimizer step: the same sampler order, cut into batches of 16.
    single_dir = tmp_path / "single"
    single = run_cli(*smoke_args(single_dir, 2 * PER_DEVICE_BATCH, "--save_strategy", "no"))
    assert single.returncode == 0, single.stderr[-4000:]
    assert optimizer_layouts(single.stdout)[0]["sharded_tensors"] == 0
    (sharded_steps, sharded_loss), (single_steps, single_loss) = train_loss(output_dir), train_loss(single_dir)
    assert sharded_steps == single_steps == list(range(1, MAX_STEPS + 1))
    assert sharded_loss[-1] < sharded_loss[0] - 0.3  # it trains, so the comparison covers real updates
    assert sharded_loss == pytest.approx(single_loss, abs=1e-4)
    # Gradient clipping (max_grad_norm 1.0) is active at these norms, so it too must see the global norm.
    assert grad_norms(output_dir) == pytest.approx(grad_norms(single_dir), rel=1e-4)
    largest_difference = max(abs(a - b) for a, b in zip(sharded_loss, single_loss, strict=True))
    print(f"FSDP2 vs 1 process: largest train-loss difference {largest_difference:.3g}")
    assert summary["eval_loss"] and summary["eval_loss"][-1][0] == MAX_STEPS


@pytest.mark.slow
def test_fsdp2_resumes_from_its_checkpoint(fsdp_run, tmp_path):
    config, output_dir, _ = fsdp_run
    resumed_dir = tmp_path / "resumed"  # a new folder, resuming the run's complete checkpoint by its path
    launch_fsdp(config, resumed_dir, "--resume_from_checkpoint", str(output_dir / f"checkpoint-{CHECKPOINT_STEP}"))
    # The sharded optimizer state, scheduler and sampler position come back: the remaining steps repeat exactly.
    (resumed_steps, resumed_loss), (steps, loss) = train_loss(resumed_dir), train_loss(output_dir)
    assert resumed_steps == steps
    assert resumed_loss[CHECKPOINT_STEP:] == pytest.approx(loss[CHECKPOINT_STEP:], abs=1e-6)
