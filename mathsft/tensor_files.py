"""Weights and checkpoint files must hold plain tensors: a file that is not (a pickle of Python objects that
``torch.load(weights_only=True)`` refuses, a damaged safetensors header, a truncated torch file) is one line naming
the file, never a traceback from deep inside transformers, PEFT or the Trainer's resume.

    check_tensor_files(Path("runs/smoke-adamw/checkpoint-50"), "checkpoint")   # before resuming from it
    raise weights_error(err, "model", path) if is_unreadable_weights(err) else ...
"""

from __future__ import annotations

import pickle
from pathlib import Path

from mathsft.errors import UserError

# Files the Trainer, transformers or PEFT load as tensors: every .safetensors, .pt and .pth, and .bin files except the
# trainer's own pickled settings (training_args.bin, never loaded on resume).
TENSOR_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
NOT_TENSOR_FILES = ("training_args.bin",)
# torch's zip reader and pickle report a damaged or foreign file with these exception types and messages.
_TORCH_FILE_MARKERS = ("PytorchStreamReader", "zip archive", "invalid header", "Ran out of input", "magic number")


def is_unreadable_weights(err: BaseException) -> bool:
    """Whether ``err`` says that a weights file is not plain tensors or not a readable tensor file at all."""
    if isinstance(err, pickle.UnpicklingError | EOFError):
        return True
    if type(err).__name__ in ("SafetensorError", "HeaderTooLarge", "HeaderTooSmall", "InvalidHeader"):
        return True
    return isinstance(err, RuntimeError | ValueError) and any(m in str(err) for m in _TORCH_FILE_MARKERS)


def _reason(err: BaseException) -> str:
    """The gist of a load error: torch's weights-only refusal is a page of advice around one line that matters."""
    text = str(err)
    for line in text.splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return f"{type(err).__name__}: {line.strip()[:160]}"
    first = (text.strip().splitlines() or [""])[0]
    first = "".join(ch for ch in first if ch.isprintable())[:160]  # torch puts terminal escapes in its message
    return f"{type(err).__name__}: {first}"


def weights_error(err: BaseException, what: str, path: str | Path) -> UserError:
    """One line for ``what`` (model, adapter, checkpoint) at ``path`` whose weights are not plain tensors."""
    return UserError(f"the {what} at {path} has weights that are not plain tensors or are damaged ({_reason(err)}); "
                     "only safetensors files or tensors-only torch files are loaded (weights_only): replace it with "
                     "a clean copy")  # fmt: skip


def tensor_files(folder: Path) -> list[Path]:
    """The files of ``folder`` (not its sub-folders) that are loaded as tensors."""
    return [
        path
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in TENSOR_SUFFIXES and path.name not in NOT_TENSOR_FILES
    ]


def _open_tensor_file(path: Path) -> None:
    """Read a file the way the libraries will, without materialising its tensors (headers, pickles, mmap)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:  # checks the header and the file's length
            handle.keys()
        return
    from transformers.trainer_pt_utils import safe_globals  # numpy's RNG state, as the Trainer allows it

    with safe_globals():
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip torch file


def check_tensor_files(folder: str | Path, what: str) -> None:
    """Every tensor file of ``folder`` holds plain tensors; else one line naming the file (nothing is executed: the
    loads are ``weights_only``)."""
    for path in tensor_files(Path(folder)):
        try:
            _open_tensor_file(path)
        except Exception as err:  # whatever the reason (a pickle, a bad header, no permission), it cannot be resumed
            raise UserError(
                f"the {what} {folder} cannot be loaded: {path.name} is not a plain tensor file or is damaged "
                f"({_reason(err)}); delete that {what}, or resume from another one"
            ) from err
