"""The functions the training bench patches, checked before it patches them.

The bench swaps a few functions for the duration of its runs: TRL's private ``SFTTrainer._prepare_dataset`` and
``mathsft.training.prepare_datasets`` (to tokenise the data once for every configuration). A private hook can vanish
or change its arguments in any TRL release, so each one is looked up and its parameters compared first: a mismatch
is one line naming the hook and the way around it, not a traceback from deep inside a run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mathsft import training
from mathsft.errors import UserError

# TRL 1.16: SFTTrainer._prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name)
PREPARE_DATASET_PARAMETERS = (
    "self", "dataset", "processing_class", "args", "packing", "formatting_func", "dataset_name",
)  # fmt: skip
PREPARE_DATASETS_PARAMETERS = ("data_args", "training_args", "tokenizer")


def _owner_name(owner: Any) -> str:
    return getattr(owner, "__qualname__", None) or getattr(owner, "__name__", None) or type(owner).__name__


def require_hook(owner: Any, name: str, parameters: tuple[str, ...], workaround: str) -> Callable[..., Any]:
    """``owner.name``, checked to exist and to take exactly ``parameters``; otherwise a one-line UserError."""
    where = f"{_owner_name(owner)}.{name}"
    hook = getattr(owner, name, None)
    if hook is None or not callable(hook):
        raise UserError(f"the bench patches {where}, which this version no longer has; {workaround}")
    found = tuple(inspect.signature(hook).parameters)
    if found != parameters:
        raise UserError(
            f"the bench patches {where}({', '.join(parameters)}), but this version takes ({', '.join(found)}); "
            f"{workaround}"
        )
    return hook


def require_data_cache_hooks() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The two functions the data cache wraps: the project's data preparation and TRL's tokenisation."""
    from trl import SFTTrainer

    workaround = "run the bench with --cache_data false"
    prepare = require_hook(training, "prepare_datasets", PREPARE_DATASETS_PARAMETERS, workaround)
    tokenize = require_hook(SFTTrainer, "_prepare_dataset", PREPARE_DATASET_PARAMETERS, workaround)
    return prepare, tokenize
