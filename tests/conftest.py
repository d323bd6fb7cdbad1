"""Shared test helpers: repository paths, the optional real data beside the checkout, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mathsft.template import CHAT_TEMPLATE_KWARGS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
REAL_DATA = SHARED / "math500"
REAL_TOKENIZER = SHARED / "qwen3-0.6b-base"
SMOKE_MODEL = REPO / "assets" / "smoke" / "model"
SMOKE_DATA = REPO / "assets" / "smoke" / "data"
# The learnable smoke task the smoke recipes and study train on (scripts/make_smoke_task.py).
SMOKE_TASK_MODEL = REPO / "assets" / "smoke-task" / "model"
SMOKE_TASK_DATA = REPO / "assets" / "smoke-task" / "data"

# Offline and quiet: no hub retries, no tokenizer thread pools fighting over 2 cores.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
}


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a repo entry point the way a user would, offline; returns the completed process (never raises)."""
    full_env = os.environ | OFFLINE_ENV | (env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def require_real_data() -> None:
    if not (REAL_DATA / "train.jsonl").exists() or not (REAL_TOKENIZER / "vocab.json").exists():
        pytest.skip(f"real data not present at {SHARED} (it lives beside the checkout as ../shared)")


def independent_masking(tokenizer, example: dict) -> tuple[list[int], list[int]]:
    """Plain computation: render the full chat and the generation prompt, tokenize both, mask the prompt prefix."""
    full_text = tokenizer.apply_chat_template(
        example["prompt"] + example["completion"], tokenize=False, **CHAT_TEMPLATE_KWARGS
    )
    prompt_text = tokenizer.apply_chat_template(
        example["prompt"], tokenize=False, add_generation_prompt=True, **CHAT_TEMPLATE_KWARGS
    )
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids, "the prompt must be a token prefix of the full chat"
    return full_ids, [-100] * len(prompt_ids) + full_ids[len(prompt_ids) :]
