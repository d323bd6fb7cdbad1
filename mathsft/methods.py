"""The method registry: each fine-tuning method the study compares is defined here, once.

A method has a name, says whether it trains a PEFT adapter, builds its optimizer, and owns a list of
hyperparameters (the recipe keys in which its recipes may differ from the other methods' of the same profile).
Training, ``run_summary.json``, the study, the report (tables and colours) and the bench all read this registry.

Adding a method (say Adafactor): write its builder below, add a ``Method`` entry, add any new hyperparameter fields
to ``MathSFTConfig`` (``mathsft/configs.py``), and add one recipe per profile under ``recipes/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mathsft.errors import UserError, suggest

if TYPE_CHECKING:
    import torch

# (parameter groups, MathSFTConfig, fused) -> optimizer. torch is imported lazily so the report stays light.
OptimizerBuilder = Callable[[list[dict[str, Any]], Any, bool], "torch.optim.Optimizer"]

# Keys every recipe of a profile shares except these: the method's identity and where its run goes.
IDENTITY_KEYS = ("optimizer", "use_peft", "output_dir", "run_name")
ADAM_KEYS = ("adam_beta1", "adam_beta2", "adam_epsilon")
LORA_KEYS = ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_trainable_tokens")


def build_adamw(param_groups: list[dict[str, Any]], args: Any, fused: bool) -> torch.optim.Optimizer:
    import torch

    return torch.optim.AdamW(
        param_groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        fused=fused,
    )  # fmt: skip


def build_sgd(param_groups: list[dict[str, Any]], args: Any, fused: bool) -> torch.optim.Optimizer:
    import torch

    return torch.optim.SGD(
        param_groups, lr=args.learning_rate, momentum=args.sgd_momentum, nesterov=args.sgd_nesterov,
        dampening=args.sgd_dampening, fused=fused,
    )  # fmt: skip


@dataclass(frozen=True)
class Method:
    """One fine-tuning method of the study."""

    name: str
    description: str  # what trains and how, for people
    peft: bool  # trains a LoRA adapter on a frozen base
    optimizer: str  # the recipe's `optimizer` value that selects this method (with `use_peft`)
    build_optimizer: OptimizerBuilder
    hyperparameters: tuple[str, ...]  # the recipe keys this method owns, beyond the learning rate
    state_buffers_per_parameter: Callable[[dict[str, Any]], int]  # fp32 optimizer-state tensors per trainable param
    color: str  # its colour in the report's figures
    course_learning_rate: float  # the course loop's rate, for the bench's baseline
    memory_target_gib: float  # the lean (16 GB card) profile's peak-memory target, for the bench

    def owned_keys(self) -> tuple[str, ...]:
        return ("learning_rate", "weight_decay", *self.hyperparameters)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            name="adamw", description="every weight (full fine-tuning), AdamW", peft=False, optimizer="adamw",
            build_optimizer=build_adamw, hyperparameters=ADAM_KEYS, state_buffers_per_parameter=lambda h: 2,
            color="tab:blue", course_learning_rate=1e-5, memory_target_gib=16.0,
        ),
        Method(
            name="sgd", description="every weight (full fine-tuning), SGD with momentum", peft=False, optimizer="sgd",
            build_optimizer=build_sgd, hyperparameters=("sgd_momentum", "sgd_nesterov", "sgd_dampening"),
            state_buffers_per_parameter=lambda h: 1 if h.get("sgd_momentum") else 0,
            color="tab:orange", course_learning_rate=2e-2, memory_target_gib=16.0,
        ),
        Method(
            name="lora", description="low-rank adapters on a frozen base, AdamW", peft=True, optimizer="adamw",
            build_optimizer=build_adamw, hyperparameters=(*ADAM_KEYS, *LORA_KEYS),
            state_buffers_per_parameter=lambda h: 2,
            color="tab:green", course_learning_rate=2e-4, memory_target_gib=8.0,
        ),
    )
}  # fmt: skip

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
OPTIMIZER_NAMES: tuple[str, ...] = tuple(sorted({m.optimizer for m in METHODS.values()}))


def get_method(name: str) -> Method:
    """The registered method called ``name``; anything else is a one-line error with a suggestion."""
    if name not in METHODS:
        raise UserError(f"unknown method '{name}'{suggest(name, METHODS)}; valid methods are: {', '.join(METHODS)}")
    return METHODS[name]


def method_for(optimizer: str, use_peft: bool) -> Method:
    """The method a recipe trains, from its ``optimizer`` and ``use_peft`` (the one naming rule)."""
    for method in METHODS.values():
        if method.optimizer == optimizer and method.peft == bool(use_peft):
            return method
    if optimizer not in OPTIMIZER_NAMES:
        raise UserError(
            f"unknown optimizer '{optimizer}'{suggest(optimizer, OPTIMIZER_NAMES)}; "
            f"valid optimizers are: {', '.join(OPTIMIZER_NAMES)}"
        )
    kinds = ", ".join(f"{m.name} (optimizer {m.optimizer}, use_peft {str(m.peft).lower()})" for m in METHODS.values())
    raise UserError(f"no method trains optimizer '{optimizer}' with use_peft {str(use_peft).lower()}; methods: {kinds}")


def method_of_recipe(recipe: dict[str, Any]) -> Method:
    """The method a recipe mapping trains (defaults as in ``MathSFTConfig``: optimizer adamw, no PEFT)."""
    return method_for(str(recipe.get("optimizer", "adamw")), bool(recipe.get("use_peft", False)))
