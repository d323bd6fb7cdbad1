"""Training recipes: ``--config recipe.yaml`` plus command-line overrides, parsed into the three dataclasses of
``train_sft.py`` through ``mathsft.cli``. The bench can parse recipes through here too, so both read them alike."""

from __future__ import annotations

import dataclasses

from trl import ModelConfig

from mathsft.cli import CommandLine, parse_command_line
from mathsft.configs import REPLACED_FIELDS, DataArguments, MathSFTConfig
from mathsft.errors import UserError
from mathsft.help_pages import CPU_OVERRIDES, GPU_RECIPE, SMOKE_RECIPE, TRAIN_HELP

PROG = "train_sft.py"
TRAINING_DATACLASSES = (DataArguments, MathSFTConfig, ModelConfig)
TrainingArgs = tuple[DataArguments, MathSFTConfig, ModelConfig]
# Replaced fields that are harmless when explicitly switched off.
ONLY_WHEN_TRUE = {"trust_remote_code"}

def training_keys() -> set[str]:
    """Every key a recipe (or ``--key value`` override) may set."""
    return {f.name for cls in TRAINING_DATACLASSES for f in dataclasses.fields(cls)}


def reject_replaced_fields(command_line: CommandLine) -> None:
    """A transformers/TRL field that this project replaces, set in the recipe or on the command line, is one line
    pointing to the project's own setting (``mathsft.configs.REPLACED_FIELDS``)."""
    for key, pointer in REPLACED_FIELDS.items():
        if key in ONLY_WHEN_TRUE:
            continue  # checked on the parsed value: "false" is what the project does anyway
        if command_line.sets(key):
            where = "in the recipe" if key in command_line.config else "on the command line"
            raise UserError(f"'{key}' (set {where}) is not used by this project: {pointer}")


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


SMOKE_HINT = f"python {PROG} --config {SMOKE_RECIPE} runs the tiny smoke model on the CPU in about a minute"


def _no_recipe_error() -> UserError:
    if _has_gpu():
        return UserError(f"no recipe given: e.g. python {PROG} --config {GPU_RECIPE} ({PROG} --help lists the options)")
    return UserError(
        f"no recipe given, and no GPU found: {SMOKE_HINT}; the Qwen3 recipes need a GPU, or {CPU_OVERRIDES} "
        f"to run one on the CPU (slow); {PROG} --help lists the options"
    )


def _no_gpu_error(err: UserError) -> UserError | None:
    """transformers' "Your setup doesn't support bf16/gpu" on a machine without CUDA, as what is missing and what to
    run instead; None for any other error."""
    cause = err.__cause__
    if not isinstance(cause, ValueError) or "bf16" not in str(cause) or _has_gpu():
        return None
    return UserError(
        f"no GPU found, and this recipe trains with bf16 autocast on a GPU: {SMOKE_HINT}; or add {CPU_OVERRIDES} "
        "to train this recipe on the CPU (slow for a real model)"
    )


def parse_training_args(argv: list[str]) -> TrainingArgs:
    """A recipe plus overrides -> ``(DataArguments, MathSFTConfig, ModelConfig)``; each failure is one line."""
    if not argv:
        raise _no_recipe_error()
    try:
        (data_args, training_args, model_args), _ = parse_command_line(
            TRAINING_DATACLASSES, argv, TRAIN_HELP, PROG, "recipe", precheck=reject_replaced_fields
        )
    except UserError as err:
        raise (_no_gpu_error(err) or err) from err.__cause__
    if any(getattr(args, "trust_remote_code", False) for args in (data_args, training_args, model_args)):
        raise UserError(f"trust_remote_code is true: {REPLACED_FIELDS['trust_remote_code']}")
    return data_args, training_args, model_args
