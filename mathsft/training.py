"""The training run: data preparation, model loading, the trainer with our optimizer, and the run summary."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import jinja2
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.integrations import TensorBoardCallback
from trl import ModelConfig, SFTTrainer, get_peft_config

from mathsft import artifacts
from mathsft.callbacks import (
    NUM_TOKENS_KEY,
    DivergenceGuard,
    GracefulInterruptCallback,
    PerfCallback,
    StepZeroEvaluation,
    TokenCounter,
    loss_curves,
)  # fmt: skip
from mathsft.collators import PackedRowsCollator, uses_varlen_flash_attention
from mathsft.configs import ALL_LINEAR_PROJECTIONS, DataArguments, MathSFTConfig
from mathsft.data import load_problems, refuse_test_overlap, split_train_validation
from mathsft.environment import device_name, library_versions
from mathsft.errors import DivergedError, UserError
from mathsft.identity import exclusive_output
from mathsft.methods import Method, method_for
from mathsft.optimizers import build_optimizer, count_parameters, optimizer_parameter_ids
from mathsft.paths import looks_like_local_path
from mathsft.precision import measure_update_survival
from mathsft.template import CHAT_TEMPLATE_KWARGS, build_example, chat_template_error, render_chat
from mathsft.tensor_files import check_tensor_files, is_unreadable_weights, weights_error

logger = logging.getLogger(__name__)

EXAMPLE_ID = "example_id"


@dataclasses.dataclass
class PreparedData:
    train: Dataset
    validation: Dataset
    validation_ids: list[str]
    dropped_train: int
    dropped_validation: int


def chat_token_length(tokenizer: PreTrainedTokenizerBase, example: dict[str, Any], what: str = "an example") -> int:
    """Tokens of the full rendered chat, exactly as the trainer will see it (a failing template is one line)."""
    messages = example["prompt"] + example["completion"]
    text = render_chat(tokenizer, messages, what, **example["chat_template_kwargs"])
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def to_conversations(dataset: Dataset, data_args: DataArguments, ids: list[str]) -> Dataset:
    """Problems and solutions become TRL conversational prompt-completion examples."""
    problems, solutions = dataset[data_args.problem_column], dataset[data_args.solution_column]
    rows = [
        build_example(problem, solution, data_args.system_prompt) | {EXAMPLE_ID: example_id}
        for problem, solution, example_id in zip(problems, solutions, ids, strict=True)
    ]
    return Dataset.from_list(rows)


def prepare_datasets(
    data_args: DataArguments, training_args: MathSFTConfig, tokenizer: PreTrainedTokenizerBase
) -> PreparedData:
    raw = load_problems(
        data_args.dataset_name,
        data_args.dataset_train_split,
        required_columns=[data_args.problem_column, data_args.solution_column],
    )
    refuse_test_overlap(raw[data_args.problem_column], f"{data_args.dataset_name} ({data_args.dataset_train_split})",
                        data_args.dataset_name, data_args.problem_column, data_args.allow_test_overlap)  # fmt: skip
    if data_args.id_column in raw.column_names:
        raw = raw.add_column(EXAMPLE_ID, [str(x) for x in raw[data_args.id_column]])
    else:
        raw = raw.add_column(EXAMPLE_ID, [str(i) for i in range(len(raw))])
    train, validation = split_train_validation(raw, data_args.validation_fraction, data_args.split_seed)
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples is not None:
        validation = validation.select(range(min(data_args.max_eval_samples, len(validation))))

    _check_max_length(tokenizer, data_args, training_args.max_length or 0)
    prepared, dropped = [], []
    for part in (train, validation):
        conversations = to_conversations(part, data_args, part[EXAMPLE_ID])
        before = len(conversations)
        # Every example is rendered once here, also when truncating: a template that fails on some rows says so in
        # one line naming the row, not in a traceback from inside the trainer.
        lengths = [chat_token_length(tokenizer, ex, f"example {ex[EXAMPLE_ID]}") for ex in conversations]
        if data_args.overlong == "drop":
            max_length = training_args.max_length or 0  # validate_args requires it
            keep = [i for i, n in enumerate(lengths) if n <= max_length]
            conversations = conversations.select(keep)
        dropped.append(before - len(conversations))
        prepared.append(conversations)
    train_conv, val_conv = prepared
    if len(train_conv) == 0:
        raise UserError(
            f"no training examples left after dropping those longer than max_length={training_args.max_length}"
        )
    if len(val_conv) == 0:
        raise UserError(
            f"no validation examples left after dropping those longer than max_length={training_args.max_length}"
        )
    logger.info(
        "data: %d train / %d validation examples; dropped %d train and %d validation examples over %d tokens",
        len(train_conv),
        len(val_conv),
        dropped[0],
        dropped[1],
        training_args.max_length,
    )
    return PreparedData(
        train=train_conv.remove_columns(EXAMPLE_ID),
        validation=val_conv.remove_columns(EXAMPLE_ID),
        validation_ids=list(val_conv[EXAMPLE_ID]),
        dropped_train=dropped[0],
        dropped_validation=dropped[1],
    )


def model_source(model_args: ModelConfig) -> str:
    """The model's hub id or path (``validate_args`` has checked that it is set)."""
    if not model_args.model_name_or_path:
        raise UserError("model_name_or_path is required (a hub id such as Qwen/Qwen3-0.6B-Base or a local path)")
    return model_args.model_name_or_path


def output_path(training_args: MathSFTConfig) -> Path:
    if not training_args.output_dir:
        raise UserError("output_dir is required")
    return Path(training_args.output_dir)


def _check_max_length(tokenizer: PreTrainedTokenizerBase, data_args: DataArguments, max_length: int) -> None:
    """max_length must leave room for a problem and an answer after the fixed chat scaffolding."""
    scaffold = build_example("", "", data_args.system_prompt)
    needed = chat_token_length(tokenizer, scaffold, "the chat format (an empty problem and answer)") + 16
    # The trainer also renders each prompt alone with the generation prompt (to mask it from the loss).
    render_chat(tokenizer, scaffold["prompt"], "a prompt", add_generation_prompt=True, **CHAT_TEMPLATE_KWARGS)
    if max_length < needed:
        raise UserError(f"max_length {max_length} cannot hold the chat template and instruction "
                        f"({needed - 16} tokens) plus a problem and an answer; use at least {needed}")  # fmt: skip


def load_tokenizer(model_args: ModelConfig) -> PreTrainedTokenizerBase:
    name = model_source(model_args)
    if looks_like_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise UserError(f"model path not found: {name}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision)
    except (OSError, ValueError) as err:
        raise UserError(
            f"could not load '{name}' ({type(err).__name__}); if the Hugging Face Hub is unreachable, "
            "download the model and pass --model_name_or_path /local/path"
        ) from err
    if tokenizer.chat_template is None:
        raise UserError(f"the tokenizer of {name} has no chat template")
    return tokenizer


def trainable_token_ids(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> list[int]:
    """The vocabulary ids of ``lora_trainable_tokens``; a string that is not one token of the vocabulary is an error."""
    vocab = tokenizer.get_vocab()
    unknown = [token for token in tokens if token not in vocab]
    if unknown:
        raise UserError(f"lora_trainable_tokens: {', '.join(map(repr, unknown))} is not a single token of the "
                        "model's vocabulary (use special tokens such as '<|im_end|>')")  # fmt: skip
    return sorted({vocab[token] for token in tokens})


def trainable_token_targets(model: PreTrainedModel, token_ids: list[int]) -> dict[str, list[int]]:
    """PEFT's ``trainable_token_indices``: the rows of the input embedding and of the LM head. Full fine-tuning updates
    both; with tied weights (Qwen3-0.6B) PEFT trains the one shared row and ties the head's to it."""
    names = {id(module): name for name, module in model.named_modules()}
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    return {names[id(layer)].rsplit(".", 1)[-1]: list(token_ids) for layer in layers if layer is not None}


def expose_head_bias(model: torch.nn.Module) -> None:
    """TRL's fused LM-head loss reads ``lm_head.bias``; PEFT's trainable-token wrapper of the head forwards only
    ``weight`` (its merged rows), so give it the wrapped head's bias (None for Qwen3)."""
    from peft.utils.other import TrainableTokensWrapper

    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    if isinstance(head, TrainableTokensWrapper) and "bias" not in vars(head):
        object.__setattr__(head, "bias", head.token_adapter.base_layer.bias)  # a plain attribute, not a parameter


def load_model(model_args: ModelConfig) -> PreTrainedModel:
    from mathsft.kernels import attention_to_load, use_attention

    # fp32 master weights by default: pure-bf16 AdamW at lr ~1e-5 rounds most updates away.
    dtype = model_args.dtype or "float32"
    dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_source(model_args),
            revision=model_args.model_revision,
            dtype=dtype,
            attn_implementation=attention_to_load(model_args.attn_implementation),
        )
        use_attention(model, model_args.attn_implementation)  # the project's own kernels, e.g. packed varlen
        return model
    except Exception as err:  # missing, truncated or corrupt weights surface as OSError, ValueError, SafetensorError
        if is_unreadable_weights(err):
            raise weights_error(err, "model", model_source(model_args)) from err
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(f"could not load model weights from '{model_args.model_name_or_path}': "
                        f"{type(err).__name__}: {first_line}") from err  # fmt: skip


@contextlib.contextmanager
def saving(path: Path, consequence: str) -> Iterator[None]:
    """A save that fails part-way (a full disk, a file size limit) is one line naming ``path`` and what it means for
    the run, not a traceback. torch.save reports a failed write as a RuntimeError from its zip writer, safetensors as
    its own error type."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip().splitlines()[0][:200]
        free = shutil.disk_usage(path.parent if path.parent.exists() else ".").free
        hint = "; no space left on the device" if free < artifacts.MIN_FREE_BYTES else ""
        raise UserError(f"could not save {path}: {type(err).__name__}: {reason}{hint}; {consequence}") from err


RESUME_TO_FINISH = "free space, then finish with the same command plus --resume_from_checkpoint true"


class MathSFTTrainer(SFTTrainer):
    """SFTTrainer whose optimizer comes from ``mathsft.optimizers`` (AdamW or SGD, no decay on norms/biases)."""

    token_counter: TokenCounter | None = None
    interrupt_callback: GracefulInterruptCallback
    divergence: DivergenceGuard | None = None
    identity: dict[str, Any] | None = None  # marks each saved checkpoint as complete (mathsft.run_dir)
    method: Method | None = None  # set by build_trainer; else derived from the model (a PEFT model is LoRA)
    lora_trainable_token_ids: list[int] = []  # noqa: RUF012  # replaced per trainer by build_trainer

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        num_tokens = inputs.pop(NUM_TOKENS_KEY, None)
        if num_tokens is not None and self.token_counter is not None:
            self.token_counter.tokens += int(num_tokens)
        loss = super().training_step(model, inputs, *args, **kwargs)
        if self.divergence is not None:
            self.divergence.observe(loss)
        return loss

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        folder = Path(self._get_output_dir(trial=trial)) / f"{artifacts.CHECKPOINT_PREFIX}{self.state.global_step}"
        # Saving over an older checkpoint of this step (a resumed run): until the new marker, it is not complete.
        (folder / artifacts.CHECKPOINT_MARKER).unlink(missing_ok=True)
        with saving(folder, "that checkpoint is incomplete and will never be resumed"):
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank's shards are written before the marker lists them
        if self.identity is not None and self.args.should_save:  # written last: the checkpoint is now complete
            from mathsft.run_dir import mark_checkpoint_complete

            mark_checkpoint_complete(folder, self.identity, self.state.global_step)

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any):
        inputs.pop(NUM_TOKENS_KEY, None)  # validation batches are not training tokens
        return super().prediction_step(model, inputs, *args, **kwargs)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        opt_model = cast(torch.nn.Module, self.model if model is None else model)
        if self.optimizer is None:
            args = cast(MathSFTConfig, self.args)
            method = self.method or method_for(args.optimizer, hasattr(opt_model, "peft_config"))
            self.optimizer = build_optimizer(opt_model, args, method)
            trainable = {id(p) for p in opt_model.parameters() if p.requires_grad}
            # For LoRA this proves the optimizer holds exactly the adapter parameters, nothing of the frozen base.
            if optimizer_parameter_ids(self.optimizer) != trainable:
                raise RuntimeError("the optimizer does not hold exactly the trainable parameters")
        return self.optimizer

    def optimizer_layout(self) -> dict[str, Any]:
        """What the optimizer steps on, as this rank sees it (call after training has prepared it).

        Under FSDP2 the optimizer is built over full parameters and accelerate then swaps each one for its DTensor
        shard, so only the prepared optimizer shows whether it holds the model's own sharded parameters.
        """
        if self.optimizer is None:
            return {}
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        sharded = [p for p in params if is_dtensor(p)]
        trainable = {id(p) for p in cast(torch.nn.Module, self.model).parameters() if p.requires_grad}
        return {
            "tensors": len(params),
            "sharded_tensors": len(sharded),
            "local_elements": sum(p.to_local().numel() if is_dtensor(p) else p.numel() for p in params),
            "total_elements": sum(p.numel() for p in params),  # a DTensor's numel is its global size
            "holds_model_parameters": optimizer_parameter_ids(self.optimizer) == trainable,
        }


def is_dtensor(tensor: torch.Tensor) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of the model's linear modules (``q_proj``, ..., ``lm_head``): what LoRA can target."""
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    return sorted({name.rsplit(".", 1)[-1] for name in linear})


def lora_targets(model: torch.nn.Module, targets: Any) -> Any:
    """The LoRA target modules, checked against the model: every name must match a module (PEFT would fail with a
    traceback when none does, and silently skip a misspelt one when another matches).

    PEFT matches a list by module-name suffix and a single string as a regular expression over the full name; TRL
    turns a one-element list into a string, so a plain name (``q_proj``) is given back to PEFT as a one-name list.
    ``all-linear`` is left to PEFT."""
    if targets is None or (isinstance(targets, str) and targets.lower() == "all-linear"):
        return targets
    names = [name for name, _ in model.named_modules() if name]
    linear = ", ".join(linear_module_names(model)[:8])
    if isinstance(targets, str) and not re.fullmatch(r"[\w.]+", targets):
        try:
            matched = any(re.fullmatch(targets, name) for name in names)
        except re.error as err:
            raise UserError(f"lora_target_modules {targets!r} is not a valid regular expression ({err})") from err
        if not matched:
            raise UserError(f"lora_target_modules {targets!r} matches no module of the model; its linear modules "
                            f"are: {linear}")  # fmt: skip
        return targets
    wanted = [targets] if isinstance(targets, str) else [str(t) for t in targets]
    unmatched = sorted(t for t in wanted if not any(name == t or name.endswith(f".{t}") for name in names))
    if unmatched:
        listed = ", ".join(repr(t) for t in unmatched[:5])
        raise UserError(f"lora_target_modules {listed} match{'es' if len(unmatched) == 1 else ''} no module of the "
                        f"model; its linear modules are: {linear}")  # fmt: skip
    return wanted if isinstance(targets, str) else targets


def build_trainer(
    data_args: DataArguments, training_args: MathSFTConfig, model_args: ModelConfig
) -> tuple[MathSFTTrainer, PreparedData, PerfCallback]:
    if model_args.use_peft and model_args.lora_target_modules is None:
        model_args.lora_target_modules = list(ALL_LINEAR_PROJECTIONS)
    tokenizer = load_tokenizer(model_args)
    token_ids = trainable_token_ids(tokenizer, training_args.lora_trainable_tokens)
    data = prepare_datasets(data_args, training_args, tokenizer)
    model = load_model(model_args)
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        lora = cast(Any, peft_config)  # get_peft_config builds a LoraConfig
        lora.target_modules = lora_targets(model, lora.target_modules)
        if token_ids:  # the end-of-turn row LoRA on linear layers cannot reach
            lora.trainable_token_indices = trainable_token_targets(model, token_ids)

    output_dir = output_path(training_args)
    interrupt = GracefulInterruptCallback()
    try:
        trainer = MathSFTTrainer(
            model=model,
            args=training_args,
            train_dataset=data.train,
            eval_dataset=data.validation,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[interrupt],
        )
    except jinja2.TemplateError as err:  # TRL renders every prompt again to tokenize it
        raise chat_template_error(tokenizer, err, "a training example") from err
    trainer.lora_trainable_token_ids = token_ids
    expose_head_bias(cast(torch.nn.Module, trainer.model))
    if training_args.packing and not uses_varlen_flash_attention(model_args.attn_implementation):
        multiple = cast(int | None, training_args.pad_to_multiple_of)
        trainer.data_collator = PackedRowsCollator(tokenizer.pad_token_id, multiple)
    token_counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = trainer.token_counter = token_counter
    log_dir = output_dir / artifacts.TENSORBOARD_DIR
    perf = PerfCallback(log_dir, output_dir / artifacts.PERF_EPOCHS, token_counter)
    trainer.add_callback(perf)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):  # one log dir per run: train/*, eval/* and perf/* together
            callback.logging_dir = str(log_dir)
    trainer.interrupt_callback = interrupt
    trainer.divergence = DivergenceGuard()
    trainer.add_callback(trainer.divergence)
    trainer.add_callback(StepZeroEvaluation(trainer.evaluate))
    trainer.method = method_for(training_args.optimizer, model_args.use_peft)
    return trainer, data, perf


# Settings every run records, whatever its method; each method adds the hyperparameters it owns (mathsft.methods).
SHARED_HYPERPARAMETERS = (
    "lr_scheduler_type", "warmup_steps", "max_grad_norm", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "bf16", "fp16",
    "activation_checkpointing", "packing", "padding_free", "seed",
)  # fmt: skip


def _plain(value: Any) -> Any:
    """Enums (``SchedulerType.COSINE``) as their plain value, so the summary says ``cosine``."""
    return getattr(value, "value", value)


def run_hyperparameters(training_args: MathSFTConfig, model_args: ModelConfig, method: Method) -> dict[str, Any]:
    """The resolved hyperparameters of a run: the shared settings plus the ones its method owns."""
    sources = (training_args, model_args)
    owned = {key: _plain(getattr(next(s for s in sources if hasattr(s, key)), key)) for key in method.owned_keys()}
    world_size = training_args.world_size
    return {
        "model_name_or_path": model_args.model_name_or_path,
        "dtype": model_args.dtype or "float32",
        "method": method.name,
        "optimizer": training_args.optimizer,
        **owned,
        **{key: _plain(getattr(training_args, key)) for key in SHARED_HYPERPARAMETERS},
        "world_size": world_size,
        "effective_batch_size": training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * world_size,
        "use_peft": bool(model_args.use_peft),
    }


def build_run_summary(
    trainer: MathSFTTrainer,
    data: PreparedData,
    perf: PerfCallback,
    data_args: DataArguments,
    training_args: MathSFTConfig,
    model_args: ModelConfig,
    total_time_s: float,
    interrupted: bool,
    eval_precision: artifacts.EvalPrecision | None = None,
) -> artifacts.RunSummary:
    divergence = trainer.divergence
    trainable, total = count_parameters(cast(torch.nn.Module, trainer.model))
    train_loss, eval_loss = loss_curves(trainer.state.log_history)
    method = method_for(training_args.optimizer, model_args.use_peft)
    hyperparameters = run_hyperparameters(training_args, model_args, method)
    return {
        "method": method.name,
        "hyperparameters": hyperparameters,
        "data": dataclasses.asdict(data_args) | {"num_train": len(data.train), "num_validation": len(data.validation)},
        "trainable_params": trainable,
        "total_params": total,
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "epochs": cast(list[artifacts.EpochRecord], perf.epochs),
        "memory_kind": perf.memory_kind,
        "total_time_s": round(total_time_s, 3),
        "global_step": trainer.state.global_step,
        "device_name": device_name(),
        "num_processes": training_args.world_size,
        "versions": library_versions(),
        "dropped_examples": data.dropped_train + data.dropped_validation,
        "dropped_train_examples": data.dropped_train,
        "dropped_validation_examples": data.dropped_validation,
        "interrupted": interrupted,
        "diverged": bool(divergence and divergence.step is not None),
        "diverged_step": divergence.step if divergence else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lora_trainable_tokens": list(training_args.lora_trainable_tokens) if method.peft else [],
        "lora_trainable_token_ids": list(trainer.lora_trainable_token_ids) if method.peft else [],
        "eval_precision": eval_precision,
    }


def run_training(
    data_args: DataArguments, training_args: MathSFTConfig, model_args: ModelConfig
) -> artifacts.RunSummary | None:
    """Train, save the model (or adapter) and write ``run_summary.json``; returns the summary.

    None when the output folder already holds this very run, finished. Exits through ``DivergedError`` (exit 3) when
    the loss stops being finite and ``KeyboardInterrupt`` (exit 130) after a Ctrl-C, each after writing the summary.
    """
    from mathsft.run_dir import RunAlreadyComplete, training_identity

    output_dir = output_path(training_args)
    artifacts.check_writable_dir(output_dir, "output_dir")
    is_main = training_args.process_index == 0
    identity = training_identity(data_args, training_args, model_args)
    try:
        with exclusive_output(output_dir, "training run") if is_main else contextlib.nullcontext():
            return _train(data_args, training_args, model_args, output_dir, identity)
    except RunAlreadyComplete:
        print(f"{output_dir} already holds this run, finished (run_summary.json); nothing to do. "
              "Pass --overwrite true to train it again.", flush=True)  # fmt: skip
        return None
    except OSError as err:  # a full disk or a folder that cannot be written, mid-run
        raise UserError(f"could not write to {err.filename or output_dir}: {err.strerror or err}") from err


def _train(
    data_args: DataArguments,
    training_args: MathSFTConfig,
    model_args: ModelConfig,
    output_dir: Path,
    identity: dict[str, Any],
) -> artifacts.RunSummary:
    from mathsft.run_dir import apply_output_plan, plan_output_dir

    start = time.perf_counter()
    plan = plan_output_dir(output_dir, identity, training_args.overwrite, training_args.resume_from_checkpoint)
    if plan.checkpoint is not None:  # before any work: a checkpoint of pickles or damaged files is one line
        check_tensor_files(plan.checkpoint, "checkpoint")
    trainer, data, perf = build_trainer(data_args, training_args, model_args)
    trainer.identity = identity
    if trainer.is_world_process_zero():
        apply_output_plan(plan)
        artifacts.write_json_atomic(output_dir / artifacts.VALIDATION_IDS, data.validation_ids)
    trainable, total = count_parameters(cast(torch.nn.Module, trainer.model))
    method = trainer.method.name if trainer.method else "?"
    logger.info("method=%s trainable params: %s / %s (%.2f%%)", method, f"{trainable:,}", f"{total:,}",
                100.0 * trainable / total)  # fmt: skip
    trainer.train(resume_from_checkpoint=plan.checkpoint)
    interrupted = trainer.interrupt_callback.interrupted
    diverged = trainer.divergence is not None and trainer.divergence.step is not None
    logger.info("optimizer parameters on this rank: %s", json.dumps(trainer.optimizer_layout()))
    if not (interrupted or diverged):  # a half-trained or NaN model is never saved as the final one
        with saving(output_dir / "model.safetensors", RESUME_TO_FINISH):
            trainer.save_model(str(output_dir))
    precision = None
    if trainer.is_world_process_zero() and not (interrupted or diverged):
        precision = cast(artifacts.EvalPrecision | None, measure_update_survival(
            cast(torch.nn.Module, trainer.model), model_args.model_name_or_path, bool(model_args.use_peft)))
        logger.info("eval precision (share of the update that survives the cast): %s", json.dumps(precision))
    summary = build_run_summary(
        trainer, data, perf, data_args, training_args, model_args, time.perf_counter() - start, interrupted, precision
    )
    if trainer.is_world_process_zero():
        with saving(output_dir / artifacts.TRAINER_STATE, RESUME_TO_FINISH):
            trainer.save_state()
        artifacts.write_json_atomic(output_dir / artifacts.RUN_SUMMARY, summary)
    _finish_message(trainer, output_dir, interrupted)
    return summary


def _finish_message(trainer: MathSFTTrainer, output_dir: Path, interrupted: bool) -> None:
    """Say how the run ended; a divergence or an interrupt leaves through its exit code."""
    divergence = trainer.divergence
    if divergence is not None and divergence.step is not None:
        from mathsft.run_dir import last_complete_checkpoint

        last = last_complete_checkpoint(output_dir, trainer.identity) if trainer.identity else None
        kept = f"the last finite checkpoint is {last}" if last else "no checkpoint was saved before it"
        raise DivergedError(f"training diverged at step {divergence.step}: the {divergence.what} is not finite; "
                            f"the model was not saved, {kept}; try a lower learning_rate")  # fmt: skip
    if interrupted:
        print(f"interrupted: checkpoint saved in {output_dir}; resume with the same command plus "
              "--resume_from_checkpoint true", file=sys.stderr, flush=True)  # fmt: skip
        raise KeyboardInterrupt
    logger.info("saved the %s and run_summary.json to %s", "adapter" if trainer.method and trainer.method.peft
                else "model", output_dir)  # fmt: skip
