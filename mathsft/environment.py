"""The machine and the software a result was produced with: devices, their names, and library versions."""

from __future__ import annotations

import os
import platform

import torch

from mathsft.errors import UserError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; asking for CUDA without a GPU is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} requested but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise UserError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from err


def device_name(device: torch.device | None = None) -> str:
    """``NVIDIA H200`` for a GPU; for the CPU its processor and core count, so CPU timings say what they ran on."""
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide a training result."""
    import accelerate
    import datasets
    import peft
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
    }
