"""LoRA trains the end-of-turn token's embedding row (PEFT trainable tokens), and nothing else of the embedding.

Qwen3-Base never trained ``<|im_end|>``; full fine-tuning updates its row, LoRA on linear layers cannot. The LoRA
recipes therefore set ``lora_trainable_tokens: ["<|im_end|>"]``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import train_sft
from conftest import REPO, SMOKE_TASK_MODEL, run_cli
from mathsft.recipes import parse_training_args
from mathsft.run_dir import training_identity

END_OF_TURN_ID = 2  # <|im_end|> in the tiny tokenizer
LORA_RECIPES = sorted(REPO.glob("recipes/*/lora.yaml"))


def test_every_lora_recipe_trains_the_end_of_turn_token():
    assert len(LORA_RECIPES) == 3
    for recipe in LORA_RECIPES:
        assert yaml.safe_load(recipe.read_text())["lora_trainable_tokens"] == ["<|im_end|>"], recipe


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ([], ["<|im_end|>"]),
        (["--lora_trainable_tokens", "[]"], []),
        (["--lora_trainable_tokens", '["<|im_end|>", "<|im_start|>"]'], ["<|im_end|>", "<|im_start|>"]),
        (["--lora_trainable_tokens", "<|im_end|>", "<|im_start|>"], ["<|im_end|>", "<|im_start|>"]),
    ],
)
def test_the_option_is_parsed_from_the_recipe_and_the_command_line(override, expected):
    _, training_args, _ = parse_training_args(["--config", "recipes/smoke/lora.yaml", *override])
    assert training_args.lora_trainable_tokens == expected


def _fails_with(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        train_sft.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_refused_without_peft(capsys, tmp_path):
    argv = ["--config", "recipes/smoke/adamw.yaml", "--lora_trainable_tokens", "<|im_end|>"]
    _fails_with(capsys, [*argv, "--output_dir", str(tmp_path)], "lora_trainable_tokens set but use_peft is false")


def test_an_unknown_token_is_one_line(capsys, tmp_path):
    argv = ["--config", "recipes/smoke/lora.yaml", "--lora_trainable_tokens", "<|nope|>"]
    _fails_with(capsys, [*argv, "--output_dir", str(tmp_path)], "'<|nope|>' is not a single token")


def test_the_tokens_are_part_of_the_run_identity():
    with_tokens = parse_training_args(["--config", "recipes/smoke/lora.yaml"])
    without = parse_training_args(["--config", "recipes/smoke/lora.yaml", "--lora_trainable_tokens", "[]"])
    identity = training_identity(*with_tokens)
    assert identity["hyperparameters"]["lora_trainable_tokens"] == ["<|im_end|>"]
    assert identity != training_identity(*without)


def _untied_copy(folder: Path) -> Path:
    """The smoke base with its own LM head (tie_word_embeddings false), saved with every weight."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(SMOKE_TASK_MODEL)
    config.tie_word_embeddings = False
    model = AutoModelForCausalLM.from_pretrained(SMOKE_TASK_MODEL, config=config, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.copy_(model.model.embed_tokens.weight * 0.5)  # distinct from the embedding, deterministic
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(SMOKE_TASK_MODEL / name, folder / name)
    return folder


def _effective_weights(model_path: Path, adapter: Path | None) -> dict[str, torch.Tensor]:
    """Embedding and LM head as evaluation sees them (run_eval's loader: base plus merged adapter)."""
    from mathsft.generation import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(str(model_path), str(adapter) if adapter else None, "cpu", "float32")
    return {
        "embedding": model.get_input_embeddings().weight.detach().clone(),
        "lm_head": model.get_output_embeddings().weight.detach().clone(),
    }


def _changed_rows(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    return (before != after).any(dim=1).nonzero().flatten().tolist()


@pytest.mark.slow  # two short LoRA trainings of the tiny model: about a minute on 2 cores
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_lora_trains_the_end_of_turn_row_and_nothing_else_of_the_embedding(tmp_path, tied):
    model_path = SMOKE_TASK_MODEL if tied else _untied_copy(tmp_path / "untied-model")
    output_dir = tmp_path / "run"
    result = run_cli(
        "train_sft.py", "--config", "recipes/smoke/lora.yaml", "--model_name_or_path", str(model_path),
        "--output_dir", str(output_dir), "--max_steps", "4", "--max_train_samples", "64", "--max_eval_samples", "8",
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((output_dir / "run_summary.json").read_text())
    assert summary["lora_trainable_tokens"] == ["<|im_end|>"]
    assert summary["lora_trainable_token_ids"] == [END_OF_TURN_ID]
    adapter = load_file(output_dir / "adapter_model.safetensors")
    rows = {name: t for name, t in adapter.items() if "trainable_tokens_delta" in name}
    assert len(rows) == (1 if tied else 2)  # a tied head shares the embedding's row
    assert all(t.shape[0] == 1 for t in rows.values())
    lora = sum(t.numel() for name, t in adapter.items() if "lora_" in name)
    assert set(adapter) == {name for name in adapter if "lora_" in name} | set(rows)
    # The trainable count (and the trainer's check that the optimizer holds exactly it) includes the rows.
    assert summary["trainable_params"] == lora + sum(t.numel() for t in rows.values())
    assert "embedding" in summary["eval_precision"]["by_kind"]

    before = _effective_weights(model_path, None)
    after = _effective_weights(model_path, output_dir)
    for kind in ("embedding", "lm_head"):
        assert _changed_rows(before[kind], after[kind]) == [END_OF_TURN_ID], kind
    embedding_row = next(t for name, t in rows.items() if "embed_tokens" in name)
    assert torch.equal(after["embedding"][END_OF_TURN_ID], embedding_row[0])  # the reloaded row is the trained one
    if tied:
        assert torch.equal(after["lm_head"], after["embedding"])
    else:
        head_row = next(t for name, t in rows.items() if "lm_head" in name)
        assert torch.equal(after["lm_head"][END_OF_TURN_ID], head_row[0])
