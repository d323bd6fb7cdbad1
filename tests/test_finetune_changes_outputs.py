"""Evaluation loads what training produced: a short AdamW run (full model) and a short LoRA run (adapter through
--adapter) each answer the same prompts differently from the base model. An evaluation that silently loaded the base
weights, dropped the adapter, or used another prompt would fail here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SMOKE_TASK_DATA, SMOKE_TASK_MODEL, run_cli

SHORT = ["--max_steps", "8", "--eval_steps", "8", "--save_strategy", "no", "--logging_steps", "4"]
EVAL = ["--dataset", str(SMOKE_TASK_DATA), "--limit", "4", "--max_new_tokens", "24", "--no_progress"]
ENV = {"OMP_NUM_THREADS": "1"}


def _completions(output: Path) -> dict[int, str]:
    rows = [json.loads(line) for line in (output / "generations.jsonl").read_text().splitlines()]
    return {row["id"]: row["completion"] for row in rows}


def _evaluate(tmp_path: Path, name: str, *model: str) -> dict[int, str]:
    result = run_cli("run_eval.py", *model, *EVAL, "--output", str(tmp_path / name), env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return _completions(tmp_path / name)


@pytest.fixture(scope="module")
def base_completions(tmp_path_factory) -> dict[int, str]:
    return _evaluate(tmp_path_factory.mktemp("base"), "eval", "--model", str(SMOKE_TASK_MODEL))


@pytest.mark.slow  # two smoke trainings and three evaluations: about 80 s
@pytest.mark.parametrize("method", ["adamw", "lora"])
def test_fine_tuned_model_answers_differently(method: str, base_completions: dict[int, str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = run_cli("train_sft.py", "--config", f"recipes/smoke/{method}.yaml", "--output_dir", str(run), *SHORT,
                      env=ENV)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    if method == "lora":
        assert (run / "adapter_model.safetensors").is_file() and not (run / "model.safetensors").exists()
        tuned = _evaluate(tmp_path, "eval", "--model", str(SMOKE_TASK_MODEL), "--adapter", str(run))
    else:
        tuned = _evaluate(tmp_path, "eval", "--model", str(run))
    assert tuned.keys() == base_completions.keys()
    assert all(tuned[i] != base_completions[i] for i in tuned), (tuned, base_completions)
