"""End to end on the smoke recipes: loss falls, the right weights move, the summary and TensorBoard are complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import OFFLINE_ENV, REPO, SMOKE_TASK_MODEL, run_cli
from mathsft.artifacts import RunSummary, schema_problems

# Three smoke trainings plus an interrupted and resumed one: minutes on 2 cores.
pytestmark = pytest.mark.slow

# 288 training examples: 2 epochs of 18 steps (batch 8 x accumulation 2), 32 validation examples.
SHORT = ["--max_train_samples", "288", "--max_eval_samples", "32"]
SUMMARY_KEYS = {
    "method",
    "hyperparameters",
    "trainable_params",
    "total_params",
    "train_loss",
    "eval_loss",
    "epochs",
    "total_time_s",
    "device_name",
    "versions",
    "dropped_examples",
}
EPOCH_KEYS = {"epoch", "wall_time_s", "peak_memory_allocated_gib", "peak_memory_reserved_gib", "tokens_per_s"}


@pytest.fixture(scope="module", params=["adamw", "sgd", "lora"])
def smoke_run(request, tmp_path_factory) -> tuple[str, Path]:
    method = request.param
    output_dir = tmp_path_factory.mktemp(f"smoke-{method}")
    recipe = f"recipes/smoke/{method}.yaml"
    result = run_cli("train_sft.py", "--config", recipe, "--output_dir", str(output_dir), *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    return method, output_dir


def _summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "run_summary.json").read_text())


def test_loss_falls(smoke_run):
    _, output_dir = smoke_run
    summary = _summary(output_dir)
    train, val = summary["train_loss"], summary["eval_loss"]
    assert len(train) >= 10 and len(val) >= 3
    assert train[-1][1] < 0.95 * train[0][1]
    assert val[-1][1] < val[0][1]


def test_summary_has_every_field(smoke_run):
    method, output_dir = smoke_run
    summary = _summary(output_dir)
    assert schema_problems(summary, RunSummary) == []  # the writer fills the one schema the readers use
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["method"] == method
    assert len(summary["epochs"]) == 2
    for record in summary["epochs"]:
        assert EPOCH_KEYS <= record.keys()
        assert record["wall_time_s"] > 0 and record["tokens_per_s"] > 0
        assert record["peak_rss_gib"] > 0  # CPU run: peak RSS, labelled as such
    assert summary["memory_kind"] == "cpu_peak_rss"
    assert summary["hyperparameters"]["optimizer"] == ("adamw" if method == "lora" else method)
    assert summary["dropped_examples"] == 0
    assert {"torch", "transformers", "trl", "peft"} <= summary["versions"].keys()
    precision = summary["eval_precision"]  # share of the update that survives the cast to bf16
    assert precision["dtype"] == "bfloat16" and precision["overall"] > 0
    assert {"attention", "mlp", "embedding"} <= precision["by_kind"].keys()
    assert summary["lora_trainable_tokens"] == (["<|im_end|>"] if method == "lora" else [])
    assert (output_dir / "validation_ids.json").exists()
    assert len(json.loads((output_dir / "validation_ids.json").read_text())) == 32  # max_eval_samples


def test_tensorboard_has_loss_and_perf_tags(smoke_run):
    _, output_dir = smoke_run
    accumulator = EventAccumulator(str(output_dir / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "eval/loss", "perf/peak_rss_gib", "perf/epoch_time_s", "perf/tokens_per_s"} <= tags
    assert len(accumulator.Scalars("perf/epoch_time_s")) == 2


def test_the_right_weights_change(smoke_run):
    method, output_dir = smoke_run
    base = load_file(SMOKE_TASK_MODEL / "model.safetensors")
    if method in ("adamw", "sgd"):
        tuned = load_file(output_dir / "model.safetensors")
        changed = [name for name in base if not torch.equal(base[name], tuned[name])]
        assert len(changed) == len(base), "full fine-tuning should move every tensor"
        return
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = load_file(output_dir / "adapter_model.safetensors")
    # Adapters, plus the end-of-turn token's row (lora_trainable_tokens; tests/test_lora_tokens.py checks the rows).
    assert adapter and all("lora_" in name or "trainable_tokens_delta" in name for name in adapter)
    assert any(name.endswith("lora_B.weight") and adapter[name].abs().sum() > 0 for name in adapter)  # B starts at 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(SMOKE_TASK_MODEL), output_dir)
    for name, param in model.get_base_model().named_parameters():
        if "lora_" in name or "token_adapter.trainable_tokens" in name:
            continue
        key = name.replace("base_layer.", "").replace("token_adapter.", "")
        assert torch.equal(param.detach(), base[key]), f"LoRA changed the base weight {key}"


def test_generation_config_stops_on_end_of_turn(smoke_run):
    method, output_dir = smoke_run
    if method == "lora":
        pytest.skip("adapters carry no generation config")
    config = json.loads((output_dir / "generation_config.json").read_text())
    eos = config["eos_token_id"]
    assert 2 in eos and 0 in eos  # <|im_end|> and <|endoftext|> in the tiny tokenizer


def test_interrupt_saves_checkpoint_and_resume_continues_the_curves(tmp_path):
    """Ctrl-C during training saves a checkpoint and a summary; --resume_from_checkpoint continues the curve."""
    output_dir = tmp_path / "run"
    train_args = ["train_sft.py", "--config", "recipes/smoke/sgd.yaml", "--output_dir", str(output_dir), *SHORT]
    train_args += ["--save_steps", "1000", "--logging_steps", "1"]  # checkpoints only from the interrupt
    env = {**os.environ, **OFFLINE_ENV}
    process = subprocess.Popen(
        [sys.executable, *train_args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    deadline = time.time() + 300
    for line in process.stdout:  # wait for a few optimizer steps
        seen.append(line)
        if "'loss'" in line and sum("'loss'" in x for x in seen) >= 3:
            process.send_signal(signal.SIGINT)
            break
        assert time.time() < deadline
    rest, _ = process.communicate(timeout=300)
    assert process.returncode == 130, "".join(seen)[-2000:] + rest[-2000:]  # interrupted: not a finished run
    summary = _summary(output_dir)
    assert summary["interrupted"] is True
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    assert checkpoints, "an interrupted run must leave a checkpoint"
    stopped_at = summary["global_step"]
    assert 0 < stopped_at < 36

    result = run_cli(*train_args, "--resume_from_checkpoint", "true")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = _summary(output_dir)
    assert resumed["interrupted"] is False
    assert resumed["global_step"] == 36
    steps = [step for step, _ in resumed["train_loss"]]
    assert steps[0] == 1 and steps[-1] == 36 and steps == sorted(set(steps))  # one continuous curve
