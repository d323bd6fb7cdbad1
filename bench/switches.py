"""The bench's configurations: a setup (the course loop, or a recipe profile) plus optional speed-up switches.

A configuration is written ``setup[+switch...][/method,method]``, e.g. ``fast``, ``fast+varlen``,
``fast+bf16base+nodropout/lora`` or ``lean+mb4/adamw``. Every switch is off in the recipes: the bench measures it
against the plain recipe of the same method in the same run (tokens/s, memory, and the training loss over the same
steps, same data order) so that a recipe only switches on what is faster *and* numerically equal.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

from mathsft import kernels
from mathsft.errors import UserError, suggest
from mathsft.methods import METHODS

SETUPS = ("course", "fast", "lean")
RECIPE_SETUPS = ("fast", "lean")
PEFT_METHODS = tuple(m.name for m in METHODS.values() if m.peft)


@dataclass(frozen=True)
class Switch:
    """One optional speed-up: recipe overrides, plus code run around or after building the trainer."""

    name: str
    description: str
    overrides: tuple[str, ...] = ()  # train_sft.py arguments
    methods: tuple[str, ...] | None = None  # the methods it applies to; None: every method
    setups: tuple[str, ...] = RECIPE_SETUPS
    equal_by_design: bool = True  # False: it changes the arithmetic on purpose (precision, regularisation)
    unavailable: Callable[[torch.device], str | None] = lambda device: None  # why it cannot run here
    around: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext  # around build + train
    after_build: Callable[[Any], dict[str, Any]] | None = None  # (trainer) -> facts for the result

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method in self.methods


def _liger_unavailable(device: torch.device) -> str | None:
    if not kernels.liger_kernel_available():
        return "liger-kernel is not installed"
    return None if device.type == "cuda" else "Liger's Triton kernels need a CUDA GPU"


@contextlib.contextmanager
def _restored_modeling_modules() -> Iterator[None]:
    """Liger patches functions and classes of transformers' modeling modules, process-wide; put them back after."""
    modules = {name: m for name, m in sys.modules.items() if name.startswith("transformers.models.")}
    saved = {name: dict(vars(m)) for name, m in modules.items()}
    try:
        yield
    finally:
        for name, module in modules.items():
            _restore_globals(module, saved[name])


def _restore_globals(module: ModuleType, saved: dict[str, Any]) -> None:
    current = vars(module)
    for key in [k for k in current if k not in saved]:
        delattr(module, key)
    for key, value in saved.items():
        if current.get(key) is not value:
            setattr(module, key, value)


@contextlib.contextmanager
def _fresh_compile_caches() -> Iterator[None]:
    try:
        yield
    finally:
        torch._dynamo.reset()  # compiled graphs hold the configuration's weights alive otherwise


def _compile_layers(trainer: Any) -> dict[str, Any]:
    return {"compiled_layers": kernels.compile_decoder_layers(trainer.model)}


SWITCHES: dict[str, Switch] = {
    switch.name: switch
    for switch in (
        Switch(
            "varlen", "PyTorch's flash varlen kernel on TRL's padding-free packed rows (no dense block mask)",
            overrides=("--attn_implementation", kernels.PACKED_FLASH_VARLEN),  # training.load_model switches it on
        ),
        Switch(
            "liger", "Liger kernels (RMSNorm, SwiGLU, RoPE; TRL keeps its own fused LM head and loss)",
            overrides=("--use_liger_kernel", "true"), unavailable=_liger_unavailable, around=_restored_modeling_modules,
        ),
        Switch(
            "compile", "torch.compile of each decoder layer (regional compilation)",
            around=_fresh_compile_caches, after_build=_compile_layers,
        ),
        Switch(
            "bf16base", "LoRA: frozen base loaded in bf16 (adapters stay fp32)", overrides=("--dtype", "bfloat16"),
            methods=PEFT_METHODS, equal_by_design=False,
        ),
        Switch(
            "nodropout", "LoRA: lora_dropout 0", overrides=("--lora_dropout", "0"), methods=PEFT_METHODS,
            equal_by_design=False,
        ),
        Switch(
            "mb4", "micro-batch 4 rows x accumulation 4 (the same 16 rows per step)",
            overrides=("--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "4"), setups=("lean",),
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Configuration:
    """One row of the bench: a setup with its switches, for one method."""

    setup: str
    switches: tuple[str, ...]
    method: str

    @property
    def label(self) -> str:
        return "+".join((self.setup, *self.switches))

    @property
    def equal_by_design(self) -> bool:
        return all(SWITCHES[name].equal_by_design for name in self.switches)

    def overrides(self) -> list[str]:
        return [arg for name in self.switches for arg in SWITCHES[name].overrides]


@dataclass
class PlannedRun:
    configuration: Configuration
    skip_reason: str | None = None
    reference: Configuration | None = None  # the plain setup of the same method, when it runs too
    facts: dict[str, Any] = field(default_factory=dict)


def _parse_spec(spec: str, methods: list[str]) -> tuple[str, tuple[str, ...], list[str], bool]:
    """``setup+a+b/m1,m2`` -> (setup, switches, methods, methods given explicitly)."""
    head, _, method_part = spec.partition("/")
    setup, *switches = [part.strip() for part in head.split("+")]
    if setup not in SETUPS:
        raise UserError(f"--configs {spec}: unknown setup '{setup}'{suggest(setup, SETUPS)}; use {', '.join(SETUPS)}")
    for name in switches:
        if name not in SWITCHES:
            raise UserError(f"--configs {spec}: unknown switch '{name}'{suggest(name, SWITCHES)}; "
                            f"switches: {', '.join(SWITCHES)}")  # fmt: skip
        if setup not in SWITCHES[name].setups:
            raise UserError(f"--configs {spec}: switch '{name}' applies to {', '.join(SWITCHES[name].setups)}")
    chosen = [m.strip() for m in method_part.split(",") if m.strip()] if method_part else methods
    for method in chosen:
        if method not in METHODS:
            raise UserError(f"--configs {spec}: unknown method '{method}'{suggest(method, METHODS)}")
    return setup, tuple(switches), chosen, bool(method_part)


def expand_configurations(specs: list[str], methods: list[str]) -> list[Configuration]:
    """Every (configuration, method) the specs name, in the order given; a switch that does not apply to a method
    drops that method from a spec without methods, and is an error for a method named explicitly."""
    planned: list[Configuration] = []
    for spec in specs:
        setup, switches, chosen, explicit = _parse_spec(spec, methods)
        for method in chosen:
            misfit = [s for s in switches if not SWITCHES[s].applies_to(method)]
            if misfit and explicit:
                raise UserError(f"--configs {spec}: switch '{misfit[0]}' does not apply to method '{method}'")
            configuration = Configuration(setup, switches, method)
            if not misfit and configuration not in planned:
                planned.append(configuration)
    if not planned:
        raise UserError(f"--configs {' '.join(specs)}: no configuration applies to methods {', '.join(methods)}")
    return planned


def plan_runs(configurations: list[Configuration], device: torch.device) -> list[PlannedRun]:
    """Attach to each configuration why it cannot run here (if so) and its reference for the loss comparison."""
    plain = {(c.setup, c.method): c for c in configurations if not c.switches}
    runs = []
    for configuration in configurations:
        reasons = [SWITCHES[name].unavailable(device) for name in configuration.switches]
        reference = plain.get((configuration.setup, configuration.method)) if configuration.switches else None
        runs.append(PlannedRun(configuration, next((r for r in reasons if r), None), reference))
    return runs
