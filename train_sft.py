"""Supervised fine-tuning of a causal LM on chat-formatted MATH problems with AdamW, SGD or LoRA.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml train_sft.py \
        --config recipes/qwen3-0.6b-base/adamw.yaml
    python train_sft.py --config recipes/smoke/lora.yaml      # tiny model, CPU, offline
    python train_sft.py --help                                # the main options; --help_all lists every one
"""

from __future__ import annotations

import logging
import sys

from mathsft.configs import validate_args
from mathsft.errors import exit_on_user_error
from mathsft.hub import offline_if_unreachable
from mathsft.recipes import parse_training_args
from mathsft.training import run_training


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    data_args, training_args, model_args = parse_training_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
        stream=sys.stdout,
    )
    validate_args(data_args, training_args, model_args)
    offline_if_unreachable([model_args.model_name_or_path, data_args.dataset_name])
    run_training(data_args, training_args, model_args)


if __name__ == "__main__":
    main()
