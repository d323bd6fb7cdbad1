"""Bad input ends with one clear line on stderr, a non-zero exit and no traceback."""

from __future__ import annotations

import pytest

import train_sft
from conftest import run_cli

SMOKE = ["--config", "recipes/smoke/adamw.yaml"]


def _fails_with(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        train_sft.main(argv)
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error line on stderr"
    assert err[-1].startswith("error: ") and message in err[-1], err[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "recipes/smoke/nope.yaml"], "recipe not found: recipes/smoke/nope.yaml"),
        ([*SMOKE, "--optimizer", "lion"], "unknown optimizer 'lion'; valid optimizers are: adamw, sgd"),
        ([*SMOKE, "--dataset_name", "./no/such/folder"], "dataset path not found: ./no/such/folder"),
        ([*SMOKE, "--problem_column", "question"], "column 'question' not found"),
        ([*SMOKE, "--model_name_or_path", "./no/such/model"], "model path not found: ./no/such/model"),
        ([*SMOKE, "--max_length", "16"], "max_length 16 cannot hold the chat template and instruction"),
        ([*SMOKE, "--max_length", "60"], "no training examples left after dropping those longer than max_length=60"),
        ([*SMOKE, "--lora_r", "8"], "lora_r set but use_peft is false"),
        ([*SMOKE, "--resume_from_checkpoint", "./no/such/checkpoint"], "checkpoint not found"),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, argv, message):
    _fails_with(capsys, [*argv, "--output_dir", str(tmp_path)], message)


def test_unknown_and_malformed_recipes(capsys, tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model_name_or_path: assets/smoke/model\nlearning_rte: 1.0e-5\n")
    _fails_with(capsys, ["--config", str(unknown)], "unknown recipe key 'learning_rte' in")
    _fails_with(capsys, ["--config", str(unknown)], "(did you mean 'learning_rate'?)")
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("optimizer: [adamw\n")
    _fails_with(capsys, ["--config", str(malformed)], "malformed recipe YAML")
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- adamw\n")
    _fails_with(capsys, ["--config", str(not_a_mapping)], "must contain a YAML mapping")


@pytest.mark.slow  # waits out the hub probe (about 12 s); test_hub.py keeps a fast case
def test_hub_model_unreachable_suggests_a_local_path(tmp_path):
    """As a user sees it: a real process, offline hub, no traceback."""
    result = run_cli(
        "train_sft.py", *SMOKE, "--model_name_or_path", "Qwen/Qwen3-0.6B-Base", "--output_dir", str(tmp_path)
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: could not load 'Qwen/Qwen3-0.6B-Base'") and "--model_name_or_path /local/path" in last
    )
