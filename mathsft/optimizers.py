"""Optimizer construction: parameter groups and the method's own builder (``mathsft.methods``), for the trainer.

The trainer calls ``build_optimizer`` from ``create_optimizer`` after PEFT has wrapped the model, so it sees exactly
the parameters that will train. Under FSDP2 it is built over the full parameters and accelerate then swaps each one
for its sharded DTensor (``MathSFTTrainer.optimizer_layout`` shows, after training, that it holds the shards).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from mathsft.methods import Method


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights and biases are not decayed: shrinking them towards zero only distorts the activations."""
    lowered = name.lower()
    return param.ndim <= 1 or lowered.endswith(".bias") or "norm" in lowered


def parameter_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Split the trainable parameters into a decayed and a non-decayed group (empty groups are left out)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if is_no_decay(name, param) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, args: Any, method: Method) -> torch.optim.Optimizer:
    """Build ``method``'s optimizer over the model's trainable parameters.

    ``args`` is a ``MathSFTConfig`` (learning_rate, weight_decay and the method's own hyperparameters). Fused kernels
    are used when every parameter lives on CUDA, where they are faster and exact.
    """
    groups = parameter_groups(model.named_parameters(), args.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return method.build_optimizer(groups, args, fused)


def optimizer_parameter_ids(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total
