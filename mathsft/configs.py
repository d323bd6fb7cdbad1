"""Configuration dataclasses, parsed by ``trl.TrlParser`` from ``--config recipe.yaml`` plus command-line overrides."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from trl import ModelConfig, SFTConfig

from mathsft.data import DEFAULT_DATASET, refuse_evaluation_of_training_data, refuse_test_split
from mathsft.errors import UserError
from mathsft.methods import method_for
from mathsft.template import END_OF_TURN

OVERLONG_CHOICES = ("drop", "truncate")
# LoRA on every linear projection of the Qwen3 blocks (attention and MLP) by default.
ALL_LINEAR_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class DataArguments:
    """Where the problems come from and how they become training examples."""

    dataset_name: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "Hub dataset id, a local folder holding <split>.jsonl, or a single .jsonl file."},
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on (then split 90/10)."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    solution_column: str = field(default="solution", metadata={"help": "Column holding the reference solution."})
    id_column: str = field(
        default="unique_id", metadata={"help": "Column identifying a problem; the row index is used if absent."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system turn; off by default."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Fraction held out for validation loss."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/validation split, shared by all methods."})
    overlong: str = field(
        default="drop",
        metadata={
            "help": "What to do with examples longer than max_length: 'drop' them, or 'truncate' them.",
            "choices": list(OVERLONG_CHOICES),
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples after the split (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N validation examples (quick runs)."}
    )
    # Not part of a run's identity: it allows a run, it does not change what the run trains (mathsft.run_dir).
    allow_test_overlap: bool = field(
        default=False,
        metadata={"help": "Train even on the test split, or on problems that are also in the dataset's test split "
                          "(refused by default: the evaluation would score problems the model was trained on)."},
    )  # fmt: skip


@dataclass
class MathSFTConfig(SFTConfig):
    """``SFTConfig`` plus the optimizer choice, which the project builds itself (see ``mathsft.optimizers``)."""

    optimizer: str = field(
        default="adamw",
        metadata={"help": "Optimizer of the trainable parameters; with use_peft it selects the PEFT method."},
    )
    sgd_momentum: float = field(default=0.9, metadata={"help": "SGD momentum."})
    sgd_nesterov: bool = field(default=False, metadata={"help": "Use Nesterov momentum with SGD."})
    sgd_dampening: float = field(default=0.0, metadata={"help": "SGD dampening."})
    # Turns end with <|im_end|>; making it the eos puts it in the labels and in the saved generation config.
    eos_token: str | None = field(default=END_OF_TURN, metadata={"help": "End-of-turn token the model must learn."})
    completion_only_loss: bool | None = field(default=True, metadata={"help": "Loss on the completion tokens only."})
    # Current transformers name; TRL's deprecated alias defaults to True, which would warn on every run.
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Recompute activations in the backward pass to save memory."}
    )
    gradient_checkpointing: bool | None = field(  # type: ignore[assignment]  # None: "not set", unlike the base
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing."}
    )
    # Every trainable parameter of these models (full, or LoRA adapters) takes part in each forward pass, so DDP's
    # search for unused ones is an extra autograd traversal per step for nothing (transformers turns it on whenever
    # activation checkpointing is off).
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP: search for parameters unused in the forward pass (only models with such branches)."},
    )

    # Qwen3-Base never trained <|im_end|>: full fine-tuning learns its embedding row (tied to the LM head), LoRA on
    # linear layers cannot, unless that row trains too (PEFT's trainable_token_indices).
    lora_trainable_tokens: list[str] = field(
        default_factory=list,
        metadata={"help": "With use_peft: tokens whose embedding (and LM-head) rows train fully, e.g. '<|im_end|>'; "
                  "'[]' for none."},
    )

    overwrite: bool = field(
        default=False,
        metadata={"help": "Start over in an output_dir that holds another run (its old results are removed first)."},
    )
    # A NaN loss must stop the run (exit code 3), never be logged as an average of the finite ones.
    logging_nan_inf_filter: bool = field(default=False, metadata={"help": "Kept off: divergence stops the run."})

    def __post_init__(self) -> None:
        # fp16 autocast on GPUs without bf16 (T4, V100); master weights stay fp32 either way.
        if self.bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            self.bf16, self.fp16 = False, True
        self.lora_trainable_tokens = token_list(self.lora_trainable_tokens)
        super().__post_init__()


def token_list(value: Any) -> list[str]:
    """``lora_trainable_tokens`` as a list: the command line may give it as JSON (``'[]'``, ``'["<|im_end|>"]'``)."""
    if isinstance(value, str):
        value = [value]
    value = list(value or [])
    if len(value) == 1 and isinstance(value[0], str) and value[0].strip().startswith("["):
        try:
            value = json.loads(value[0])
        except json.JSONDecodeError as err:
            raise UserError(f"lora_trainable_tokens: {value[0]!r} is not a JSON list") from err
    if not isinstance(value, list) or not all(isinstance(token, str) and token for token in value):
        raise UserError(f"lora_trainable_tokens must be a list of token strings, got {value!r}")
    return value


# transformers/TRL fields that this project replaces or does not honour: setting one is an error pointing to ours.
REPLACED_FIELDS: dict[str, str] = {
    "optim": "the project builds its own optimizer: set `optimizer` (adamw or sgd) and that method's "
    "hyperparameters (adam_beta1, sgd_momentum, ...)",
    "optim_args": "set the method's own hyperparameters instead (adam_beta1, adam_epsilon, sgd_momentum, ...)",
    "optim_target_modules": "the optimizer trains every trainable parameter; choose LoRA with use_peft",
    "trust_remote_code": "not supported: models load with transformers' own code (remote code stays off)",
    "model_init_kwargs": "the project loads the model itself: use dtype and attn_implementation",
    "load_in_8bit": "quantized training is not part of this pipeline",
    "load_in_4bit": "quantized training is not part of this pipeline",
    "bnb_4bit_quant_type": "quantized training is not part of this pipeline",
    "bnb_4bit_quant_storage": "quantized training is not part of this pipeline",
    "use_bnb_nested_quant": "quantized training is not part of this pipeline",
    "dataset_text_field": "the project builds chat examples itself: use problem_column and solution_column",
    "dataset_kwargs": "the project builds chat examples itself: use problem_column and solution_column",
    "chat_template_path": "the chat template is the tokenizer's; the prompt format is mathsft/template.py",
    "assistant_only_loss": "the loss is on the answer already: completion_only_loss (on by default)",
    "logging_nan_inf_filter": "a non-finite loss stops the run with exit code 3; it is never filtered",
    "overwrite_output_dir": "use --overwrite true",
}


def _number(value: Any) -> float | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number and math.isfinite(value) else None


def _require(name: str, value: Any, allowed: str, ok: Callable[[float], bool]) -> None:
    """``name`` must be a finite number within ``allowed`` (said in the error)."""
    number = _number(value)
    if number is None or not ok(number):
        raise UserError(f"{name} must be {allowed}, got {value!r}")


def validate_ranges(data_args: DataArguments, training_args: MathSFTConfig, model_args: ModelConfig) -> None:
    """Every numeric setting within its range, before anything is loaded or written; each failure names the key."""
    t, d = training_args, data_args
    _require("learning_rate", t.learning_rate, "a finite number > 0", lambda x: x > 0)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _require(name, getattr(t, name), "an integer >= 1", lambda x: x >= 1 and x == int(x))
    _require("num_train_epochs", t.num_train_epochs, "a finite number >= 0", lambda x: x >= 0)
    _require("max_steps", t.max_steps, "an integer (-1: use num_train_epochs)", lambda x: x == int(x))
    if not (t.max_steps > 0 or t.num_train_epochs > 0):
        raise UserError(f"nothing to train: num_train_epochs ({t.num_train_epochs}) or max_steps ({t.max_steps}) "
                        "must be > 0")  # fmt: skip
    _require("weight_decay", t.weight_decay, "a finite number >= 0", lambda x: x >= 0)
    _require("warmup_steps", t.warmup_steps, "a number >= 0 (a ratio of the steps when < 1)", lambda x: x >= 0)
    _require("max_grad_norm", t.max_grad_norm, "a finite number >= 0 (0: no clipping)", lambda x: x >= 0)
    for name in ("adam_beta1", "adam_beta2", "sgd_momentum", "sgd_dampening"):
        _require(name, getattr(t, name), "in [0, 1)", lambda x: 0 <= x < 1)
    _require("adam_epsilon", t.adam_epsilon, "a finite number > 0", lambda x: x > 0)
    _require("max_length", t.max_length, "an integer >= 16", lambda x: x >= 16 and x == int(x))
    _require("validation_fraction", d.validation_fraction, "in (0, 1)", lambda x: 0 < x < 1)
    # numpy and torch take 32-bit unsigned seeds; anything else fails deep inside with a traceback.
    for name, value in (("seed", t.seed), ("data_seed", t.data_seed), ("split_seed", d.split_seed)):
        if value is not None:
            _require(name, value, "an integer in [0, 2**32 - 1]", lambda x: 0 <= x < 2**32 and x == int(x))
    if d.overlong not in OVERLONG_CHOICES:
        raise UserError(f"overlong must be one of {', '.join(OVERLONG_CHOICES)}, got {d.overlong!r}")
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(d, name) is not None:
            _require(name, getattr(d, name), "an integer >= 1", lambda x: x >= 1 and x == int(x))
    if model_args.use_peft:
        _require("lora_r", model_args.lora_r, "an integer >= 1", lambda x: x >= 1 and x == int(x))
        _require("lora_alpha", model_args.lora_alpha, "a finite number > 0", lambda x: x > 0)
        _require("lora_dropout", model_args.lora_dropout, "in [0, 1)", lambda x: 0 <= x < 1)


def validate_args(data_args: DataArguments, training_args: MathSFTConfig, model_args: ModelConfig) -> None:
    """Cross-field checks that the parser cannot express; each failure is one clear line."""
    method_for(training_args.optimizer, model_args.use_peft)  # one line naming the valid methods otherwise
    if training_args.max_length is None:
        raise UserError("max_length must be set (1024 keeps 98% of MATH train with the Qwen3 tokenizer)")
    validate_ranges(data_args, training_args, model_args)
    if not model_args.use_peft:
        defaults = ModelConfig()
        changed = [
            f.name
            for f in fields(ModelConfig)
            if f.name.startswith(("lora_", "use_rslora", "use_dora"))
            and getattr(model_args, f.name) != getattr(defaults, f.name)
        ]
        changed += ["lora_trainable_tokens"] if training_args.lora_trainable_tokens else []
        if changed:
            raise UserError(
                f"{', '.join(changed)} set but use_peft is false: full fine-tuning with {training_args.optimizer} "
                "has no LoRA; set use_peft: true or remove the LoRA settings"
            )
    if model_args.model_name_or_path is None:
        raise UserError("model_name_or_path is required (a hub id such as Qwen/Qwen3-0.6B-Base or a local path)")
    refuse_test_split(data_args.dataset_name, data_args.dataset_train_split, data_args.allow_test_overlap)


def check_not_evaluation_data(data_args: DataArguments, evaluation: dict[str, Any]) -> None:
    """A study's pre-check of each run: it must not train on the data the study evaluates (``run_eval.py`` options
    ``evaluation``), unless the run sets ``allow_test_overlap`` (see ``mathsft.data``)."""
    from mathsft.evaluation import eval_args_from_mapping

    eval_args = eval_args_from_mapping(evaluation, "the study's evaluation settings")
    refuse_evaluation_of_training_data(
        (data_args.dataset_name, data_args.dataset_train_split, data_args.problem_column),
        (eval_args.dataset, eval_args.split, eval_args.problem_column),
        data_args.allow_test_overlap,
    )


def method_name(training_args: MathSFTConfig, model_args: ModelConfig) -> str:
    """The registered method a run trains (see ``mathsft.methods``)."""
    return method_for(training_args.optimizer, model_args.use_peft).name
