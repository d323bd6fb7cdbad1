"""What a training run, an evaluation and a study stage own in their folder: the only files the project ever removes.

Each writer writes its record first and its results after it, so a file counts as ours only beside the record of the
writer that wrote it:

- a training run (``train``): ``run_identity.json``, ``run_summary.json``, ``validation_ids.json`` and
  ``perf_epochs.jsonl`` (names only mathsft writes); beside the identity or the summary ``trainer_state.json``,
  ``training_args.bin``, the saved model or adapter (``config.json``,
  ``generation_config.json``, ``model*.safetensors`` and its index, ``pytorch_model*.bin``, ``adapter_config.json``,
  ``adapter_model.*``, the tokenizer files, ``chat_template.jinja``, TRL's model card ``README.md``), ``tensorboard/``
  (event files only) and ``checkpoint-N/`` folders. A checkpoint that holds our completion marker is ours when it
  holds exactly the files the marker lists (also without ``run_identity.json``: copied checkpoints may be resumed);
  one without the marker (a save cut short) when it holds only files the trainer writes;
- an evaluation (``eval``): ``eval_config.json``; beside it ``generations.jsonl``, ``generations.rank*.jsonl`` and
  ``summary.json`` (a ``summary.json`` without ``eval_config.json`` is someone else's);
- a study stage (``stage``): ``stage_config.json``; beside it ``stage.log``;
- always: the one-writer lock ``.mathsft.lock`` and what an atomic write of one of these names left behind.

Everything else is foreign, and a folder holding anything foreign is refused with or without ``--overwrite``, naming
up to three entries. A symbolic link is never ours and never followed: a link inside the folder is foreign, and an
output folder that is itself a link is refused. ``check_output_location`` refuses folders that must never be a run's
output at all: the model or data being read, a git checkout, a folder above the checkout or the current folder, and a
folder holding other runs.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mathsft import artifacts
from mathsft.errors import UserError
from mathsft.identity import IDENTITY_FILE, LOCK_FILE
from mathsft.shards import SHARD_PATTERN

TRAIN, EVAL, STAGE = "train", "eval", "stage"
# A training run's or an evaluation's folder may also be a study stage's.
TRAINING_FOLDER = (TRAIN, STAGE)
EVALUATION_FOLDER = (EVAL, STAGE)
KEPT_ON_OVERWRITE = (artifacts.STAGE_CONFIG, artifacts.STAGE_LOG)  # the study's record and log of the stage
# The record each writer writes first: its other files are ours only beside it.
RECORDS = {TRAIN: IDENTITY_FILE, EVAL: artifacts.EVAL_CONFIG, STAGE: artifacts.STAGE_CONFIG}
# Model, adapter and tokenizer files that save_pretrained writes (transformers, PEFT, tokenizers).
MODEL_FILES = frozenset({
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
    "pytorch_model.bin.index.json", "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
})  # fmt: skip
MODEL_PATTERNS = ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")
MODEL_CARD = "README.md"  # ours only when it is the card TRL writes (see _is_model_card)
TRAINING_ARGS = "training_args.bin"
# Names only mathsft writes: ours wherever they are (a run_summary.json also records a run, as older runs did).
_BY_NAME = {TRAIN: frozenset({artifacts.RUN_SUMMARY, artifacts.VALIDATION_IDS, artifacts.PERF_EPOCHS})}
_ALSO_RECORDS = {TRAIN: (artifacts.RUN_SUMMARY,)}
# Names any Hugging Face folder may hold: ours only beside the record.
_FILES = {
    TRAIN: MODEL_FILES | {artifacts.TRAINER_STATE, TRAINING_ARGS},
    EVAL: frozenset({artifacts.GENERATIONS, artifacts.EVAL_SUMMARY}),
    STAGE: frozenset({artifacts.STAGE_LOG}),
}
_PATTERNS = {TRAIN: MODEL_PATTERNS, EVAL: (SHARD_PATTERN,), STAGE: ()}
# What the trainer writes into a checkpoint besides the model files (FSDP: pytorch_model_fsdp_N, optimizer_N folders).
CHECKPOINT_FILES = frozenset({"optimizer.pt", "scheduler.pt", "scaler.pt", artifacts.TRAINER_STATE, TRAINING_ARGS})
CHECKPOINT_PATTERNS = ("rng_state*.pth", "pytorch_model_fsdp*", "optimizer_*")
TENSORBOARD_EVENTS = "events.out.tfevents.*"
_ATOMIC_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")  # artifacts.atomic_path: .<name>.<random>.tmp
# Files that mark a folder as a run, an evaluation, a stage or a study of this project.
RUN_MARKERS = (artifacts.RUN_SUMMARY, IDENTITY_FILE, artifacts.EVAL_CONFIG, artifacts.EVAL_SUMMARY,
               artifacts.STAGE_CONFIG, artifacts.STUDY_CONFIG)  # fmt: skip
MAX_NAMED = 3
_MAX_SCANNED = 2000  # entries looked at when searching for other runs below a folder


@dataclass
class Inventory:
    """A folder's entries, split into what the writers of ``kinds`` own and what they do not."""

    directory: Path
    owned: list[Path] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # entry names, with why where the name alone is ours

    def removable(self, keep: Iterable[str] = ()) -> list[Path]:
        """The owned entries except ``keep`` and the lock (held by the running process)."""
        kept = {LOCK_FILE, *keep}
        return [path for path in self.owned if path.name not in kept]


def records(kind: str) -> tuple[str, ...]:
    """The files whose presence says that a writer of ``kind`` wrote into a folder."""
    return (RECORDS[kind], *_ALSO_RECORDS.get(kind, ()))


def _matches(name: str, names: Iterable[str], patterns: Iterable[str]) -> bool:
    return name in names or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _is_model_card(path: Path) -> bool:
    """TRL's model card (YAML front matter tagging ``trl``); a README of the user's is not ours."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith("---") and ("\n- trl\n" in head or "[TRL]" in head)


def _is_tensorboard_dir(path: Path) -> str | None:
    """None when ``path`` holds only TensorBoard event files (ours), else the first other entry."""
    for entry in os.scandir(path):
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            return entry.name
        if not fnmatch.fnmatchcase(entry.name, TENSORBOARD_EVENTS):
            return entry.name
    return None


def _links_below(path: Path) -> str | None:
    """The first symbolic link or special file below ``path`` (relative), or None."""
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in [*dirs, *files]:
            mode = os.lstat(os.path.join(root, name)).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return os.path.relpath(os.path.join(root, name), path)
    return None


def _checkpoint_problem(path: Path, run_recorded: bool) -> str | None:
    """None when a ``checkpoint-N`` folder is one our trainer wrote, else the first entry that is not."""
    odd = _links_below(path)
    if odd is not None:
        return f"{odd} (a link or special file)"
    marker = artifacts.read_json(path / artifacts.CHECKPOINT_MARKER)
    if marker is not None and isinstance(marker.get("files"), dict):
        listed = {*marker["files"], artifacts.CHECKPOINT_MARKER}
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            relative = str(file.relative_to(path))
            if relative not in listed and not _is_leftover(file.name, listed):
                return relative
        return None
    if not run_recorded:
        return f" with no {artifacts.CHECKPOINT_MARKER} in it and no {IDENTITY_FILE} beside it"
    names = MODEL_FILES | CHECKPOINT_FILES | {artifacts.CHECKPOINT_MARKER}
    for entry in sorted(path.iterdir()):
        if entry.is_dir() and _matches(entry.name, (), ("pytorch_model_fsdp*", "optimizer_*")):
            continue
        ours = _matches(entry.name, names, (*MODEL_PATTERNS, *CHECKPOINT_PATTERNS))
        if entry.is_dir() or not (ours or _is_leftover(entry.name, names) or _card(entry)):
            return entry.name
    return None


def _card(path: Path) -> bool:
    return path.name == MODEL_CARD and _is_model_card(path)


def _is_leftover(name: str, names: Iterable[str]) -> bool:
    """A temporary file of an interrupted atomic write of one of ``names``."""
    found = _ATOMIC_LEFTOVER.match(name)
    return found is not None and found["name"] in set(names)


def _entry_problem(entry: os.DirEntry, kinds: tuple[str, ...], recorded: set[str]) -> str | None:
    """None when ``entry`` belongs to one of ``kinds`` (given which records the folder holds), else why not."""
    name, path = entry.name, Path(entry.path)
    if entry.is_symlink():
        return f"{name} -> {os.readlink(entry.path)}"
    if name == LOCK_FILE:
        return None
    by_name = {RECORDS[kind] for kind in kinds} | {n for kind in kinds for n in _BY_NAME.get(kind, ())}
    if entry.is_file(follow_symlinks=False):
        if name in by_name or _is_leftover(name, by_name | {n for kind in kinds for n in _FILES[kind]}):
            return None
        for kind in kinds:
            if _matches(name, _FILES[kind], _PATTERNS[kind]) or (kind == TRAIN and _card(path)):
                return None if kind in recorded else f"{name} with no {RECORDS[kind]} beside it"
        return name
    if not entry.is_dir(follow_symlinks=False):
        return f"{name} (a special file)"
    if TRAIN in kinds and name.startswith(artifacts.CHECKPOINT_PREFIX):
        problem = _checkpoint_problem(path, TRAIN in recorded)
        return None if problem is None else f"{name}/{problem}"
    if TRAIN in kinds and name == artifacts.TENSORBOARD_DIR:
        if TRAIN not in recorded:
            return f"{name}/ with no {IDENTITY_FILE} beside it"
        other = _is_tensorboard_dir(path)
        return None if other is None else f"{name}/{other}"
    return f"{name}/"


def inventory(directory: str | os.PathLike, kinds: Iterable[str]) -> Inventory:
    """Split the entries of ``directory`` into those the writers of ``kinds`` own and the foreign ones (see the
    module docstring). Reads only; a missing folder is empty."""
    directory = Path(directory)
    kinds = tuple(kinds)
    found = Inventory(directory)
    if not directory.is_dir():
        return found
    recorded = {kind for kind in kinds if any((directory / n).is_file() for n in records(kind))}
    try:
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                problem = _entry_problem(entry, kinds, recorded)
                if problem is None:
                    found.owned.append(Path(entry.path))
                else:
                    found.foreign.append(problem)
    except OSError as err:  # an unreadable folder (or entry) cannot be shown to be ours
        raise UserError(f"cannot read {err.filename or directory}: {err.strerror or err}") from err
    return found


def refuse_foreign(directory: str | os.PathLike, kinds: Iterable[str], option: str) -> Inventory:
    """The folder's inventory; one line naming up to three foreign entries when it holds any (nothing is removed)."""
    found = inventory(directory, kinds)
    if found.foreign:
        named = ", ".join(found.foreign[:MAX_NAMED])
        more = f" and {len(found.foreign) - MAX_NAMED} more" if len(found.foreign) > MAX_NAMED else ""
        raise UserError(f"{option} {directory} holds files mathsft did not write there ({named}{more}); they are "
                        "left alone and the folder is not used: choose an empty or new folder")  # fmt: skip
    return found


def remove(entries: Iterable[Path]) -> None:
    """Remove owned entries (from ``inventory``): files are unlinked, real folders removed whole; a link is never
    followed, and an entry that changed into a link since it was listed is left alone."""
    for entry in entries:
        mode = os.lstat(entry).st_mode if os.path.lexists(entry) else None
        if mode is None or stat.S_ISLNK(mode):
            continue
        if stat.S_ISDIR(mode):
            shutil.rmtree(entry)
        else:
            entry.unlink()


# ---- folders that are never an output folder -------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _nested_runs(directory: Path) -> list[str]:
    """Sub-folders (two levels deep) of ``directory`` that hold a run, an evaluation, a stage or a study."""
    found: list[str] = []
    scanned = 0
    for child in sorted(directory.iterdir()):
        if child.is_symlink() or not child.is_dir() or child.name.startswith(artifacts.CHECKPOINT_PREFIX):
            continue
        try:
            folders = [child, *sorted(child.iterdir())][:_MAX_SCANNED]
        except OSError:  # unreadable: it is foreign anyway, and named as such
            continue
        for folder in folders:
            scanned += 1
            if folder.is_dir() and not folder.is_symlink() and any((folder / m).is_file() for m in RUN_MARKERS):
                found.append(f"{child.name}/")
                break
        if scanned > _MAX_SCANNED or len(found) >= MAX_NAMED:
            break
    return found


def check_output_location(directory: str | os.PathLike, reads: Iterable[tuple[str, str | None]], option: str) -> None:
    """Refuse, in one line, an output folder that is a link, is, holds or lies inside a model or data folder being
    read (``reads``: ``(what, path)``; hub ids and absent paths are skipped), is a git checkout or a folder above the
    checkout or the current folder, or holds other runs. Reads only."""
    directory = Path(directory)
    if directory.is_symlink():
        raise UserError(f"{option} {directory} is a symbolic link (to {os.readlink(directory)}); mathsft never "
                        "writes or removes through a link: give the real folder")  # fmt: skip
    real = Path(os.path.realpath(directory))
    for what, source in reads:
        if not source or not os.path.exists(source):
            continue
        source_real = Path(os.path.realpath(source))
        relation = "is" if real == source_real else "lies inside" if _inside(real, source_real) else None
        relation = relation or ("holds" if _inside(source_real, real) else None)
        if relation:
            raise UserError(f"{option} {directory} {relation} the {what} {source} that this run reads; "
                            "choose a folder apart from it")  # fmt: skip
    if real.is_dir() and os.path.lexists(real / ".git"):
        raise UserError(f"{option} {directory} is a git checkout (it holds .git); choose a folder of its own")
    repo = Path(__file__).resolve().parents[1]
    for what, folder in (("the mathsft checkout", repo), ("the current folder", Path.cwd().resolve())):
        if _inside(folder, real) and (what != "the current folder" or folder != real):
            raise UserError(f"{option} {directory} holds {what} {folder}; choose a folder of its own")
    if real.is_dir():
        others = _nested_runs(real)
        if others or (real / artifacts.STUDY_CONFIG).is_file():
            named = ", ".join(others) or f"it is a study folder ({artifacts.STUDY_CONFIG})"
            raise UserError(f"{option} {directory} holds other runs ({named}); give each run a folder of its own, "
                            f"such as {directory / '<name>'}")  # fmt: skip


# ---- the report folder ------------------------------------------------------------------------------------------

# Each file the report writes, and what its first 4 KB hold when the report wrote it.
_REPORT_SIGNS = {
    artifacts.REPORT_MD: ("Built by `make_report.py`",),
    artifacts.ACCURACY_MD: ("# Accuracy",),
    artifacts.RESOURCES_MD: ("# Resources",),
    artifacts.LOSS_TRAIN_PNG: ("Matplotlib",),
    artifacts.LOSS_VAL_PNG: ("Matplotlib",),
    artifacts.LR_SENSITIVITY_PNG: ("Matplotlib",),
    artifacts.ACCURACY_BY_STEP_PNG: ("Matplotlib",),
    artifacts.FIGURES_JSON: (f'"{artifacts.LOSS_TRAIN_PNG}"', f'"{artifacts.LOSS_VAL_PNG}"'),
    artifacts.PROBLEM_DIFF: ('"change"',),
}


def _written_by_report(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", errors="replace")
    if path.name == artifacts.PROBLEM_DIFF and not head.strip():
        return True  # no problem changed
    return any(sign in head for sign in _REPORT_SIGNS[path.name])


def refuse_report_clashes(directory: str | os.PathLike) -> None:
    """Refuse, in one line, a report folder where a file the report writes already exists and is not an earlier
    report's (a user's ``report.md``, a link): the report replaces its own files and touches nothing else."""
    directory = Path(directory)
    clashes = [name for name in _REPORT_SIGNS if os.path.lexists(directory / name)]
    foreign_files = [name for name in clashes if not _written_by_report(directory / name)]
    if foreign_files:
        named = ", ".join(foreign_files[:MAX_NAMED])
        raise UserError(f"report folder {directory} holds {named}, which make_report.py did not write; it replaces "
                        "only its own files: choose another report folder")  # fmt: skip
