"""A training run's output folder: what defines its result, and what a new run may do with it.

Before training, ``claim_output_dir`` compares the run's identity (``training_identity``) with the one recorded in the
folder and decides, writing nothing until the decision is made:

- an empty or new folder: start, recording the identity;
- the same run, finished: nothing to do (``RunAlreadyComplete``);
- the same run, unfinished: resume from its newest complete checkpoint with ``--resume_from_checkpoint true``;
- another run: refused in one line naming the first difference, unless ``--overwrite true``, which removes the old
  run's files first (checkpoints, events, results, saved model: exactly what ``mathsft.ownership`` says a run owns);
- anything a run did not write (a user's file, a link, another run below it), or a folder that must never be an
  output (the model or data being read, a git checkout): refused in one line, with or without ``--overwrite``.

A checkpoint counts as complete only once ``mathsft_checkpoint.json`` (the run identity and the size of every file) is
written into it, after every file the trainer saves; a save cut short (a crash, a full disk) leaves no marker, and a
file truncated later no longer matches its recorded size: neither is resumed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from trl import ModelConfig

from mathsft import artifacts, ownership
from mathsft.configs import DataArguments, MathSFTConfig
from mathsft.errors import DivergedError, UserError
from mathsft.identity import IDENTITY_FILE, data_identity, first_difference, model_identity, normalized
from mathsft.methods import method_for

logger = logging.getLogger(__name__)

CHECKPOINT_MARKER = artifacts.CHECKPOINT_MARKER
# Hyperparameters that do not change the trained weights: a run may be resumed with other values.
NOT_RESULT_DEFINING = ("activation_checkpointing",)
# Data settings that only decide what is logged, not what is trained; allow_test_overlap only permits a run (the
# run summary records it).
NOT_RESULT_DEFINING_DATA = ("max_eval_samples", "allow_test_overlap")
# Every other transformers/TRL/PEFT field is part of the identity unless it only decides where results go, what is
# logged, evaluated or saved and when, how fast or on which hardware it runs. A field missing here is taken as
# result-defining: the safe side (a resume refused, never two runs mixed).
NOT_RESULT_DEFINING_PREFIXES = (
    "logging_", "log_", "eval_", "save_", "hub_", "push_to_hub", "trackio_", "dataloader_", "ddp_", "fsdp",
    "torch_compile", "activation_", "gradient_checkpointing", "include_", "_",
)  # fmt: skip
NOT_RESULT_DEFINING_FIELDS = frozenset({
    "output_dir", "overwrite", "resume_from_checkpoint", "run_name", "project", "report_to", "disable_tqdm",
    "per_device_eval_batch_size", "prediction_loss_only", "batch_eval_metrics", "bf16_full_eval", "fp16_full_eval",
    "enable_jit_checkpoint", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
    "restore_callback_states_from_checkpoint", "use_cpu", "accelerator_config", "parallelism_config", "deepspeed",
    "debug", "skip_memory_metrics", "do_train", "do_eval", "do_predict", "local_rank", "use_cache",
    "dataset_num_proc", "tf32", "use_liger_kernel", "liger_kernel_config", "full_determinism", "attn_implementation",
    "torch_empty_cache_steps",
})  # fmt: skip


class RunAlreadyComplete(Exception):
    """The output folder holds this very run, finished: there is nothing to do."""


def training_identity(data_args: DataArguments, training_args: MathSFTConfig, model_args: ModelConfig) -> dict:
    """Everything that defines a training run's result, as JSON-ready data."""
    from mathsft.training import run_hyperparameters

    method = method_for(training_args.optimizer, model_args.use_peft)
    hyper = run_hyperparameters(training_args, model_args, method)
    data = {k: v for k, v in dataclasses.asdict(data_args).items() if k not in NOT_RESULT_DEFINING_DATA}
    return normalized(
        {
            "method": method.name,
            "hyperparameters": {k: v for k, v in hyper.items() if k not in NOT_RESULT_DEFINING},
            "data": data | {"files": data_identity(data_args.dataset_name)},
            "model": model_identity(model_args.model_name_or_path),
            "model_revision": model_args.model_revision,
            "settings": other_settings(training_args, model_args, hyper),
        }
    )


def other_settings(training_args: MathSFTConfig, model_args: ModelConfig, hyper: dict[str, Any]) -> dict[str, Any]:
    """The result-defining fields beyond the recorded hyperparameters (``eos_token``, ``data_seed``, ``loss_type``,
    ``neftune_noise_alpha``, ...), by name; fields the project replaces (``optim``, ...) are rejected elsewhere."""
    from mathsft.configs import REPLACED_FIELDS
    from mathsft.methods import METHODS

    # Another method's knobs (sgd_momentum for AdamW, lora_r without LoRA) do not change this run.
    other_methods = {key for method in METHODS.values() for key in method.owned_keys()}
    recorded_elsewhere = set(hyper) | other_methods | {"model_revision"}
    excluded = recorded_elsewhere | set(REPLACED_FIELDS) | NOT_RESULT_DEFINING_FIELDS | set(NOT_RESULT_DEFINING)
    settings = {}
    for args in (training_args, model_args):
        for field in dataclasses.fields(args):
            name = field.name
            if name in excluded or name.startswith(NOT_RESULT_DEFINING_PREFIXES):
                continue
            value = getattr(args, name)
            settings[name] = json.loads(json.dumps(getattr(value, "value", value), default=str))
    return settings


def _reads(identity: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The local model and data a run reads (from its identity): its output folder must stay apart from them."""
    model = identity.get("model") or {}
    data = (identity.get("data") or {}).get("files") or {}
    return [("model folder", model.get("path")), ("data", data.get("path"))]


def _run_entries(directory: Path, identity: dict[str, Any]) -> list[Path]:
    """What a previous run left in ``directory`` (all ours, or refused in one line): what --overwrite removes."""
    ownership.check_output_location(directory, _reads(identity), "output_dir")
    found = ownership.refuse_foreign(directory, ownership.TRAINING_FOLDER, "output_dir")
    return found.removable(keep=ownership.KEPT_ON_OVERWRITE)


def _finished(summary: artifacts.RunSummary | None) -> bool:
    return summary is not None and not summary.get("interrupted") and not summary.get("diverged")


@dataclasses.dataclass
class OutputPlan:
    """What a run will do with its output folder, decided before anything is written."""

    directory: Path
    identity: dict[str, Any]
    checkpoint: str | None  # the checkpoint to resume from
    clear: bool  # --overwrite: remove the previous run's files (only those, see mathsft.ownership) first


def plan_output_dir(directory: Path, identity: dict[str, Any], overwrite: bool, resume: str | None) -> OutputPlan:
    """Decide what this run does with ``directory`` (see the module docstring); reads only, writes nothing."""
    if resume is not None and str(resume).lower() in ("", "false", "no", "none"):
        resume = None
    if resume is not None and overwrite:
        raise UserError("--overwrite true starts over; it cannot be combined with --resume_from_checkpoint")
    artifacts.check_writable_dir(directory, "output_dir")
    entries = _run_entries(directory, identity)
    recorded = artifacts.read_json(directory / IDENTITY_FILE)
    # Checkpoints alone (copied from a run) may be resumed: each one's marker says which run wrote it.
    checkpoint_dirs = {path for _, path in artifacts.checkpoints(directory)}
    only_checkpoints = all(path in checkpoint_dirs for path in entries)
    if entries and recorded is None and not overwrite and not (resume and only_checkpoints):
        raise UserError(f"{directory} holds a mathsft run without a readable {IDENTITY_FILE}; resume its checkpoints "
                        "with --resume_from_checkpoint true, or pass --overwrite true to start over")  # fmt: skip
    if recorded is not None and not overwrite:
        difference = first_difference(recorded, identity)
        if difference:
            raise UserError(f"{directory} holds a different run ({difference}); choose another output_dir, "
                            "or pass --overwrite true to replace it")  # fmt: skip
        summary = artifacts.read_run_summary(directory)
        if summary is not None and summary.get("diverged"):
            raise DivergedError(f"{directory} holds this run, which diverged at step {summary.get('diverged_step')}; "
                                "pass --overwrite true to run it again")  # fmt: skip
        if _finished(summary):
            raise RunAlreadyComplete(str(directory))
        if resume is None:
            raise UserError(f"{directory} holds an unfinished run of these settings; resume it with "
                            "--resume_from_checkpoint true, or pass --overwrite true to start over")  # fmt: skip
    checkpoint = resolve_checkpoint(resume, directory, identity)
    return OutputPlan(directory, identity, checkpoint, clear=overwrite and bool(entries))


def apply_output_plan(plan: OutputPlan) -> None:
    """Remove the previous run's files (with --overwrite; listed again, so that nothing that appeared since the plan
    is removed) and record this run's identity."""
    if plan.clear:
        logger.warning("--overwrite: removing the previous run in %s", plan.directory)
        ownership.remove(_run_entries(plan.directory, plan.identity))
    plan.directory.mkdir(parents=True, exist_ok=True)
    artifacts.write_json_atomic(plan.directory / IDENTITY_FILE, plan.identity)


def checkpoint_problem(checkpoint: Path, identity: dict[str, Any]) -> str | None:
    """Why ``checkpoint`` cannot be resumed (incomplete, damaged, or written by another run), or None when it can."""
    marker = artifacts.read_json(checkpoint / CHECKPOINT_MARKER)
    if marker is None:
        return "incomplete: its save was cut short (no completion marker)"
    damaged = _changed_file(checkpoint, marker.get("files"))
    if damaged:
        return f"damaged since it was saved: {damaged}"
    difference = first_difference(marker.get("identity"), identity)
    return f"written by a different run ({difference})" if difference else None


def _file_sizes(checkpoint: Path) -> dict[str, int]:
    """Every file of a checkpoint (sub-folders too, as FSDP writes them) with its size, the marker excepted."""
    return {
        str(path.relative_to(checkpoint)): path.stat().st_size
        for path in sorted(checkpoint.rglob("*"))
        if path.is_file() and path.name != CHECKPOINT_MARKER
    }


def _changed_file(checkpoint: Path, recorded: Any) -> str | None:
    """The first file that is missing or whose size differs from the one recorded when the save finished."""
    if not isinstance(recorded, dict):
        return None  # a marker from before sizes were recorded
    for name, size in recorded.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when saved"
    return None


def last_complete_checkpoint(output_dir: Path, identity: dict[str, Any]) -> Path | None:
    """The newest checkpoint of this run in ``output_dir`` that may be resumed, or None."""
    for _, path in reversed(artifacts.checkpoints(output_dir)):
        if checkpoint_problem(path, identity) is None:
            return path
    return None


def resolve_checkpoint(resume: str | None, output_dir: Path, identity: dict[str, Any]) -> str | None:
    """``true``: the newest complete checkpoint of this run in ``output_dir``; a path: that checkpoint, checked."""
    if resume is None or str(resume).lower() in ("", "false", "no", "none"):
        return None
    if str(resume).lower() in ("true", "yes", "last", "latest"):
        for _, path in reversed(artifacts.checkpoints(output_dir)):
            problem = checkpoint_problem(path, identity)
            if problem is None:
                return str(path)
            logger.warning("skipping %s: %s", path.name, problem)
            print(f"skipping {path}: {problem}", flush=True)
        raise UserError(f"no complete checkpoint of this run to resume from in {output_dir}")
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"checkpoint not found: {resume}")
    problem = checkpoint_problem(path, identity)
    if problem:
        raise UserError(f"cannot resume from {resume}: {problem}")
    return str(path)


def mark_checkpoint_complete(checkpoint: Path, identity: dict[str, Any], step: int) -> None:
    """Written last into a saved checkpoint: from now on it may be resumed."""
    marker = {"global_step": step, "identity": identity, "files": _file_sizes(checkpoint)}
    artifacts.write_json_atomic(checkpoint / CHECKPOINT_MARKER, marker)
