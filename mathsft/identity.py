"""Run identity: a fingerprint of everything that defines a result, so that an output folder never silently mixes
two runs, and the one-writer lock that keeps two processes out of the same folder.

- A training run's identity: its method, every resolved hyperparameter that changes the result, the data (path plus
  a content hash of the files), the model (path plus a content hash of its weights) and the split seed.
- An evaluation's identity: the weights (and adapter) by content hash, the data, the generation settings and the
  grader.

Content hashes of large files (1.2 GB of weights take a second or two) are cached by path, size, mtime and inode in
``~/.cache/mathsft/file_hashes.json``: replaced weights get a new mtime, so they are hashed again even when their size
and header are unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from mathsft.errors import UserError
from mathsft.paths import looks_like_local_path

IDENTITY_FILE = "run_identity.json"
LOCK_FILE = ".mathsft.lock"
_HASH_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mathsft" / "file_hashes.json"
# Files of a model folder that decide its outputs: weights, configs and tokenizer. A run's own records beside them
# (run_summary.json, trainer_state.json, training_args.bin, ...) do not.
_MODEL_CONFIGS = ("config.json", "generation_config.json", "adapter_config.json", "merges.txt", "chat_template.jinja",
                  "special_tokens_map.json", "added_tokens.json")  # fmt: skip
_NOT_WEIGHTS = ("training_args.bin",)


def is_model_file(name: str) -> bool:
    weights = name.endswith((".safetensors", ".bin", ".model")) and name not in _NOT_WEIGHTS
    return weights or name in _MODEL_CONFIGS or name.startswith(("tokenizer", "vocab"))


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(_HASH_CACHE.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(cache: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
        _HASH_CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = _HASH_CACHE.with_name(f"{_HASH_CACHE.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, _HASH_CACHE)


def file_sha256(path: Path, cache: dict[str, Any] | None = None) -> str:
    """SHA-256 of a file's bytes, cached by (size, mtime, inode)."""
    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    if cache is not None and cache.get(key, {}).get("stamp") == stamp:
        return str(cache[key]["sha256"])
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    if cache is not None:
        cache[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
    return digest.hexdigest()


def content_identity(name_or_path: str | None, keep: Callable[[str], bool] | None = None) -> dict[str, Any] | None:
    """``{"path", "sha256"}`` of a local file or folder (its top-level files that ``keep`` accepts), or ``{"hub_id"}``.

    The hash covers file names and contents, so renamed, added or replaced files all change it.
    """
    if name_or_path is None:
        return None
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return {"hub_id": name_or_path} if not looks_like_local_path(name_or_path) else {"path": name_or_path}
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    if keep is not None and path.is_dir():
        files = [p for p in files if keep(p.name)]
    cache = _load_cache()
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{file_sha256(file, cache)}\n".encode())
    _save_cache(cache)
    return {"path": str(name_or_path), "sha256": digest.hexdigest()}


def model_identity(name_or_path: str | None) -> dict[str, Any] | None:
    """A model or adapter folder by the content of its weights, configs and tokenizer files."""
    return content_identity(name_or_path, is_model_file)


def data_identity(name_or_path: str) -> dict[str, Any] | None:
    """A data file or folder by the content of its data files."""
    from mathsft.paths import DATA_FILE_SUFFIXES

    return content_identity(name_or_path, lambda name: name.endswith(DATA_FILE_SUFFIXES))


def first_difference(recorded: Any, expected: Any, prefix: str = "") -> str | None:
    """The first key (nested with dots) whose values differ, as ``key: old -> new``."""
    if isinstance(recorded, dict) and isinstance(expected, dict):
        # The expected identity's own order (method first), then keys only the recorded one has.
        for key in [*expected, *(k for k in recorded if k not in expected)]:
            found = first_difference(recorded.get(key), expected.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    if recorded != expected:
        return f"{prefix.rstrip('.')}: {_short(recorded)} -> {_short(expected)}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def normalized(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity as it reads back from JSON (tuples become lists), so a fresh one compares equal to a stored one."""
    return json.loads(json.dumps(identity))


# ---- one writer -------------------------------------------------------------------------------------------------


def _missing_ancestors(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    path = directory.absolute()
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


def _lock(path: Path, directory: Path, what: str) -> IO[str]:
    """Open and lock ``path``; retried when a releasing holder removed the file between our open and our lock."""
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held until exclusive_output ends
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise UserError(f"{directory} is in use by another {what} (process {holder}); wait for it or use another "
                            "output folder") from err  # fmt: skip
        try:
            same_file = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return handle
        handle.close()  # we locked a file its holder had just removed: lock the new one


@contextlib.contextmanager
def exclusive_output(directory: Path, what: str) -> Iterator[None]:
    """Hold an OS lock on ``directory`` for as long as the block runs; a second holder is refused in one line.

    ``fcntl.flock`` is released by the kernel when its holder dies, so a SIGKILLed run never leaves a stale lock. The
    lock file holds the holder's PID (named in the refusal) and is removed on release, and folders created only to
    hold it are removed again, so a refused run leaves the disk as it found it.
    """
    created = _missing_ancestors(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    try:
        handle = _lock(path, directory, what)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked: a newcomer that opened it retries on the new file
        handle.close()
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a refused run created (deepest first) while they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote results), or gone: keep the rest
            return
