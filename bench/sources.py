"""The model and the data a training bench runs on: a real checkpoint, the tiny smoke model, or Qwen3-0.6B's
architecture with random weights saved like a checkpoint (with the real tokenizer); MATH train examples of the
project's seeded split.

    python bench/sources.py --config_dir .gpu_data/qwen3-0.6b-base --out /tmp/qwen3-random   # a random checkpoint
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the project's own packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bench.common import REPO
from mathsft.configs import DataArguments
from mathsft.data import load_problems, split_train_validation
from mathsft.errors import UserError, exit_on_user_error

SMOKE = REPO / "assets" / "smoke"
# Real data lives beside the checkout (../shared/data); on the GPU machine it is copied into .gpu_data/.
DATA_ROOTS = (REPO.parent / "shared" / "data", REPO / ".gpu_data")


@dataclass
class Sources:
    model_path: str  # what every setup loads: a checkpoint, the smoke model, or the random model (set once saved)
    model_description: str
    config_path: str
    tokenizer_path: str
    data_path: str
    random_weights: bool = False  # the model is built from config_path and saved to model_path before use


def _find_shared(name: str) -> Path | None:
    return next((root / name for root in DATA_ROOTS if (root / name).exists()), None)


def resolve_sources(
    tiny: bool, model: str | None, config_dir: str | None, tokenizer_dir: str | None, data_dir: str | None
) -> Sources:
    """Where the model, its config and tokenizer, and the data come from; a random model has no ``model_path`` yet."""
    real_data = _find_shared("math500")
    data = data_dir or (str(real_data) if real_data else None)
    if tiny:
        model = model or str(SMOKE / "model")
        data = data or str(SMOKE / "data")  # the committed sample problems when the real data is absent
        return Sources(model, f"tiny smoke model {model}", model, tokenizer_dir or model, data)
    if data is None:
        raise UserError("no MATH train data: pass --data_dir (a folder with train.jsonl), e.g. .gpu_data/math500")
    if model:
        return Sources(model, f"checkpoint {model}", model, tokenizer_dir or model, data)
    found = _find_shared("qwen3-0.6b-base")
    config_dir = config_dir or (str(found) if found else None)
    if config_dir is None or not (Path(config_dir) / "config.json").is_file():
        raise UserError("no model config: pass --config_dir (a folder with config.json) or --model")
    description = f"random weights, architecture of {config_dir}"
    return Sources("", description, config_dir, tokenizer_dir or config_dir, data, random_weights=True)


def save_random_model(config_path: str, tokenizer_path: str, out_dir: Path, seed: int, device: torch.device) -> None:
    """Random weights in bf16 (the dtype of the released checkpoint), saved with the tokenizer like a checkpoint."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    if tokenizer.chat_template is None:
        raise UserError(f"the tokenizer in {tokenizer_path} has no chat template")
    config = AutoConfig.from_pretrained(config_path)
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the GPU: seconds instead of a minute on the CPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model


def count_parameters(config_path: str) -> dict[str, Any]:
    """N for MFU, counted on the meta device: every parameter once (a tied LM head shares the embedding)."""
    config = AutoConfig.from_pretrained(config_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
    embedding = model.get_input_embeddings().weight.numel()
    return {
        "N": total,
        "embedding": embedding,
        "non_embedding": total - embedding,
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
    }


def train_examples(data_path: str, max_samples: int) -> Any:
    """The project's training examples: the same seeded 90/10 split and first-N selection as prepare_datasets."""
    defaults = DataArguments()
    raw = load_problems(data_path, defaults.dataset_train_split, [defaults.problem_column, defaults.solution_column])
    train, _ = split_train_validation(raw, defaults.validation_fraction, defaults.split_seed)
    return train.select(range(min(max_samples, len(train))))


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save a random-weight model (bf16) with its tokenizer.")
    parser.add_argument("--config_dir", required=True, help="Folder with config.json (and the tokenizer).")
    parser.add_argument("--tokenizer_dir", help="Tokenizer folder (default: --config_dir).")
    parser.add_argument("--out", required=True, help="Folder to save the checkpoint into.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="Where to initialise the weights: auto, cuda or cpu.")
    args = parser.parse_args(argv)
    from mathsft.environment import resolve_device

    save_random_model(
        args.config_dir, args.tokenizer_dir or args.config_dir, Path(args.out), args.seed, resolve_device(args.device)
    )
    print(args.out)


if __name__ == "__main__":
    main()
