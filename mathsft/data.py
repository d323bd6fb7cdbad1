"""Loading MATH problems from the Hub or from local files, and the fixed train/validation split."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, load_dataset

from mathsft.artifacts import parse_jsonl_line
from mathsft.errors import UserError
from mathsft.paths import DATA_FILE_SUFFIXES, looks_like_local_path

DEFAULT_DATASET = "ricdomolm/MATH-500"


def _load_local(path: Path, split: str) -> Dataset:
    if path.is_dir():
        candidates = [path / f"{split}{suffix}" for suffix in DATA_FILE_SUFFIXES]
        found = [c for c in candidates if c.is_file()]
        if not found:
            present = sorted(p.name for p in path.iterdir() if p.suffix in DATA_FILE_SUFFIXES)
            raise UserError(f"no '{split}' split in {path}: expected {split}.jsonl; found {present or 'no data files'}")
        path = found[0]
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
    parts = dataset.train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]
