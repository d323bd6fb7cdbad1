"""TrainerCallbacks: per-epoch peak memory, wall time and token throughput to TensorBoard, and the run summary.

User callbacks run after the trainer's TensorBoard callback, so the perf scalars are written with our own
``SummaryWriter`` into the same log directory, under ``perf/*`` tags beside ``train/loss`` and ``eval/loss``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from mathsft.artifacts import JsonlAppender, write_text_atomic

GIB = 1024**3


def _max_over_ranks(values: list[float]) -> list[float]:
    """Element-wise maximum over data-parallel ranks (identity outside distributed runs)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tensor.tolist()


def _sum_over_ranks(value: float) -> float:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return float(tensor.item())


def peak_rss_gib() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GIB if sys.platform == "darwin" else peak * 1024 / GIB


NUM_TOKENS_KEY = "num_real_tokens"


class TokenCounter:
    """Counts non-padding training tokens in the main process.

    The collator may run in dataloader worker processes, whose counters the main process never sees, so the wrapped
    collator only tags each batch with its real-token count; the trainer pops the tag in ``training_step`` and adds it
    here (evaluation batches are popped and not counted).
    """

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.tokens = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        # Examples are unpadded (packed rows are plain concatenations), so their lengths are the real tokens.
        batch[NUM_TOKENS_KEY] = torch.tensor(sum(len(example["input_ids"]) for example in examples))
        return batch


class PerfCallback(TrainerCallback):
    """Records, per epoch and for the run: peak memory (CUDA allocated/reserved, or CPU peak RSS), wall time
    (evaluation time excluded) and training tokens per second; also asks for an evaluation at each epoch end."""

    def __init__(
        self, log_dir: str | os.PathLike, epochs_path: str | os.PathLike, token_counter: TokenCounter | None = None
    ) -> None:
        self.log_dir = str(log_dir)
        # Epoch records are appended to a file so that a resumed run keeps the epochs measured before the crash.
        self.epochs_path = Path(epochs_path)
        self.token_counter = token_counter
        self.epochs: list[dict[str, Any]] = []
        self.memory_kind = "cuda" if torch.cuda.is_available() else "cpu_peak_rss"
        self._resumed_mid_epoch = False
        self._writer = None
        self._epoch_start = 0.0
        self._eval_time = 0.0
        self._tokens_start = 0
        self.train_start = 0.0
        self.train_time_s = 0.0

    def _tb(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def _tokens(self) -> int:
        return self.token_counter.tokens if self.token_counter is not None else 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.train_start = time.perf_counter()
        previous = []
        if state.global_step > 0 and self.epochs_path.exists():  # resuming: keep what the checkpoint covers
            lines = self.epochs_path.read_text().splitlines()
            records = (json.loads(x) for x in lines if x.strip())
            # Whole epochs the checkpoint covers; a partial epoch (stopped mid-way) is measured again from here.
            previous = [r for r in records if r.get("complete", True) and r["global_step"] <= state.global_step]
        self._resumed_mid_epoch = state.global_step > 0 and state.epoch is not None and state.epoch % 1 != 0
        self.epochs = previous
        if state.is_world_process_zero:
            self.epochs_path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.epochs_path, "".join(json.dumps(r) + "\n" for r in previous))

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._epoch_start = time.perf_counter()
        self._eval_time = 0.0
        self._tokens_start = self._tokens()

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics=None, **kw):
        self._eval_time += float((metrics or {}).get("eval_runtime", 0.0))

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            memory = [torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB]
        else:
            memory = [peak_rss_gib(), peak_rss_gib()]
        wall = time.perf_counter() - self._epoch_start - self._eval_time
        memory_max = _max_over_ranks(memory + [wall])
        tokens = _sum_over_ranks(float(self._tokens() - self._tokens_start))
        wall = memory_max[2]
        epoch = round(state.epoch or 0.0, 4)
        record: dict[str, Any] = {
            "epoch": epoch,
            # False when the run was stopped mid-epoch; True-but-resumed epochs measured only the part after resuming.
            "complete": abs(epoch - round(epoch)) < 1e-3,
            "resumed_mid_epoch": self._resumed_mid_epoch,
            "global_step": state.global_step,
            "wall_time_s": round(wall, 3),
            "tokens": int(tokens),
            "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
        }
        if self.memory_kind == "cuda":
            record["peak_memory_allocated_gib"] = round(memory_max[0], 4)
            record["peak_memory_reserved_gib"] = round(memory_max[1], 4)
        else:
            record["peak_memory_allocated_gib"] = None
            record["peak_memory_reserved_gib"] = None
            record["peak_rss_gib"] = round(memory_max[0], 4)
        self.epochs.append(record)
        self._resumed_mid_epoch = False
        if state.is_world_process_zero:
            with JsonlAppender(self.epochs_path) as appender:
                appender.write([record])
            writer = self._tb()
            step = state.global_step
            if self.memory_kind == "cuda":
                writer.add_scalar("perf/peak_memory_allocated_gib", record["peak_memory_allocated_gib"], step)
                writer.add_scalar("perf/peak_memory_reserved_gib", record["peak_memory_reserved_gib"], step)
            else:
                writer.add_scalar("perf/peak_rss_gib", record["peak_rss_gib"], step)
            writer.add_scalar("perf/epoch_time_s", record["wall_time_s"], step)
            if record["tokens_per_s"] is not None:
                writer.add_scalar("perf/tokens_per_s", record["tokens_per_s"], step)
            writer.flush()
        # Validation loss at every epoch end, on top of every eval_steps (unless this step was just evaluated).
        evaluated_here = any("eval_loss" in e and e.get("step") == state.global_step for e in state.log_history)
        if args.eval_strategy != "no" and not evaluated_here:
            control.should_evaluate = True
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.train_time_s = time.perf_counter() - self.train_start
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class GracefulInterruptCallback(TrainerCallback):
    """First Ctrl-C (or SIGTERM): finish the current step, save a checkpoint and stop cleanly. Second: stop at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not in the main thread
                pass

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


def loss_curves(log_history: list[dict[str, Any]]) -> tuple[list[list[Any]], list[list[Any]]]:
    """``[step, value]`` lists of training and validation loss from the trainer's log history."""
    def finite(value: Any) -> float | None:  # JSON has no NaN: a non-finite loss is recorded as null
        return float(value) if math.isfinite(float(value)) else None

    train = [[e["step"], finite(e["loss"])] for e in log_history if "loss" in e and "step" in e]
    val = [[e["step"], finite(e["eval_loss"])] for e in log_history if "eval_loss" in e and "step" in e]
    return train, val


class DivergenceGuard(TrainerCallback):
    """Stops the run at the first optimizer step whose loss (or logged gradient norm) is not finite.

    The trainer reports each micro-batch loss to ``observe`` (no GPU sync there); ``on_step_end`` reads the flag once
    per optimizer step, agreed over ranks, and then stops without saving, so NaN weights never become a checkpoint.
    """

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None
        self.step: int | None = None
        self.what = ""

    def observe(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self._pending = bad if self._pending is None else self._pending | bad

    def _stop(self, state: TrainerState, control: TrainerControl, what: str) -> None:
        if self.step is None:
            self.step, self.what = state.global_step, what
        control.should_save = control.should_evaluate = control.should_log = False
        control.should_training_stop = True

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        pending, self._pending = self._pending, None
        flag = float(bool(pending)) if pending is not None else 0.0
        if _max_over_ranks([flag])[0] > 0:
            self._stop(state, control, "loss")
        return control

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.step is not None:  # no end-of-epoch evaluation or save of a diverged model
            control.should_save = control.should_evaluate = False
        return control

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, float | int) and not math.isfinite(value):
                self._stop(state, control, key.replace("_", " "))
        return control


class StepZeroEvaluation(TrainerCallback):
    """Measures the validation loss before the first step, so every method's curve starts at the same point."""

    def __init__(self, evaluate: Any) -> None:
        self._evaluate = evaluate  # the trainer's evaluate method

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step == 0 and args.eval_strategy != "no":
            self._evaluate()
        return control
