"""What both benches share: where results go, device names for folder names, synchronised timing, logging.

Where results go. ``bench/results/`` holds committed GPU measurements, one folder per run named by device and date
(``bench/results/nvidia-h200_2026-11-28/``), which the docs link to. A bench run never writes there by default:
without ``--output_dir`` it writes to a fresh scratch folder ``runs/bench/<device>_<date>[-N]/`` (``runs/`` is
ignored by git). Writing under ``bench/results/`` must be asked for, is refused off the GPU (CPU numbers are smoke
tests), and only into a folder that holds no results yet, so a new run never overwrites an old one.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from mathsft.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCRATCH_ROOT = REPO / "runs" / "bench"
COMMITTED_ROOT = REPO / "bench" / "results"
GIB = 1024**3


def device_slug(name: str) -> str:
    """A folder-name form of a device name: ``NVIDIA H200`` -> ``nvidia-h200``, ``cpu (x86_64, 2 cores)`` ->
    ``cpu-x86-64-2-cores``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-device"


def utc_date() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def utc_timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def fresh_folder(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name-2``, ``name-3``, ... when that folder already exists and is not empty."""
    candidate, number = parent / name, 1
    while candidate.exists() and any(candidate.iterdir()):
        number += 1
        candidate = parent / f"{name}-{number}"
    return candidate


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def resolve_output_dir(requested: str | None, device: torch.device, device_name: str, results: Iterable[str]) -> Path:
    """The folder a bench writes ``results`` (file names) into, created; see the module docstring for the rules."""
    if not requested:
        out = fresh_folder(SCRATCH_ROOT, f"{device_slug(device_name)}_{utc_date()}")
    else:
        out = Path(requested).expanduser().resolve()
        committed = COMMITTED_ROOT.resolve()
        if out == committed or out.is_relative_to(committed):
            if out == committed:
                raise UserError(
                    f"{requested} holds the committed results of earlier runs, one folder each; write to a new "
                    f"folder {_shown(COMMITTED_ROOT)}/<device>_<date>/ or leave --output_dir unset"
                )
            if device.type != "cuda":
                raise UserError(
                    f"{requested}: {_shown(COMMITTED_ROOT)}/ is for GPU measurements; CPU runs are smoke tests and "
                    f"write to {_shown(SCRATCH_ROOT)}/ (leave --output_dir unset)"
                )
        existing = [name for name in results if (out / name).exists()]
        if existing:
            raise UserError(f"{requested} already holds {', '.join(existing)}; a new run needs a new --output_dir")
    out.mkdir(parents=True, exist_ok=True)
    return out


def sync(device: torch.device) -> None:
    """Wait for the GPU, so that a wall-clock reading includes the work queued before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries the final Markdown table."""
    print(message, file=sys.stderr, flush=True)


def parse_names(value: str, valid: Iterable[str], flag: str) -> list[str]:
    """A comma-separated subset of ``valid``, in ``valid``'s order; an unknown or empty list is one line."""
    valid = list(valid)
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in valid]
    if unknown or not items:
        raise UserError(f"{flag}: unknown or empty {unknown or value!r}; choose from {', '.join(valid)}")
    return [v for v in valid if v in items]
