"""Run artifacts: the one home of every result file's name, schema, atomic writing, tolerant reading, and the rule
that picks a method's best run.

Training (``run_summary.json``), evaluation (``summary.json``, ``generations.jsonl``), the study (``stage_config.json``)
and the report all write and read through this module, so a file name or a key is spelled in one place and a crash
never leaves a half-written result:

- JSON, text and figures go to a temporary file in the same folder and are renamed into place (``os.replace`` is
  atomic on POSIX), so a reader sees the old file or the new one, never a mix;
- JSONL results are appended one flushed, fsync'd write per batch, and a torn last line is cut off on resume.

The summaries' schemas are ``TypedDict``s: the writers build them, the readers and the report index them, and mypy
rejects a key that the schema lacks, so a renamed key fails the type check instead of printing "—".
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypedDict, cast, get_args, get_origin, get_type_hints

from mathsft.errors import UserError

# ---- file names --------------------------------------------------------------------------------------------------

# A training run's output_dir (also run_identity.json and mathsft_checkpoint.json: mathsft.identity, mathsft.run_dir)
RUN_SUMMARY = "run_summary.json"
VALIDATION_IDS = "validation_ids.json"
PERF_EPOCHS = "perf_epochs.jsonl"
TENSORBOARD_DIR = "tensorboard"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MARKER = "mathsft_checkpoint.json"  # written last into a checkpoint: it is complete (mathsft.run_dir)
# An evaluation's output folder
EVAL_CONFIG = "eval_config.json"
GENERATIONS = "generations.jsonl"
EVAL_SUMMARY = "summary.json"
# A study folder and each of its stage folders
STUDY_CONFIG = "study_config.json"
STAGE_CONFIG = "stage_config.json"
STAGE_LOG = "stage.log"
STUDY_TRAIN_DIR = "train"
STUDY_EVAL_DIR = "eval"
BASE_EVAL = "base"
# The report folder
REPORT_MD = "report.md"
RESOURCES_MD = "resources.md"
ACCURACY_MD = "accuracy.md"
PROBLEM_DIFF = "problem_diff.jsonl"
FIGURES_JSON = "figures.json"
LOSS_TRAIN_PNG = "loss_train.png"
LOSS_VAL_PNG = "loss_val.png"
LR_SENSITIVITY_PNG = "lr_sensitivity.png"
ACCURACY_BY_STEP_PNG = "accuracy_by_step.png"


# ---- schemas -----------------------------------------------------------------------------------------------------


class EpochRecord(TypedDict, total=False):
    """One epoch of ``run_summary.json["epochs"]`` (also a line of ``perf_epochs.jsonl``)."""

    epoch: float
    complete: bool
    resumed_mid_epoch: bool
    global_step: int
    wall_time_s: float
    tokens: int
    tokens_per_s: float | None
    peak_memory_allocated_gib: float | None
    peak_memory_reserved_gib: float | None
    peak_rss_gib: float


class EvalPrecision(TypedDict):
    """Share of the fine-tuning update that survives the cast to the evaluation dtype (``mathsft.precision``)."""

    dtype: str
    overall: float | None
    by_kind: dict[str, float]  # attention, mlp, embedding, norm, lm_head, other: only kinds that changed
    base_exact: bool  # the base weights are representable in dtype (Qwen3's bf16 checkpoint): overall is in [0, ~1]
    rounding_error: float | None  # ||kept - update|| / ||update||: ~0 survives, ~1 rounds away, > 1 cast noise


class _RunSummaryKeys(TypedDict):
    """The keys every ``run_summary.json`` has."""

    method: str
    hyperparameters: dict[str, Any]
    data: dict[str, Any]
    trainable_params: int
    total_params: int
    train_loss: list[list[Any]]  # [step, loss]; the loss is null where it was not finite
    eval_loss: list[list[Any]]
    epochs: list[EpochRecord]
    memory_kind: str
    total_time_s: float
    global_step: int
    device_name: str
    num_processes: int
    versions: dict[str, str]
    dropped_examples: int
    dropped_train_examples: int
    dropped_validation_examples: int
    interrupted: bool
    diverged: bool
    diverged_step: int | None
    finished_at: str


class RunSummary(_RunSummaryKeys, total=False):
    """``run_summary.json`` of a training run (written by ``mathsft.training``). Summaries written before these keys
    existed lack them: optional, so that those runs still read as valid (``NotRequired`` is not seen through
    ``from __future__ import annotations`` on Python 3.10/3.11)."""

    lora_trainable_tokens: list[str]  # [] without LoRA
    lora_trainable_token_ids: list[int]
    eval_precision: EvalPrecision | None  # None: not measured (interrupted, diverged, FSDP)


class GroupAccuracy(TypedDict, total=False):
    accuracy: float
    count: int
    accuracy_ci95: list[float]
    ci_method: str


class Scores(TypedDict):
    """What ``mathsft.scoring.summarize`` computes from graded rows (pass@k / maj@n keys too, when sampled)."""

    num_problems: int
    num_samples: int
    accuracy: float
    accuracy_ci95: list[float]  # 95% interval over problems: Wilson (one sample each) or bootstrap
    ci_method: str
    by_subject: dict[str, GroupAccuracy]
    by_level: dict[str, GroupAccuracy]
    no_box: int
    truncated: int
    grader_timeout: int
    grader_error: int
    grader: dict[str, str]  # the equivalence module and the versions of math-verify, latex2sympy2_extended, sympy


class EvalSummary(Scores):
    """``summary.json`` of an evaluation (written by ``mathsft.evaluation``)."""

    model: str
    adapter: str | None
    dataset: str
    split: str
    generation: dict[str, Any]
    backend: str
    dtype: str
    device: str
    resumed_rows: int
    generated_rows: int
    wall_time_s: float
    generation_time_s: float
    generated_tokens: int
    generated_tokens_per_s: float | None


def schema_problems(data: Any, schema: type) -> list[str]:
    """What keeps ``data`` from matching a ``TypedDict`` schema: missing required keys and wrong top-level types."""
    if not isinstance(data, Mapping):
        return [f"expected a JSON object, got {type(data).__name__}"]
    hints = get_type_hints(schema)
    required = cast(frozenset, getattr(schema, "__required_keys__", frozenset(hints)))
    problems = [f"missing key '{key}'" for key in sorted(required) if key not in data]
    for key, value in data.items():
        if key in hints and not _matches(value, hints[key]):
            problems.append(f"'{key}' is {type(value).__name__}, expected {hints[key]}")
    return problems


def _matches(value: Any, hint: Any) -> bool:
    """A shallow type check of a JSON value against a type hint (containers by their outer type)."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin is None and hint is type(None):
        return value is None
    if origin is not None and origin not in (list, dict):  # a union such as float | None
        return any(_matches(value, option) for option in get_args(hint))
    if origin in (list, dict):
        return isinstance(value, origin)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and hasattr(hint, "__required_keys__"):  # a nested TypedDict
        return isinstance(value, dict)
    return isinstance(value, hint)


def value_problems(value: Any, hint: Any, where: str) -> list[str]:
    """Where a JSON value does not match a type hint, field by field (``eval_loss[2][1]``, ``by_level.5.count``):
    list items, dict values and nested ``TypedDict`` keys are checked too, not only the outer type."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return []
    if origin is not None and origin not in (list, dict):  # a union such as float | None
        return [] if any(not value_problems(value, option, where) for option in args) else [_wrong(value, hint, where)]
    if not _matches(value, hint):
        return [_wrong(value, hint, where)]
    if origin is list and args:
        return [p for i, item in enumerate(value) for p in value_problems(item, args[0], f"{where}[{i}]")]
    if origin is dict and len(args) == 2:
        return [p for key, item in value.items() for p in value_problems(item, args[1], f"{where}.{key}")]
    if isinstance(hint, type) and hasattr(hint, "__required_keys__"):
        fields = get_type_hints(hint)
        return [p for key, item in value.items() if key in fields
                for p in value_problems(item, fields[key], f"{where}.{key}")]  # fmt: skip
    return []


def _wrong(value: Any, hint: Any, where: str) -> str:
    shown = getattr(hint, "__name__", None) if get_origin(hint) is None else None
    return f"{where} is {type(value).__name__}, expected {shown or hint}"


# Typed beyond the schema: the loss curves' [step, loss] points, the hyperparameters the best-run pick and the report
# compute with, and the sampled keys (pass@k, maj@n) whose names depend on n.
_LOSS_POINT = "[step, loss] with a number step and a number or null loss"
_HYPERPARAMETER_TYPES: dict[str, Any] = {
    "learning_rate": float, "lora_r": int | None, "lora_alpha": float | None, "use_peft": bool | None,
    "model_name_or_path": str | None, "dtype": str | None, "per_device_train_batch_size": int,
    "gradient_accumulation_steps": int, "world_size": int, "effective_batch_size": int, "num_train_epochs": float,
    "max_steps": int, "adam_beta1": float, "adam_beta2": float, "sgd_momentum": float, "sgd_dampening": float,
    "sgd_nesterov": bool,
}  # fmt: skip


def _loss_curve_problems(curve: Any, where: str) -> list[str]:
    if not isinstance(curve, list):
        return []  # reported by the schema check
    for i, point in enumerate(curve):
        ok = isinstance(point, list) and len(point) == 2 and is_number(point[0])
        if not ok or not (point[1] is None or is_number(point[1])):
            return [f"{where}[{i}] is {json.dumps(point)[:40]}, expected {_LOSS_POINT}"]
    return []


def summary_problems(data: Any, schema: type) -> list[str]:
    """Every wrong type in a run or evaluation summary, field by field (missing keys are tolerated: an older or
    interrupted run may lack some, and readers use ``.get``)."""
    if not isinstance(data, Mapping):
        return [f"expected a JSON object, got {type(data).__name__}"]
    hints = get_type_hints(schema)
    problems = [p for key, value in data.items() if key in hints for p in value_problems(value, hints[key], key)]
    if schema is RunSummary:
        problems += [p for key in ("train_loss", "eval_loss") for p in _loss_curve_problems(data.get(key), key)]
        problems += _run_value_problems(data)
    if schema is EvalSummary:
        groups = [(key, data[key]) for key in ("by_subject", "by_level") if isinstance(data.get(key), dict)]
        problems += [f"{key}.{name} lacks '{field}'" for key, by_name in groups
                     for name, group in by_name.items() if isinstance(group, dict)
                     for field in ("accuracy", "count") if field not in group]  # fmt: skip
        problems += [p for key, value in data.items() if key.startswith(("pass@", "maj@"))
                     for p in value_problems(value, float | None, key)]  # fmt: skip
        interval = data.get("accuracy_ci95")
        if isinstance(interval, list) and len(interval) != 2:
            problems.append(f"accuracy_ci95 has {len(interval)} numbers, expected 2")
    return problems


def _run_value_problems(data: Mapping[str, Any]) -> list[str]:
    """The hyperparameters the best-run pick and the report compute with, and the values the memory model needs."""
    from mathsft.memory import dtype_bytes

    hyper = data.get("hyperparameters")
    if not isinstance(hyper, dict):
        return []
    problems = [p for key, hint in _HYPERPARAMETER_TYPES.items() if key in hyper
                for p in value_problems(hyper[key], hint, f"hyperparameters.{key}")]  # fmt: skip
    dtype = hyper.get("dtype")
    if not problems and isinstance(dtype, str) and dtype.lower() != "auto":
        try:
            dtype_bytes(dtype)
        except ValueError:
            problems.append(f"hyperparameters.dtype is '{dtype}', not a known dtype")
    trainable, total = data.get("trainable_params"), data.get("total_params")
    if isinstance(trainable, int) and isinstance(total, int) and not 0 <= trainable <= total:
        problems.append(f"trainable_params is {trainable}, expected 0 <= trainable_params <= total_params ({total})")
    return problems


def is_number(value: Any) -> bool:
    """A JSON number, not a bool (NaN and infinity included: a diverged loss)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A JSON number (not a bool) that is finite: the test for losses, rates and timeouts read from files or flags."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---- reading -----------------------------------------------------------------------------------------------------


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is missing, unreadable or not an object (a crash mid-write)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


def read_checked(path: Path, schema: type) -> Any:
    """A summary file checked against its schema: None when missing or unreadable (a crash mid-write), and a
    :class:`UserError` ``corrupt: <file>: <field> ...`` when it parses but holds a value of the wrong type, so no
    reader computes with it (a traceback, or a wrong best run)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # missing, or torn by a crash mid-write: not there yet
        return None
    problems = summary_problems(data, schema)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"corrupt: {path}: {problems[0]}{more}")
    return data


def read_run_summary(run_dir: str | os.PathLike) -> RunSummary | None:
    """A run's ``run_summary.json`` (None when missing or unreadable; wrong types are a ``corrupt:`` error)."""
    return cast(RunSummary | None, read_checked(Path(run_dir) / RUN_SUMMARY, RunSummary))


def read_eval_summary(eval_dir: str | os.PathLike) -> EvalSummary | None:
    """An evaluation's ``summary.json`` (None when missing or unreadable; wrong types are a ``corrupt:`` error)."""
    return cast(EvalSummary | None, read_checked(Path(eval_dir) / EVAL_SUMMARY, EvalSummary))


def read_jsonl_rows(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file. With ``repair``, a half-written last line (a crash mid-write) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is an incomplete line
    if end < len(data):
        if not repair:
            raise UserError(f"{path} ends with an incomplete line")
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        data = data[:end]
    return [parse_jsonl_line(raw, path, number) for number, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]


def parse_jsonl_line(raw: bytes, path: str | os.PathLike, number: int) -> dict[str, Any]:
    """One JSONL line as a JSON object; anything else is one line naming the file and the line number."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{path} line {number} is not UTF-8 text") from err
    except json.JSONDecodeError as err:
        raise UserError(f"{path} line {number} is not valid JSON ({err.msg})") from err
    except RecursionError as err:  # e.g. 100,000 nested brackets: the parser recurses per level
        raise UserError(f"{path} line {number} nests JSON too deeply to read") from err
    if not isinstance(row, dict):
        raise UserError(f"{path} line {number} is a JSON {type(row).__name__}, not an object")
    return row


def jsonl_line(row: dict[str, Any]) -> str:
    """One JSONL line; text that UTF-8 cannot encode (a lone surrogate) is written as a JSON escape instead."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row, ensure_ascii=True)
    return text + "\n"


# ---- writable outputs --------------------------------------------------------------------------------------------

MIN_FREE_BYTES = 1 << 20


def check_writable_dir(path: str | os.PathLike, what: str = "output folder") -> None:
    """Fail in one line, before any work, when ``path`` cannot become a writable folder: a file in the way, no
    permission, or no space left. Writes nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create {what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what} {path}: permission denied on {existing}")
    if shutil.disk_usage(existing).free < MIN_FREE_BYTES:
        raise UserError(f"cannot write {what} {path}: no space left on the device holding {existing}")


# ---- atomic writing ----------------------------------------------------------------------------------------------


def _unwritable(path: Path, err: OSError) -> UserError:
    """One line naming the file and the reason (no space left, file too large, permission denied, ...)."""
    return UserError(f"could not write {path}: {err.strerror or err}")


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the old file's, or 0o666 less the umask (mkstemp uses 0o600)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on failure removed.

    A write that fails (no space left, a file size limit, permissions) is one line naming the file; the old file is
    untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"could not write {path}: it is a folder, not a file")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise _unwritable(path, err) from err
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are shared like any file the user writes
    try:
        yield tmp
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except OSError as err:
        raise _unwritable(path, err) from err
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary file and a rename, fsync'd so a power loss keeps old or new."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON (indented, UTF-8) atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def save_atomic(path: str | os.PathLike, save: Callable[[Path], None]) -> None:
    """Let ``save`` write a temporary file (e.g. ``figure.savefig``), then rename it into place."""
    with atomic_path(path) as tmp:
        save(tmp)


class JsonlAppender:
    """Append rows to a JSONL file; each ``write`` is one flushed and fsync'd write call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise _unwritable(path, err) from err

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        # One write call per batch: a crash leaves at most one partial line, which resume cuts off.
        try:
            self._file.write("".join(jsonl_line(row) for row in rows))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as err:
            raise _unwritable(self.path, err) from err

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # the failed write has been reported; closing flushes nothing new
            pass

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- checkpoints -------------------------------------------------------------------------------------------------


def checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Every ``checkpoint-N`` folder of a run, oldest first."""
    found = []
    for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name.removeprefix(CHECKPOINT_PREFIX)
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)


# ---- run names ---------------------------------------------------------------------------------------------------


def format_lr(lr: float) -> str:
    """Short, exact learning-rate text for run names and tables: 0.3, 0.05, 3e-3, 1.5e-5."""
    if lr >= 1e-2:
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def run_name(method: str, learning_rate: float, lora_r: int | None = None, seed: int | None = None) -> str:
    """A study's training-run folder name: ``sgd-lr0.1``, ``lora-lr2e-4-r8``, ``adamw-lr1e-5-seed2`` (with seeds)."""
    name = f"{method}-lr{format_lr(learning_rate)}"
    if lora_r is not None:
        name += f"-r{lora_r}"
    return f"{name}-seed{seed}" if seed is not None else name


# ---- the best run ------------------------------------------------------------------------------------------------

BEST_RULE = (
    "For each method, the best run is the one with the lowest *final* validation loss (the last `eval_loss` entry "
    "of its `run_summary.json`, measured at the end of training). Interrupted runs and runs whose final validation "
    "loss is missing or not finite (diverged) are not eligible; ties go to the smaller learning rate. Only the best "
    "run of each method is evaluated on the benchmark. With several seeds, a learning rate (grid point) is scored by "
    "the mean final validation loss over its seeds, and is eligible only if every seed finished with a finite one; "
    "the runs of the best grid point, one per seed, are evaluated."
)


def final_val_loss(summary: RunSummary | None) -> float | None:
    """The last validation loss of a run summary, or None when missing or not finite."""
    if not summary or not summary.get("eval_loss") or summary.get("diverged"):
        return None
    value = summary["eval_loss"][-1][1]
    return float(value) if value is not None and math.isfinite(float(value)) else None


def select_best(candidates: Sequence[tuple[str, RunSummary | None]]) -> str | None:
    """Name of the best run among ``(name, run_summary)`` pairs (see ``BEST_RULE``), None if none is eligible."""
    eligible = []
    for name, summary in candidates:
        loss = final_val_loss(summary)
        if summary is None or summary.get("interrupted") or loss is None:
            continue
        hyper = summary.get("hyperparameters", {})
        eligible.append((loss, hyper.get("learning_rate") or 0.0, hyper.get("lora_r") or 0, name))
    return min(eligible)[3] if eligible else None


# A grid point of a method's search: (learning rate, LoRA rank or None). Its runs differ only by their seed. The
# report may add a third item to keep apart runs of one rate that are not seeds of one point (loose run folders).
GridPoint = tuple[Any, ...]


def grid_point_losses(runs: Iterable[tuple[GridPoint, RunSummary | None]]) -> dict[GridPoint, float | None]:
    """Each grid point's mean final validation loss over its runs (seeds); None when any of its runs is missing,
    interrupted or has no finite final validation loss, so a grid point is never scored on its lucky seeds only."""
    losses: dict[GridPoint, list[float | None]] = {}
    for point, summary in runs:
        loss = None if summary is None or summary.get("interrupted") else final_val_loss(summary)
        losses.setdefault(point, []).append(loss)
    return {
        point: None if any(v is None for v in values) else math.fsum(cast(list[float], values)) / len(values)
        for point, values in losses.items()
    }


def select_best_grid_point(runs: Iterable[tuple[GridPoint, RunSummary | None]]) -> GridPoint | None:
    """The best grid point of one method's ``(grid point, run_summary)`` pairs, one pair per run (seed): the lowest
    mean final validation loss among the eligible points (see ``grid_point_losses``); ties go to the smaller rate,
    then the smaller rank. None if no point is eligible. With one run per point this is :func:`select_best`'s pick.
    The study and the report both pick with this function, so they never disagree."""
    scored = [(loss, point[0], point[1] or 0, point) for point, loss in grid_point_losses(runs).items()]
    eligible = [entry for entry in scored if entry[0] is not None]
    return min(eligible, key=lambda entry: entry[:3])[3] if eligible else None


# ---- records of runs and evaluations, as the study and the report see them ---------------------------------------


@dataclass
class TrainRecord:
    """A training run folder; ``summary`` is its run_summary.json (None when missing)."""

    name: str
    path: Path
    summary: RunSummary | None
    method: str | None
    group: str = ""
    stage: dict[str, Any] | None = None  # the study's stage_config.json: the grid point of an unfinished run

    @property
    def hyper(self) -> dict[str, Any]:
        return self.summary["hyperparameters"] if self.summary and "hyperparameters" in self.summary else {}

    @property
    def learning_rate(self) -> float | None:
        return self.hyper.get("learning_rate", (self.stage or {}).get("learning_rate"))

    @property
    def lora_r(self) -> int | None:
        return self.hyper.get("lora_r", (self.stage or {}).get("lora_r"))

    @property
    def interrupted(self) -> bool:
        return bool(self.summary and self.summary.get("interrupted"))


@dataclass
class EvalRecord:
    """An evaluation folder; ``label`` is ``base``, a method, or the folder name; ``run`` the scored run."""

    label: str
    path: Path
    summary: EvalSummary | None
    run: str | None
    group: str = ""
    stage: dict[str, Any] | None = None  # the study's stage_config.json: method, seed and step it scored
