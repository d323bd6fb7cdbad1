"""Loading MATH problems from the Hub or from local files, the fixed train/validation split, and the guard against
training on the test set.

Contamination guard: a model trained on the problems it is evaluated on scores high for the wrong reason, so a
training run is refused (unless ``--allow_test_overlap true``) when it trains on a split named ``test``, on the test
file itself, or on problems that are also in the ``test`` split of the same dataset: a local folder's
``test.jsonl`` (or the ``test.*`` file beside a single data file), or a Hub dataset's ``test`` split when it can be
loaded. Problems are compared by their normalised text (:func:`normalize_problem`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from datasets import Dataset, load_dataset

from mathsft.artifacts import parse_jsonl_line
from mathsft.errors import UserError
from mathsft.paths import DATA_FILE_SUFFIXES, looks_like_local_path

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "ricdomolm/MATH-500"
# The split the evaluation scores (run_eval.py's default): never trained on without --allow_test_overlap.
TEST_SPLIT = "test"
ALLOW_OVERLAP_HINT = "pass --allow_test_overlap true to train on it anyway"


def split_file(folder: Path, split: str) -> Path | None:
    """The file a local folder's ``split`` is read from (``<split>.jsonl``, ...), or None."""
    found = [folder / f"{split}{suffix}" for suffix in DATA_FILE_SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    return found[0] if found else None


def _load_local(path: Path, split: str) -> Dataset:
    if path.is_dir():
        found = split_file(path, split)
        if found is None:
            present = sorted(p.name for p in path.iterdir() if p.suffix in DATA_FILE_SUFFIXES)
            raise UserError(f"no '{split}' split in {path}: expected {split}.jsonl; found {present or 'no data files'}")
        path = found
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
    if builder is None:
        raise UserError(f"unsupported data file {path}: use one of {', '.join(DATA_FILE_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty")
    if path.suffix == ".jsonl":
        check_jsonl(path)
    try:
        return load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # malformed or empty files surface as various datasets/arrow errors
        first_line = (str(err).strip().splitlines() or ["no details"])[0]
        raise UserError(f"could not read {path}: {type(err).__name__}: {first_line}") from err


def check_jsonl(path: Path) -> None:
    """Every line of a JSONL data file is a JSON object; else one line naming the file and line (datasets' own error
    names neither)."""
    lines = path.read_bytes().split(b"\n")
    numbered = [(number, raw) for number, raw in enumerate(lines, start=1) if raw.strip()]
    if not numbered:
        raise UserError(f"data file {path} is empty")
    for number, raw in numbered:
        row = parse_jsonl_line(raw, path, number)
        try:  # a JSON escape can hold a lone surrogate, which no tokenizer (and no Arrow table) accepts
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise UserError(f"{path} line {number} holds text that is not valid Unicode (a lone surrogate)") from err


def load_problems(
    name_or_path: str, split: str, required_columns: Sequence[str] = (), text_columns: Sequence[str] | None = None
) -> Dataset:
    """Load one split from a Hub dataset id, a local folder holding ``<split>.jsonl``, or a single data file.

    Raises ``UserError`` with one clear line for a missing path, an unreachable Hub, a missing column, or a row whose
    ``text_columns`` (default: the required columns) are not non-empty strings.
    """
    if looks_like_local_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise UserError(f"dataset path not found: {name_or_path}")
        dataset = _load_local(path, split)
    else:
        try:
            dataset = load_dataset(name_or_path, split=split)
        except Exception as err:
            raise UserError(
                f"could not load dataset '{name_or_path}' split '{split}' from the Hugging Face Hub "
                f"({type(err).__name__}); offline? pass a local folder or .jsonl file instead, "
                f"e.g. ../shared/data/math500"
            ) from err
    missing = [c for c in required_columns if c not in dataset.column_names]
    if missing:
        columns = ", ".join(dataset.column_names)
        raise UserError(f"column '{missing[0]}' not found in {name_or_path} ({split}); columns are: {columns}")
    if len(dataset) == 0:
        raise UserError(f"dataset {name_or_path} ({split}) is empty")
    check_text_columns(dataset, required_columns if text_columns is None else text_columns, f"{name_or_path} ({split})")
    return dataset


def check_text_columns(dataset: Dataset, columns: Sequence[str], source: str) -> None:
    """Every value of ``columns`` is a non-empty string; else one line naming the file, row and column."""
    for column in columns:
        for row, value in enumerate(dataset[column], start=1):
            if isinstance(value, str) and value.strip():
                continue
            what = "null" if value is None else "empty" if isinstance(value, str) else f"a {type(value).__name__}"
            raise UserError(f"{source} row {row}: '{column}' is {what}; every row needs a non-empty text")


def split_train_validation(dataset: Dataset, validation_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded split that is identical for every method, so their loss curves are comparable."""
    if not 0.0 < validation_fraction < 1.0:
        raise UserError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    rows = len(dataset)
    # datasets rounds the validation part up and gives the rest to training; either may come out empty.
    validation_rows = math.ceil(validation_fraction * rows)
    if validation_rows < 1 or rows - validation_rows < 1:
        raise UserError(
            f"the data set has {rows} row{'s' if rows != 1 else ''}: too few to split into train and validation with "
            f"validation_fraction {validation_fraction} ({rows - validation_rows} train, {validation_rows} "
            "validation); use more rows (at least 2) or another validation_fraction"
        )
    parts = dataset.train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


# ---- contamination guard ------------------------------------------------------------------------------------------

# LaTeX spacing and sizing that does not change a problem: \, \; \: \! \quad \qquad "\ " \left \right ~
_LATEX_SPACING = re.compile(r"\\(?:[,;:! ]|q?quad(?![a-z])|left(?![a-z])|right(?![a-z]))|~")
_WHITESPACE = re.compile(r"\s+")


def normalize_problem(text: str) -> str:
    """A problem as compared for contamination: lowercase, LaTeX spacing commands and all whitespace removed."""
    return _WHITESPACE.sub("", _LATEX_SPACING.sub("", str(text).lower()))


def shared_problems(train: Iterable[str], test: Iterable[str]) -> list[int]:
    """Indices of the ``train`` problems whose normalised text is also a ``test`` problem (a set lookup each)."""
    test_forms = {normalize_problem(problem) for problem in test}
    return [index for index, problem in enumerate(train) if normalize_problem(problem) in test_forms]


def local_test_file(name_or_path: str) -> Path | None:
    """The test file of a local dataset: ``<folder>/test.*``, or the ``test.*`` file beside a single data file."""
    path = Path(name_or_path).expanduser()
    return split_file(path if path.is_dir() else path.parent, TEST_SPLIT)


def trains_on_test_split(dataset_name: str, train_split: str) -> str | None:
    """Why training on ``dataset_name`` (split ``train_split``) is training on its test split, or None."""
    if looks_like_local_path(dataset_name) and Path(dataset_name).expanduser().is_file():
        test_file = local_test_file(dataset_name)
        if test_file is not None and test_file.resolve() == Path(dataset_name).expanduser().resolve():
            return f"the training file {dataset_name} is the test split of its folder"
        return None
    if train_split.split("[", 1)[0].strip() == TEST_SPLIT:  # also a slice of it, as in "test[:50%]"
        return f"dataset_train_split is '{train_split}': the split the evaluation scores"
    return None


def refuse_test_split(dataset_name: str, train_split: str, allow: bool) -> None:
    """Training on the test split itself is refused unless ``allow`` (a cheap check: names only, no data read)."""
    reason = trains_on_test_split(dataset_name, train_split)
    if reason is None:
        return
    if not allow:
        raise UserError(f"refusing to train on the test set: {reason}; its accuracy would be meaningless. Train on "
                        f"another split, or {ALLOW_OVERLAP_HINT}")  # fmt: skip
    logger.warning("training on the test set (--allow_test_overlap true): %s", reason)


def test_split_problems(dataset_name: str, column: str) -> tuple[str, list[str]] | None:
    """The problems of the test split of ``dataset_name`` and where they come from, or None when it has none (or it
    cannot be loaded, e.g. a Hub dataset offline and not cached)."""
    if looks_like_local_path(dataset_name):
        test_file = local_test_file(dataset_name)
        if test_file is None:
            return None
        return str(test_file), read_column(test_file, column)
    try:
        test = load_dataset(dataset_name, split=TEST_SPLIT)
    except Exception as err:  # no test split, or not cached offline: nothing to compare with
        logger.info("no '%s' split of %s to check for overlap (%s)", TEST_SPLIT, dataset_name, type(err).__name__)
        return None
    if column not in test.column_names:
        return None
    return f"{dataset_name} ({TEST_SPLIT})", [str(value) for value in test[column]]


def read_column(path: Path, column: str) -> list[str]:
    """One column of a local data file, as text; a JSONL file is read directly (fast, and no datasets cache)."""
    if path.suffix != ".jsonl":
        dataset = _load_local(path, TEST_SPLIT)
        return [str(value) for value in dataset[column]] if column in dataset.column_names else []
    lines = path.read_bytes().split(b"\n")
    rows = [parse_jsonl_line(raw, path, number) for number, raw in enumerate(lines, start=1) if raw.strip()]
    return [str(row[column]) for row in rows if row.get(column) is not None]


def _overlap_error(train_problems: Sequence[str], shared: list[int], train_source: str, test_source: str) -> UserError:
    first = " ".join(str(train_problems[shared[0]]).split())
    example = first if len(first) <= 60 else first[:57] + "..."
    count = f"{len(shared)} training problem{'s are' if len(shared) != 1 else ' is'}"
    return UserError(f"{count} also in the test set {test_source} (by normalised text; {train_source} row "
                     f"{shared[0] + 1}: {example!r}): the evaluation would score problems the model was trained on. "
                     f"Remove them, or {ALLOW_OVERLAP_HINT}")  # fmt: skip


def refuse_test_overlap(train_problems: Sequence[str], train_source: str, dataset_name: str, column: str,
                        allow: bool) -> int:  # fmt: skip
    """Training problems that are also in the test split of ``dataset_name`` (by normalised text) are refused unless
    ``allow``; returns how many there are (0 when there is no test split to compare with)."""
    test = test_split_problems(dataset_name, column)
    if test is None:
        return 0
    test_source, test_problems = test
    shared = shared_problems(train_problems, test_problems)
    if shared and not allow:
        raise _overlap_error(train_problems, shared, train_source, test_source)
    if shared:
        logger.warning("%d training problems are also in the test set %s; training on them (--allow_test_overlap "
                       "true)", len(shared), test_source)  # fmt: skip
    return len(shared)


def local_data_file(name_or_path: str, split: str) -> Path | None:
    """The file a local dataset's ``split`` is read from (a single file is every split), or None (a Hub id)."""
    if not looks_like_local_path(name_or_path):
        return None
    path = Path(name_or_path).expanduser()
    return path if path.is_file() else split_file(path, split) if path.is_dir() else None


def refuse_evaluation_of_training_data(training: tuple[str, str, str], evaluation: tuple[str, str, str],
                                       allow: bool) -> None:  # fmt: skip
    """A study must not evaluate on what a run trains on: the same data and split, or (local data) shared problems.

    ``training`` and ``evaluation`` are ``(dataset, split, problem column)``. Refused unless ``allow``."""
    (train_name, train_split, train_column), (eval_name, eval_split, eval_column) = training, evaluation
    train_file, eval_file = local_data_file(train_name, train_split), local_data_file(eval_name, eval_split)
    if train_file is not None and eval_file is not None:
        same = train_file.resolve() == eval_file.resolve()
    else:
        same = (train_name, train_split) == (eval_name, eval_split)
    where = f"the evaluation ({eval_name}, split {eval_split})"
    if allow:
        return
    if same:
        raise UserError(f"refusing to train on the test set: {where} is this run's training data; its accuracy "
                        f"would be meaningless. Evaluate on another split, or {ALLOW_OVERLAP_HINT}")  # fmt: skip
    if train_file is None or eval_file is None:
        return  # a Hub dataset: the run itself compares its training data with that dataset's test split
    train_problems = read_column(train_file, train_column)
    shared = shared_problems(train_problems, read_column(eval_file, eval_column))
    if shared:
        raise _overlap_error(train_problems, shared, str(train_file), where)
