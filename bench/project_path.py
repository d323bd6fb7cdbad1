"""The project's training path in the bench: a recipe (plus the configuration's switches) parsed by
``mathsft.recipes.parse_training_args`` exactly as train_sft.py parses it, the trainer built by
``mathsft.training.build_trainer``, then ``trainer.train()`` for the warm-up and timed steps.

Tokens are the project's own count: ``mathsft.callbacks.TokenCounter`` tags every collated batch with its real
(non-padding) tokens, and the trainer adds the tag in its ``training_step``, in the main process, also when the
collator runs in dataloader workers. The per-step training loss is the sum of the micro-batch losses that
``training_step`` returns (what the trainer logs with ``logging_steps: 1``), kept on the device until the end.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from bench.common import REPO, sync
from bench.switches import SWITCHES, Configuration
from bench.timing import timing_summary
from mathsft import training
from mathsft.configs import validate_args
from mathsft.errors import UserError
from mathsft.recipes import TrainingArgs, parse_training_args


def recipe_argv(recipe: Path, model_path: str, data_path: str, out_dir: Path, max_steps: int, max_samples: int,
                device: torch.device) -> list[str]:  # fmt: skip
    """The recipe with only what a timing run must change: paths, max_steps, no evaluation, no checkpoints."""
    argv = [
        "--config", str(recipe),
        "--model_name_or_path", model_path,
        "--dataset_name", data_path,
        "--output_dir", str(out_dir),
        "--max_steps", str(max_steps),
        "--max_train_samples", str(max_samples),
        "--max_eval_samples", "8",  # validation is prepared but never run: keep its preparation trivial
        "--report_to", "none",
        "--save_strategy", "no",
        "--eval_strategy", "no",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    if device.type == "cpu":  # CPU smoke runs: no autocast, no worker processes
        argv += ["--use_cpu", "true", "--bf16", "false", "--dataloader_num_workers", "0"]
    return argv


def parse_recipe(argv: list[str]) -> TrainingArgs:
    """``parse_training_args`` plus train_sft.py's cross-field checks; argparse's exit becomes one line."""
    try:
        args = parse_training_args(argv)
    except SystemExit as err:  # argparse exits on an unknown or malformed argument
        raise UserError(f"bad train_sft.py arguments: {shlex.join(argv)}") from err
    validate_args(*args)
    return args


class StepRecorder(TrainerCallback):
    """Synchronised clock readings at each optimizer step's begin and end, the project's token count at each end,
    and the micro-batch losses of each step."""

    def __init__(self, device: torch.device, trainer: Any) -> None:
        self.device = device
        self.token_counter = trainer.token_counter
        self.begins: list[float] = []
        self.ends: list[float] = []
        self.tokens: list[int] = []
        self.micro_losses: list[torch.Tensor] = []
        self.step_bounds: list[int] = []
        original_step = trainer.training_step

        def training_step(*args: Any, **kwargs: Any) -> torch.Tensor:
            loss = original_step(*args, **kwargs)
            self.micro_losses.append(loss.detach())
            return loss

        trainer.training_step = training_step  # per instance: the class stays untouched

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        sync(self.device)
        self.begins.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        sync(self.device)
        self.ends.append(time.perf_counter())
        self.tokens.append(self.token_counter.tokens)
        self.step_bounds.append(len(self.micro_losses))

    def step_losses(self) -> list[float]:
        starts = [0, *self.step_bounds[:-1]]
        return [float(torch.stack(self.micro_losses[a:b]).sum()) for a, b in zip(starts, self.step_bounds, strict=True)]


def _recipe_facts(trainer: Any, args: TrainingArgs, recipe: Path, data: Any) -> dict[str, Any]:
    """What the run actually trained with: batch shape, precision, attention, checkpointing, data sizes."""
    _, training_args, model_args = args
    micro, accum = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    rows = len(trainer.train_dataset)
    checkpointing = any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules())
    return {
        "recipe": str(recipe.relative_to(REPO) if recipe.is_relative_to(REPO) else recipe),
        "micro_batch": micro,
        "grad_accum": accum,
        "max_length": training_args.max_length,
        "packing": training_args.packing,
        "weights": str(model_args.dtype or "float32"),
        "trainable_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in trainer.model.parameters()
                                    if p.requires_grad}),  # fmt: skip
        "autocast": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None,
        "activation_checkpointing": bool(training_args.activation_checkpointing),
        "checkpointing_active": checkpointing,  # what the model does, not just what the recipe asked for
        "attn_implementation": trainer.model.config._attn_implementation,
        "collator": type(getattr(trainer.data_collator, "collator", trainer.data_collator)).__name__,
        "use_liger_kernel": bool(training_args.use_liger_kernel),
        "lora_dropout": model_args.lora_dropout if model_args.use_peft else None,
        "dataloader_num_workers": training_args.dataloader_num_workers,
        "train_examples": len(data.train),
        "packed_rows": rows,
        "steps_per_epoch": -(-rows // (micro * accum)),
    }


def run_project(configuration: Configuration, recipe: Path, argv: list[str], warmup: int, device: torch.device
                ) -> dict[str, Any]:  # fmt: skip
    """Build the trainer of one configuration and time ``max_steps`` (from ``argv``) optimizer steps."""
    switches = [SWITCHES[name] for name in configuration.switches]
    build_start = time.perf_counter()
    args = parse_recipe(argv)
    trainer, data, _ = training.build_trainer(*args)
    facts: dict[str, Any] = {}
    for switch in switches:
        if switch.after_build is not None:
            facts |= switch.after_build(trainer)
    trainer.remove_callback(PrinterCallback)  # keeps stdout for the table (logs are still computed)
    recorder = StepRecorder(device, trainer)
    trainer.add_callback(recorder)
    build_s = time.perf_counter() - build_start

    sync(device)
    train_start = time.perf_counter()
    trainer.train()
    steps = args[1].max_steps
    if len(recorder.ends) < steps:
        raise RuntimeError(f"the trainer stopped after {len(recorder.ends)} of {steps} steps; more data needed")
    tokens_per_step = [b - a for a, b in zip([0, *recorder.tokens[:-1]], recorder.tokens, strict=True)]
    losses = recorder.step_losses()
    result = timing_summary(recorder.ends, recorder.begins, tokens_per_step, warmup)
    result |= {
        "build_s": round(build_s, 2),
        "first_steps_s": round(recorder.ends[warmup - 1] - train_start, 2),  # dataloader start-up and warm-up steps
        **_recipe_facts(trainer, args, recipe, data),
        **facts,
        "step_losses": losses,  # full precision: the loss comparison between configurations reads them
        "last_loss": round(losses[-1], 4),
    }
    del trainer, data, recorder  # the training_step closure's cycle goes with the next gc.collect()
    return result
