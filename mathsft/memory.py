"""Where training memory goes: the static part (weights, gradients, optimizer state) from parameter counts.

The static part follows from the parameter counts and dtypes alone, so it is computed from the numbers in a
``run_summary.json`` without loading the model. The measured peak minus this is activations and workspace
(on CUDA only; a CPU run's peak RSS also holds the Python process, libraries and data).

- weights: every parameter at its dtype (frozen base weights included);
- gradients: trainable parameters only, at their dtype;
- optimizer state, per trainable parameter: AdamW keeps two moments (``exp_avg``, ``exp_avg_sq``); SGD keeps one
  momentum buffer, none when momentum is 0. ``torch.optim`` allocates them with ``zeros_like(param)``, i.e. at the
  parameter's dtype, so with the project's default float32 weights (bf16 autocast, fp32 master weights) they are
  fp32. AdamW's per-tensor ``step`` scalar is ignored (a few bytes per tensor). LoRA trains only its adapters, so
  its gradients and optimizer state cover the adapters alone. The count per method is the registry's
  (``mathsft.methods.METHODS[name].state_buffers_per_parameter``), so a new optimizer brings its own.

Example, Qwen3-0.6B (596,049,920 parameters, tied embeddings) in float32 with AdamW: weights 2.38 GB, gradients
2.38 GB, AdamW state 4.77 GB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mathsft.methods import METHODS

__all__ = [
    "GB",
    "GIB",
    "StaticMemory",
    "dtype_bytes",
    "static_memory",
    "state_buffers",
    "static_memory_from_summary",
]

GIB = 1024**3
GB = 1000**3

_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2,
                "float64": 8, "double": 8}

# PEFT's get_peft_model (autocast_adapter_dtype=True, the default TRL uses outside DeepSpeed ZeRO-3) upcasts LoRA
# adapters of a bf16/fp16 model to float32.
LORA_ADAPTER_DTYPE_BYTES = 4


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name as written in a run summary (``float32``, ``bfloat16``, ``torch.float16``)."""
    name = str(dtype).removeprefix("torch.").lower()
    if name not in _DTYPE_BYTES:
        raise ValueError(f"unknown dtype '{dtype}'; known: {', '.join(sorted(_DTYPE_BYTES))}")
    return _DTYPE_BYTES[name]


@dataclass(frozen=True)
class StaticMemory:
    """The static training memory of one run, in bytes; ``*_gib`` / ``*_gb`` give binary / decimal units."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.gradients_bytes + self.optimizer_state_bytes

    @property
    def weights_gib(self) -> float:
        return self.weights_bytes / GIB

    @property
    def gradients_gib(self) -> float:
        return self.gradients_bytes / GIB

    @property
    def optimizer_state_gib(self) -> float:
        return self.optimizer_state_bytes / GIB

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def in_units(self, unit: str = "GiB") -> dict[str, float]:
        """``{"weights", "gradients", "optimizer_state", "total"}`` in ``"GiB"`` (as measured peaks) or ``"GB"``."""
        scale = {"GiB": GIB, "GB": GB}[unit]
        return {
            "weights": self.weights_bytes / scale,
            "gradients": self.gradients_bytes / scale,
            "optimizer_state": self.optimizer_state_bytes / scale,
            "total": self.total_bytes / scale,
        }

    def activations_and_workspace_gib(self, measured_peak_gib: float) -> float:
        """What a measured CUDA peak holds beyond the static part: activations, temporaries, allocator workspace.

        Meaningful for ``torch.cuda.max_memory_allocated`` peaks only, not for a CPU process's RSS.
        """
        return measured_peak_gib - self.total_gib


def state_buffers(method: str, hyperparameters: Mapping[str, Any]) -> int:
    """Optimizer-state buffers per trainable parameter of a registered method, from the registry
    (``Method.state_buffers_per_parameter``): AdamW and LoRA 2, SGD 1 with momentum and 0 without."""
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    return METHODS[method].state_buffers_per_parameter(dict(hyperparameters))


def static_memory(
    total_params: int,
    trainable_params: int,
    weight_dtype_bytes: int,
    state_buffers_per_parameter: int,
    trainable_dtype_bytes: int | None = None,
) -> StaticMemory:
    """Static memory of a run with ``total_params`` parameters of which ``trainable_params`` train.

    ``state_buffers_per_parameter`` is the optimizer's state tensors per trainable parameter (:func:`state_buffers`;
    LoRA runs pass the adapter count as ``trainable_params``). ``trainable_dtype_bytes`` is the trainable
    parameters' element size when it differs from the frozen weights' (fp32 LoRA adapters on a bf16 base); it
    defaults to ``weight_dtype_bytes``. Gradients and optimizer state take the trainable parameters' dtype, as torch
    allocates them.
    """
    if not 0 <= trainable_params <= total_params:
        raise ValueError(f"need 0 <= trainable_params <= total_params, got {trainable_params}, {total_params}")
    if state_buffers_per_parameter < 0:
        raise ValueError(f"need state_buffers_per_parameter >= 0, got {state_buffers_per_parameter}")
    trainable_bytes = weight_dtype_bytes if trainable_dtype_bytes is None else trainable_dtype_bytes
    frozen = total_params - trainable_params
    return StaticMemory(
        weights_bytes=frozen * weight_dtype_bytes + trainable_params * trainable_bytes,
        gradients_bytes=trainable_params * trainable_bytes,
        optimizer_state_bytes=state_buffers_per_parameter * trainable_params * trainable_bytes,
    )


def static_memory_from_summary(summary: Mapping[str, Any]) -> StaticMemory | None:
    """:func:`static_memory` from a ``run_summary.json``: ``method``, ``total_params``, ``trainable_params`` and
    ``hyperparameters`` (``dtype``, ``use_peft`` and the hyperparameters the method owns in the registry).

    None when the summary does not say enough: the method is not registered, a count is missing, a hyperparameter
    the method owns is missing (e.g. SGD's momentum), or the dtype is ``auto`` (the weights' dtype then came from
    the checkpoint and was not recorded).
    """
    hyper = summary.get("hyperparameters") or {}
    method, total, trainable = summary.get("method"), summary.get("total_params"), summary.get("trainable_params")
    dtype = hyper.get("dtype") or "float32"  # training loads float32 when no dtype is given
    if method not in METHODS or total is None or trainable is None or str(dtype).lower() == "auto":
        return None
    if any(key not in hyper for key in METHODS[method].hyperparameters):
        return None
    weight_bytes = dtype_bytes(dtype)
    return static_memory(
        total_params=int(total),
        trainable_params=int(trainable),
        weight_dtype_bytes=weight_bytes,
        state_buffers_per_parameter=state_buffers(method, hyper),
        trainable_dtype_bytes=max(weight_bytes, LORA_ADAPTER_DTYPE_BYTES) if METHODS[method].peft else None,
    )
