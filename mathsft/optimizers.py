"""Optimizer construction: a small registry of AdamW and SGD builders, plugged into the trainer.

The trainer calls ``build_optimizer`` from ``create_optimizer`` after PEFT has wrapped the model (and after FSDP
has sharded it), so it sees exactly the parameters that will train.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

OptimizerBuilder = Callable[[list[dict[str, Any]], Any, bool], torch.optim.Optimizer]


def _adamw(param_groups: list[dict[str, Any]], args: Any, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        param_groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        fused=fused,
    )


def _sgd(param_groups: list[dict[str, Any]], args: Any, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        param_groups,
        lr=args.learning_rate,
        momentum=args.sgd_momentum,
        nesterov=args.sgd_nesterov,
        dampening=args.sgd_dampening,
        fused=fused,
    )


OPTIMIZERS: dict[str, OptimizerBuilder] = {"adamw": _adamw, "sgd": _sgd}


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights and biases are not decayed: shrinking them towards zero only distorts the activations."""
    lowered = name.lower()
    return param.ndim <= 1 or lowered.endswith(".bias") or "norm" in lowered


def parameter_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Split the trainable parameters into a decayed and a non-decayed group (empty groups are left out)."""
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if is_no_decay(name, param) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, args: Any) -> torch.optim.Optimizer:
    """Build the optimizer named by ``args.optimizer`` over the model's trainable parameters.

    ``args`` is a ``MathSFTConfig`` (learning_rate, weight_decay, adam_*, sgd_*). Fused kernels are used when
    every parameter lives on CUDA, where they are faster and exact.
    """
    if args.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{args.optimizer}'; valid optimizers are: {', '.join(sorted(OPTIMIZERS))}")
    groups = parameter_groups(model.named_parameters(), args.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return OPTIMIZERS[args.optimizer](groups, args, fused)


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
