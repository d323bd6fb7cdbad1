"""Supervised fine-tuning of a causal LM on chat-formatted MATH problems with AdamW, SGD or LoRA.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml train_sft.py \
        --config recipes/qwen3-0.6b-base/adamw.yaml
    python train_sft.py --config recipes/smoke/lora.yaml      # tiny model, CPU, offline
"""

from __future__ import annotations

import dataclasses
import logging
import sys

import yaml
from trl import ModelConfig, TrlParser

from mathsft.configs import DataArguments, MathSFTConfig, validate_args
from mathsft.errors import UserError, exit_on_user_error, load_yaml_mapping, reject_unknown_keys
from mathsft.training import run_training


def check_recipe_keys(argv: list[str], dataclass_types: tuple[type, ...]) -> None:
    """Unknown recipe keys are an error (with a suggestion), before any dataclass validation runs."""
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        return
    path = argv[argv.index("--config") + 1]
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)} | {"env"}
    reject_unknown_keys(load_yaml_mapping(path, "recipe"), known, "recipe", path)


def parse_args(argv: list[str] | None = None) -> tuple[DataArguments, MathSFTConfig, ModelConfig]:
    argv = list(sys.argv[1:] if argv is None else argv)
    dataclass_types = (DataArguments, MathSFTConfig, ModelConfig)
    parser = TrlParser(dataclass_types)
    try:
        check_recipe_keys(argv, dataclass_types)
        return parser.parse_args_and_config(args=argv)
    except FileNotFoundError as err:
        raise UserError(f"recipe not found: {err.filename}") from err
    except yaml.YAMLError as err:
        raise UserError(f"malformed recipe YAML: {str(err).splitlines()[0]}") from err
    except (ValueError, TypeError) as err:
        raise UserError(f"bad recipe: {str(err).splitlines()[0]}") from err


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    data_args, training_args, model_args = parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
        stream=sys.stdout,
    )
    validate_args(data_args, training_args, model_args)
    run_training(data_args, training_args, model_args)


if __name__ == "__main__":
    main()
