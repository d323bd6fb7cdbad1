"""Telling a Hugging Face Hub id from a local path, so a missing local path fails fast with one clear line."""

from __future__ import annotations

import os

# The local data files the datasets builders read; a name ending in one of them is a path, never a hub id.
DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def looks_like_local_path(name_or_path: str) -> bool:
    """A hub id is ``owner/name`` (or a bare ``name``); anything else path-shaped is meant as a local path."""
    return (
        name_or_path.startswith((".", "/", "~"))
        or name_or_path.endswith(DATA_FILE_SUFFIXES)
        or name_or_path.count("/") > 1
        or os.path.exists(name_or_path)
    )
